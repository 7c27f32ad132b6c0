"""Pipeline shapes that every runner we use executes the same way, Dask included.

Beam's DaskRunner (2.77) translates Create, ParDo, GroupByKey and Flatten only, and:

- a multi-output ParDo hands ALL its outputs to every consumer (tags are dropped), so
  a DoFn here yields ``(tag, value)`` records and each consumer selects its tag;
- it reports no metrics, so counts travel as ``(COUNT, (name, n))`` records;
- it computes only the pipeline's LAST transform (and what feeds it), so every sink
  ends in one ``RunSummary``, applied last, which writes the counts, the problems and
  what was written to one JSON file that the driver reads;
- side inputs and Beam's file sinks (side inputs inside) are avoided: joins are
  GroupByKeys, and files are written by plain DoFns.

On the FnApiRunner the same shapes cost a few fused Map steps.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import apache_beam as beam

COUNT = "count"
PROBLEM = "problem"  # a JSON line the driver reports (a rejection, a dead letter)
WRITTEN = "written"  # a file a sink wrote
SUMMARY_NAME = ".run_summary.json"
SUMMARY_TAGS = (COUNT, PROBLEM, WRITTEN)


def count(name: str, n: int) -> tuple[str, tuple[str, int]]:
    """A counter increment as a record (exactly once per committed bundle, like data)."""
    return COUNT, (name, int(n))


class Select(beam.PTransform):
    """The values of the ``(tag, value)`` records tagged ``tag``."""

    def __init__(self, tag: str) -> None:
        super().__init__()
        self.tag = tag

    def expand(self, records):
        tag = self.tag
        return records | "Values" >> beam.FlatMap(lambda r: [r[1]] if r[0] == tag else [])


class Summarize(beam.DoFn):
    """All summary records of the run -> one JSON file: counts summed, problems sorted."""

    def __init__(self, path: str) -> None:
        self.path = path

    def process(self, keyed: tuple[int, Iterable[tuple[str, Any]]]) -> Iterator[str]:
        counts: dict[str, int] = {}
        problems: list[str] = []
        written: list[str] = []
        for tag, value in keyed[1]:
            if tag == COUNT:
                counts[value[0]] = counts.get(value[0], 0) + value[1]
            elif tag == PROBLEM:
                problems.append(value)
            elif tag == WRITTEN:
                written.append(value)
        document = {"counts": counts, "problems": sorted(problems), "written": sorted(written)}
        Path(self.path).write_text(json.dumps(document, sort_keys=True) + "\n")
        yield self.path


class RunSummary(beam.PTransform):
    """The run's last step: the run's COUNT, PROBLEM and WRITTEN records -> ``path`` (JSON).

    Applied to a tuple of record PCollections. A seed record makes the file appear even
    when nothing else arrives.
    """

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path

    def expand(self, record_pcolls):
        record_pcolls = tuple(record_pcolls)
        seed = record_pcolls[0].pipeline | "Seed" >> beam.Create([count("summary_records", 0)])
        return (
            (*record_pcolls, seed)
            | "All" >> beam.Flatten()
            | "Summarisable" >> beam.Filter(lambda r: r[0] in SUMMARY_TAGS)
            | "OneKey" >> beam.Map(lambda r: (0, r))
            | "Gather" >> beam.GroupByKey()
            | "Write" >> beam.ParDo(Summarize(self.path))
        )


def read_summary(path: str | Path) -> dict[str, Any]:
    """The summary a run wrote; a missing file means the run did not finish its sinks."""
    path = Path(path)
    if not path.is_file():
        raise RuntimeError(f"the Beam run wrote no summary ({path}): its last step never ran")
    return json.loads(path.read_text())



class Routed(beam.PTransform):
    """ParDo(fn) whose outputs are ``(tag, value)`` records -> {tag: values} for each of
    ``tags``, plus ``"summary"``: its COUNT, PROBLEM and WRITTEN records, for RunSummary."""

    def __init__(self, fn: beam.DoFn, *tags: str) -> None:
        super().__init__()
        self.fn, self.tags = fn, tags

    def expand(self, pcoll):
        records = pcoll | "Records" >> beam.ParDo(self.fn)
        out = {tag: records | f"Select_{tag}" >> Select(tag) for tag in self.tags}
        out["summary"] = records | "Summary" >> beam.Filter(lambda r: r[0] in SUMMARY_TAGS)
        return out


#: What Beam's DaskRunner replaces or translates (its overrides work on these classes).
_DASK_TRANSLATED = (beam.Create, beam.GroupByKey, beam.Reshuffle, beam.Flatten)


def dask_gaps(pipeline: beam.Pipeline) -> list[str]:
    """What in ``pipeline`` the DaskRunner would drop or run wrongly, by step label.

    It silently treats an untranslated primitive as a no-op, hands all tagged outputs to
    every consumer, and never runs a sink that is not the last step; so check first.
    (Outputs a DoFn emits in finish_bundle are lost there too; no DoFn here does that.)
    """
    from apache_beam.pipeline import PipelineVisitor

    leaves: list = []

    class Leaves(PipelineVisitor):
        def visit_transform(self, node) -> None:
            leaves.append(node)

    pipeline.visit(Leaves())

    def translated_by_override(node) -> bool:
        while node is not None:
            if type(node.transform) in _DASK_TRANSLATED:
                return True
            node = node.parent
        return False

    consumed = {id(v) for node in leaves for v in node.inputs}
    consumed |= {id(si.pvalue) for node in leaves for si in node.side_inputs}
    gaps = []
    for node in leaves:
        if translated_by_override(node):
            continue
        transform = node.transform
        if not isinstance(transform, beam.ParDo):
            gaps.append(f"{node.full_label}: {type(transform).__name__} is not translated")
            continue
        if node.side_inputs:
            gaps.append(f"{node.full_label}: side inputs")
        if len(node.outputs) > 1:
            gaps.append(f"{node.full_label}: tagged outputs")
    for node in leaves[:-1]:
        if node.outputs and not any(id(v) in consumed for v in node.outputs.values()):
            gaps.append(f"{node.full_label}: a sink before the last step (never computed)")
    return gaps


def check_runner_support(pipeline: beam.Pipeline, runner: str) -> None:
    """Stop before running when ``runner`` cannot run ``pipeline`` as written."""
    from onepiece.beam_options import DASK_RUNNERS

    if runner in DASK_RUNNERS:
        gaps = dask_gaps(pipeline)
        if gaps:
            raise RuntimeError("Beam's DaskRunner cannot run this pipeline: " + "; ".join(gaps))
