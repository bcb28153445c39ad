"""The PromQL the loop sends: one deployment's series only (namespace, pods, model), rate windows long enough for
the scrape interval, and the table in docs/autoscaler.md saying the same."""

import re
from pathlib import Path

import pytest

from fleetserve.autoscaler.metrics import (
    BURST_HORIZON_WINDOWS, DEFAULT_WINDOW_S, build_queries, deployment_selector, parse_window_s, router_selector, snapshot_from_values,
)

DOCS = Path(__file__).parents[2] / "docs" / "autoscaler.md"
SELECTOR = deployment_selector("team-a", "chat", "meta-llama/Llama-3.1-8B")


def test_every_query_is_scoped_to_one_deployment():
    assert SELECTOR == 'namespace="team-a",app_kubernetes_io_instance="chat",model_name="meta-llama/Llama-3.1-8B"'
    for field, query in build_queries(SELECTOR, 60, 0.99).items():
        selectors = re.findall(r"\{([^}]*)\}", query)
        # The router's series carry no model name; the same namespace and instance scope them.
        wanted = router_selector(SELECTOR) if field == "router_held" else SELECTOR
        assert selectors and all(s == wanted for s in selectors), field
    assert router_selector(SELECTOR) == 'namespace="team-a",app_kubernetes_io_instance="chat"'
    # Values are PromQL strings, whatever a served model name holds.
    assert deployment_selector("ns", "x", 'a"b\\c').endswith(r'model_name="a\"b\\c"')


def test_rate_windows_cover_four_scrapes_of_the_pod_monitor():
    assert DEFAULT_WINDOW_S >= 4 * 15  # the PodMonitor scrapes every 15 s
    queries = build_queries(SELECTOR, DEFAULT_WINDOW_S, 0.99)
    windows = {w for field, q in queries.items() for w in re.findall(r"\[(\w+)\]", q) if field != "prompt_tokens_buckets"}
    assert windows == {"60s"}
    # The prompt-length histogram is read over the burst horizon: its tail buckets need more prompts than a window.
    assert re.findall(r"\[(\w+)\]", queries["prompt_tokens_buckets"]) == [f"{BURST_HORIZON_WINDOWS * 60}s"]


@pytest.mark.parametrize("text", ["0", "-30", "abc", "", "nan", "inf", "7.5"])
def test_a_bad_window_is_refused_with_the_reason(text):
    with pytest.raises(ValueError, match="metrics window must be a"):
        parse_window_s(text)


def test_a_window_can_be_set():
    assert parse_window_s("120") == 120 and parse_window_s("90.0") == 90


def test_the_docs_table_shows_the_queries_sent():
    table = DOCS.read_text().split("| snapshot field | PromQL |", 1)[1].split("\n\n", 1)[0]
    documented = [q for q in re.findall(r"`([^`]*\{sel\}[^`]*)`", table) if "X_" not in q]
    assert len(documented) >= 10
    sent = " ".join(build_queries(SELECTOR, 60, 0.99).values()).replace("0.99", "q")
    for query in documented:
        assert query.replace("{sel}", "{" + SELECTOR + "}").replace("[W]", "[60s]") in sent, query
    assert 'namespace="<namespace>"' in DOCS.read_text() and "default 60 s" in DOCS.read_text()


def test_requests_the_router_holds_count_as_waiting():
    values = {"replicas_reporting": 2, "sample_age_s": 1, "waiting": 3, "running": 8, "router_held": 5}
    assert snapshot_from_values(values, 20).waiting == 8
    assert snapshot_from_values({**values, "router_held": None}, 20).waiting == 3  # no router, or none held


def test_the_burst_horizon_follows_the_rate_window():
    assert "[20s]))[100s:5s])" in build_queries(SELECTOR, 20, 0.99)["completion_burst_rate"]
    assert "[60s]))[300s:15s])" in build_queries(SELECTOR, 60, 0.99)["completion_burst_rate"]
