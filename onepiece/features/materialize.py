"""Incremental materialisation into the online store, up to an end time.

Windows are half-open like every window of the project: ``--end T`` loads the rows
stamped strictly before T (Feast's own end is inclusive, so it is given T - 1 us), and
the online store then serves at T what point-in-time retrieval serves for as_of T.
Feast's ``materialize_incremental`` starts a view that was never materialised at
``now - ttl``, which misses everything when the data lies further back than that
(a backfill, a replayed world). Here a first run starts ttl before ``end`` instead:
exactly the rows that can still be served at ``end``. Later runs continue from each
view's watermark (``most_recent_end_time``).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from onepiece.errors import UserError
from onepiece.features.repo import FeatureRepoConfig, open_store


EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def _utc(value: dt.datetime) -> dt.datetime:
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


@dataclass(frozen=True)
class MaterializedView:
    view: str
    start: dt.datetime
    end: dt.datetime


def materialize(
    repo: FeatureRepoConfig, end: dt.datetime, views: list[str] | None = None
) -> list[MaterializedView]:
    """Load every online view's rows stamped before ``end`` into the online store."""
    end = _utc(end)
    last_included = end - dt.timedelta(microseconds=1)
    store = open_store(repo)
    known = {view.name: view for view in store.list_feature_views() if view.online}
    names = views if views is not None else sorted(known)
    unknown = [name for name in names if name not in known]
    if unknown:
        raise UserError(
            f"materialize: no online feature view {unknown} in the registry "
            f"{store.config.registry.path} (known: {sorted(known)})"
        )
    done: list[MaterializedView] = []
    for name in names:
        view = known[name]
        watermark = view.most_recent_end_time
        if watermark is not None:
            watermark = _utc(watermark)
            if watermark > last_included:
                raise UserError(
                    f"materialize: feature view '{name}' is already materialised up to "
                    f"{watermark.isoformat()}, after --end {end.isoformat()}"
                )
            store.materialize_incremental(end_date=last_included, feature_views=[name])
            done.append(MaterializedView(name, watermark, end))
        else:
            # The oldest row that retrieval at as_of = end still serves (see retrieval).
            start = last_included - view.ttl if view.ttl else EPOCH
            store.materialize(start_date=start, end_date=last_included, feature_views=[name])
            done.append(MaterializedView(name, start, end))
    return done
