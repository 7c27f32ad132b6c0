"""The assembly settings: segment lengths and look-back windows."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from dataclasses import dataclass


@dataclass(frozen=True)
class AssemblyConfig:
    """How long each context segment is and how far back it looks.

    Numbers marked (ours) are our choices where the paper gives none.
    """

    #: IH: the last N click / add_to_cart / order events of the user (ours: 100).
    ih_length: int = 100
    #: IH look-back window ending strictly before as_of (the paper: 30 days).
    ih_window: dt.timedelta = dt.timedelta(days=30)
    #: PA: top-k items per group (the paper's best PA length 90 = 3 groups x 30; ours).
    pa_top_k: int = 30
    #: PA look-back window ending strictly before as_of (ours: 7 days).
    pa_window: dt.timedelta = dt.timedelta(days=7)
    #: Output shards (files). Fixed, so the output does not depend on the worker count.
    shards: int = 4

    def __post_init__(self) -> None:
        for name in ("ih_length", "pa_top_k", "shards"):
            if getattr(self, name) < 1:
                raise ValueError(f"AssemblyConfig.{name} must be at least 1")
        for name in ("ih_window", "pa_window"):
            if getattr(self, name) <= dt.timedelta(0):
                raise ValueError(f"AssemblyConfig.{name} must be positive")

    @property
    def lookback(self) -> dt.timedelta:
        """The longest window: how far before as_of events are read at all."""
        return max(self.ih_window, self.pa_window)

    def to_json(self) -> str:
        values = {
            k: (v.total_seconds() if isinstance(v, dt.timedelta) else v)
            for k, v in dataclasses.asdict(self).items()
        }
        return json.dumps(values, sort_keys=True)
