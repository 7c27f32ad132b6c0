"""The runner-portable pipeline shapes: the run summary, and the Dask gap check."""

from __future__ import annotations

import json

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from onepiece.beam_portable import PROBLEM, Routed, RunSummary, count, dask_gaps, read_summary

IN_PROCESS = PipelineOptions(["--runner=FnApiRunner"])  # the DoFns live in this test module


class Split(beam.DoFn):
    def process(self, n: int):
        yield count("seen", 1)
        if n % 2:
            yield PROBLEM, json.dumps({"odd": n})
        else:
            yield "even", n


def test_counts_and_problems_reach_the_summary_and_nothing_is_left_for_dask(tmp_path):
    path = tmp_path / "summary.json"
    p = beam.Pipeline(options=IN_PROCESS)
    routed = p | beam.Create([1, 2, 3, 4]) | "Split" >> Routed(Split(), "even")
    evens = routed["even"] | "Keep" >> beam.Map(lambda n: ("count", ("evens", 1)))
    _ = (routed["summary"], evens) | "RunSummary" >> RunSummary(str(path))
    assert dask_gaps(p) == []
    p.run().wait_until_finish()
    summary = read_summary(path)
    assert summary["counts"] == {"seen": 4, "evens": 2, "summary_records": 0}
    assert summary["problems"] == ['{"odd": 1}', '{"odd": 3}']


def test_the_dask_gap_check_names_side_inputs_tagged_outputs_and_early_sinks():
    p = beam.Pipeline(options=IN_PROCESS)
    numbers = p | "Numbers" >> beam.Create([1, 2])
    total = numbers | "Total" >> beam.combiners.Count.Globally()
    _ = numbers | "WithTotal" >> beam.Map(lambda n, t: n / t, beam.pvalue.AsSingleton(total))
    tagged = numbers | "Tagged" >> beam.ParDo(Split()).with_outputs("even", main="main")
    _ = tagged.even | "Last" >> beam.Map(str)
    gaps = "\n".join(dask_gaps(p))
    assert "WithTotal" in gaps and "side inputs" in gaps
    assert "Tagged" in gaps and "tagged outputs" in gaps
    assert "a sink before the last step" in gaps
    with pytest.raises(RuntimeError, match="DaskRunner cannot run this pipeline"):
        from onepiece.beam_portable import check_runner_support

        check_runner_support(p, "dask")
