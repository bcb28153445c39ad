"""The benchmark's pure parts: requests drawn from the trace, scaling, percentiles and the summary row."""

from pathlib import Path

from fleetserve.engine.bench import (RequestResult, make_requests, markdown_table, percentile, read_trace_lengths,
                                     scale_length, summarize)

TRACE = Path(__file__).resolve().parents[2] / "../shared/data/azure-llm-2023/conv.csv"


def test_requests_follow_the_trace_scaled_and_clamped():
    lengths = read_trace_lengths(str(TRACE))
    assert len(lengths) > 10_000
    requests = make_requests(lengths, 16, 1 / 8, 1 / 4, 512, 128, seed=0)
    assert len(requests) == 16
    assert all(4 <= len(r.prompt_ids) <= 512 and 4 <= r.output_len <= 128 for r in requests)
    assert make_requests(lengths, 16, 1 / 8, 1 / 4, 512, 128, seed=0) == requests  # seeded
    assert (scale_length(1020, 1 / 8, 512), scale_length(14050, 1 / 8, 512), scale_length(3, 1 / 8, 512)) == (
        128, 512, 4)


def test_percentile_interpolates():
    assert percentile([1, 2, 3, 4], 50) == 2.5
    assert percentile([5], 99) == 5
    assert percentile([1, 2, 3, 4, 5], 100) == 5


def test_summary_row():
    results = [RequestResult(0.0, [0.5, 0.6, 0.8], 3), RequestResult(0.0, [1.0, 1.1], 2)]
    row = summarize("x", results, duration=2.0)
    assert row["output_tokens_per_s"] == 2.5
    assert row["ttft_p50_ms"] == 750
    assert round(row["itl_p50_ms"]) == 100
    assert "| x | 2 | 5 |" in markdown_table([row])
