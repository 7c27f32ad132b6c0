"""Where a refresh run's outputs are, and a short summary table of them (the demo's end).

``python -m onepiece.pipeline.summary DATA PARTITION`` prints the paths of the scores
partition, its manifest and its quality report, the serving pointer and the model pin,
then a table of the headline figures and the top-ranked candidates of one request.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq
from rich.console import Console
from rich.table import Table

from onepiece.pipeline.pin import pin_path
from onepiece.pipeline.refresh import MANIFEST_NAME, SERVING_POINTER
from onepiece.pipeline.report import REPORT_HTML, REPORT_JSON, REPORT_PNG


def _guard_line(manifest: dict) -> str:
    if not manifest.get("guard"):
        return "not run"
    verdict = json.loads(manifest["guard"])
    if verdict["passed"]:
        return "passed"
    return f"FORCED past failed checks: {', '.join(verdict['failed'])}"


def print_summary(data: str, partition: str, console: Console | None = None) -> None:
    console = console or Console()
    root = Path(data).absolute()
    final = root / "scores" / partition
    manifest = json.loads((final / MANIFEST_NAME).read_text())
    report = json.loads((final / REPORT_JSON).read_text())
    # Paths are printed whole, one per line, never cut to the terminal's width.
    console.print(f"[bold]prerank_refresh {partition}: outputs[/bold]")
    for name, path in (
        ("scores", final),
        ("manifest", final / MANIFEST_NAME),
        ("report (html)", final / REPORT_HTML),
        ("report (png)", final / REPORT_PNG),
        ("serving table pointer", root / SERVING_POINTER),
        ("model pin", pin_path(str(root))),
        ("contexts", root / "contexts" / partition),
    ):
        console.print(f"  {name + ':':<23}{path}", soft_wrap=True, highlight=False)

    coverage, drift, dist = report["coverage"], report["drift"] or {}, report["distributions"]
    figures = Table(title="run summary", show_header=False)
    rows = [
        ("model", f"{manifest['model']['name']} v{manifest['model']['version']} "
                  f"({manifest['model']['feature_service']})"),
        ("requests scored", coverage["requests"]),
        ("candidates scored / in window", f"{coverage['scored']} / {coverage['candidates_in_window']}"),
        ("distinct items / users", f"{coverage['items']} / {coverage['users']}"),
        ("defaulted (unknown ids)", ", ".join(f"{k}={v}" for k, v in coverage["defaulted"].items() if v) or "none"),
        ("score mean (q05, q50, q95)",
         f"{dist['score']['mean']} ({dist['score']['q05']}, {dist['score']['q50']}, {dist['score']['q95']})"),
        ("p_click mean", dist["p_click"]["mean"]),
        ("previous run", report["run"]["previous_partition"] or "none"),
        ("drift: score PSI / KS", f"{drift.get('score_psi')} / {drift.get('score_ks')}"),
        ("scoring wall time (s)", manifest["wall_time_s"]),
        ("publish guard", _guard_line(manifest)),
    ]
    for name, value in rows:
        figures.add_row(name, str(value))
    console.print(figures)

    scores = pq.read_table(final, columns=["request_id", "item_id", "score", "rank", "p_click", "p_order"])
    first = scores["request_id"][0]
    one = scores.filter(pc.equal(scores["request_id"], first)).sort_by("rank").slice(0, 5)
    top = Table(title=f"top 5 of request {first}")
    for name in one.column_names[1:]:
        top.add_column(name)
    for row in one.drop(["request_id"]).to_pylist():
        top.add_row(*(f"{v:.4g}" if isinstance(v, float) else str(v) for v in row.values()))
    console.print(top)


if __name__ == "__main__":
    print_summary(sys.argv[1], sys.argv[2])
