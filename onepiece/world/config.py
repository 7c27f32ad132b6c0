"""The world's knobs: one frozen dataclass, validated on construction."""

from __future__ import annotations

import dataclasses
import datetime as dt
import numbers
from dataclasses import dataclass

from onepiece.errors import UserError

# Field -> how the user names it (CLI flag), so a bad value is reported in their words.
_PUBLIC_NAMES = {
    "n_users": "--users",
    "n_items": "--items",
    "n_queries": "--queries",
    "days": "--days",
    "warmup_days": "--warmup-days",
    "seed": "--seed",
    "candidates_per_request": "--candidates",
    "impressions_per_request": "--impressions",
    "crawler_share": "--crawler-share",
}


@dataclass(frozen=True)
class WorldConfig:
    """Everything that shapes a synthetic world. Same config -> byte-identical tables."""

    seed: int = 0
    n_users: int = 2000
    n_items: int = 5000
    n_queries: int = 300
    days: int = 8  # history days; the live day D+1 follows (events and candidates)
    # Logged days before day 1 with events only (no candidates): the 7-day statistics,
    # preference anchors and most of each user's history are warm from day 1.
    warmup_days: int = 7
    start_date: dt.date = dt.date(2026, 11, 1)

    # catalogue
    n_categories: int = 48
    n_shops: int = 0  # 0: one shop per 20 items
    latent_dim: int = 8
    duplicate_share: float = 0.4  # share of products sold by several shops (near-duplicates)
    max_cluster_size: int = 4
    promo_share: float = 0.05  # items discounted on a given day

    # users
    n_segments: int = 10  # hidden user segments that tie profile fields to taste
    n_regions: int = 30
    requests_per_user_day: float = 3.0  # mean; per-user activity is lognormal
    profile_update_share: float = 0.02  # users whose profile changes once mid-world
    # One crawler-like account (the most active user) made to hold this share of all
    # requests, hence about that share of the events. 0 = off: the world is unchanged.
    crawler_share: float = 0.0

    # traffic
    candidates_per_request: int = 200
    noise_share: float = 0.3  # recall candidates drawn at random from the whole catalogue
    impressions_per_request: int = 20
    upstream_noise: float = 1.0  # sd of the upstream ranker's error on the utility
    popularity_drift: float = 0.15  # daily sd of the query-level item popularity walk

    # funnel targets (biases are calibrated on day 1 to meet them)
    target_ctr: float = 0.05
    target_atc_per_click: float = 0.3
    target_order_per_atc: float = 0.4

    # ids without feature rows, so downstream "unknown id" handling is exercised
    unknown_item_share: float = 0.02
    unknown_user_share: float = 0.03

    def __post_init__(self) -> None:
        positive = ("n_users", "n_items", "n_queries", "n_categories", "latent_dim",
                    "n_segments", "n_regions", "max_cluster_size",
                    "candidates_per_request", "impressions_per_request")
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, numbers.Integral) or value < 1:
                self._fail(name, f"must be a positive integer, got {value!r}")
        if not isinstance(self.days, numbers.Integral) or self.days < 2:
            self._fail("days", f"must be at least 2 (a training day and a later one), got {self.days!r}")
        if not isinstance(self.warmup_days, numbers.Integral) or self.warmup_days < 0:
            self._fail("warmup_days", f"must be a non-negative integer, got {self.warmup_days!r}")
        if not isinstance(self.seed, numbers.Integral) or self.seed < 0:
            self._fail("seed", f"must be a non-negative integer, got {self.seed!r}")
        if self.n_shops < 0:
            self._fail("n_shops", f"must be >= 0, got {self.n_shops}")
        if self.candidates_per_request > self.n_items:
            self._fail("candidates_per_request",
                       f"({self.candidates_per_request}) cannot exceed the number of items ({self.n_items})")
        if self.impressions_per_request > self.candidates_per_request:
            self._fail("impressions_per_request",
                       f"({self.impressions_per_request}) cannot exceed the candidates per request "
                       f"({self.candidates_per_request})")
        if self.n_categories > self.n_items:
            self._fail("n_categories", f"({self.n_categories}) cannot exceed the number of items ({self.n_items})")
        shares = ("duplicate_share", "promo_share", "profile_update_share", "noise_share",
                  "unknown_item_share", "unknown_user_share", "crawler_share")
        for name in shares:
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                self._fail(name, f"must lie in [0, 1), got {value!r}")
        for name in ("target_ctr", "target_atc_per_click", "target_order_per_atc"):
            value = getattr(self, name)
            if not 0.0 < value < 1.0:
                self._fail(name, f"must lie in (0, 1), got {value!r}")
        if self.requests_per_user_day <= 0:
            self._fail("requests_per_user_day", f"must be positive, got {self.requests_per_user_day}")

    def _fail(self, name: str, problem: str) -> None:
        flag = _PUBLIC_NAMES.get(name)
        label = f"{flag} ({name})" if flag else name
        raise UserError(f"invalid world setting {label}: {problem}")

    @classmethod
    def tiny(cls, seed: int = 0) -> WorldConfig:
        """A world for tests: generates in about a second."""
        return cls(
            seed=seed,
            n_users=60,
            n_items=300,
            n_queries=20,
            days=3,
            warmup_days=2,
            n_categories=10,
            n_shops=15,
            n_segments=4,
            n_regions=6,
            candidates_per_request=40,
            impressions_per_request=10,
            requests_per_user_day=3.0,
            unknown_item_share=0.03,
            unknown_user_share=0.05,
            profile_update_share=0.05,
        )

    @property
    def shops(self) -> int:
        return self.n_shops or max(1, self.n_items // 20)

    def day(self, index: int) -> dt.date:
        """Calendar date of world day ``index`` (0 = day 1, the first day with candidates;
        negative: the warm-up days before it)."""
        return self.start_date + dt.timedelta(days=index)

    @classmethod
    def from_json(cls, data: dict[str, object]) -> WorldConfig:
        """The config ``to_json`` wrote (``world.json``'s "config")."""
        fields = dict(data)
        fields["start_date"] = dt.date.fromisoformat(str(fields["start_date"]))
        return cls(**fields)  # type: ignore[arg-type]

    def to_json(self) -> dict[str, object]:
        out = {k: int(v) if isinstance(v, numbers.Integral) else v
               for k, v in dataclasses.asdict(self).items()}
        out["start_date"] = self.start_date.isoformat()
        if not self.crawler_share:  # off: world.json stays byte-identical to before the knob
            del out["crawler_share"]
        return out
