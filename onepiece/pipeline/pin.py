"""The pinned model version: which version of the served model the refresh DAG scores with.

A small JSON file under the data root, ``serving/model_pin.json``, written by the
``model_publish`` DAG after a new version passed its gate and its smoke test, and read by
every refresh run. It is replaced in one step (write aside, ``os.replace``). Without a
pin the refresh takes the newest exported (embedded) or ready (remote) version.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from onepiece.errors import UserError
from onepiece.storage import write_json_atomic

PIN_FILE = Path("serving") / "model_pin.json"


def pin_path(data: str) -> Path:
    return Path(data) / PIN_FILE


def read_pin(data: str, model_name: str) -> dict[str, Any] | None:
    """The pin of ``model_name`` under ``data``, or None when nothing is pinned."""
    path = pin_path(data)
    if not path.is_file():
        return None
    try:
        pin = json.loads(path.read_text())
        version = int(pin["version"])
    except (ValueError, KeyError, TypeError) as err:
        raise UserError(f"model pin {path} is unreadable ({err}); fix or delete it") from None
    if pin.get("model_name") != model_name:
        raise UserError(f"model pin {path} names model {pin.get('model_name')!r}, not {model_name!r}")
    return pin | {"version": version}


def write_pin(data: str, model_name: str, version: int, **details: Any) -> dict[str, Any]:
    """Pin ``version``; the previous pin is kept in the record for rollback."""
    path = pin_path(data)
    previous = read_pin(data, model_name)
    pin = {
        "model_name": model_name,
        "version": int(version),
        "pinned_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "previous_version": previous["version"] if previous else None,
        **details,
    }
    write_json_atomic(pin, path)
    return pin


def pin_version(data: str, model_repo: str | Path, model_name: str, version: int | None, rollback: bool) -> dict[str, Any]:
    """Pin an exported ``version`` by hand, or with ``rollback`` the pin's previous version.

    The version must be exported in ``model_repo`` (the served weights) and loaded by its
    version policy (a version of a layout the repository no longer serves is refused with
    the way back: export it again); the pin records the version it replaces, so a
    rollback can itself be rolled back.
    """
    from onepiece.serving.export import check_served

    current = read_pin(data, model_name)
    if rollback:
        if version is not None:
            raise UserError("give a version or --rollback, not both")
        if not current or current.get("previous_version") is None:
            raise UserError(f"nothing to roll back to: {pin_path(data)} records no previous version")
        version = int(current["previous_version"])
    if version is None:
        raise UserError("give the version to pin, or --rollback")
    check_served(model_repo, model_name, version)  # exported, and loaded by the version policy
    return write_pin(data, model_name, version, pinned_by="rollback" if rollback else "hand")
