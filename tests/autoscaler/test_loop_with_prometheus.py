"""The control loop against a real Prometheus scraping fake engine exporters: decisions follow a load step up
and back down, and a Prometheus that loses its targets makes the loop hold the scale."""

import time

import pytest

from fleetserve.autoscaler.control import LoopMemory, LoopSettings, Observed, tick
from fleetserve.autoscaler.metrics import MetricsUnavailable, PrometheusMetrics, deployment_selector
from fleetserve.autoscaler.policy import SloTarget
from fleetserve.autoscaler.prompt_lengths import PromptLengths
from fleetserve.autoscaler.spot import SpotSettings

MODEL = "fake-llm"
NAMESPACE = "team-a"
# What a cluster's scrape adds to the exporters' own labels: the pod's namespace, and its instance label that the
# PodMonitor copies with podTargetLabels.
TARGET_LABELS = {"namespace": NAMESPACE, "app_kubernetes_io_instance": MODEL}
SELECTOR = deployment_selector(NAMESPACE, MODEL, MODEL)
SETTINGS = LoopSettings(
    min_replicas=1, max_replicas=12, slo=SloTarget(ttft_s=1.0, quantile=0.95), itl_slo_s=0.1, max_num_seqs=64,
    scale_up_stabilization_s=0, scale_down_delay_s=6, spot=SpotSettings(enabled=False, max_share=0, on_demand_min=1),
)


def run_loop(metrics: PrometheusMetrics, memory: LoopMemory, seconds: float, replicas: int) -> list:
    """Ticks once a second for `seconds`; returns the results."""
    results = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            snapshot = metrics.snapshot(SELECTOR, SETTINGS.slo.quantile)
        except MetricsUnavailable as error:
            snapshot = error
        results.append(tick(SETTINGS, memory, snapshot, Observed(replicas, 0, replicas), 0, time.monotonic()))
        time.sleep(1.0)
    return results


@pytest.fixture
def exporters(fake_exporters):
    return fake_exporters(2)


def test_decisions_follow_a_load_step_up_and_down(exporters, prometheus_factory):
    prometheus = prometheus_factory([e.target for e in exporters], scrape_interval="1s", target_labels=TARGET_LABELS)
    for exporter in exporters:  # light load: 0.5 req/s per replica, 3 running, KV 10% full
        exporter.set_load(rate=0.5, running=3, waiting=0, kv_usage=0.1)
    prometheus.wait_for(f'sum(rate(vllm:e2e_request_latency_seconds_count{{{SELECTOR}}}[10s])) > 0')
    metrics = PrometheusMetrics(prometheus.url, timeout_s=3, window_s=10, max_sample_age_s=5)
    memory = LoopMemory()

    low = run_loop(metrics, memory, seconds=6, replicas=2)
    assert all(r.scaling_active for r in low), [r.reason for r in low]
    # A deployment of the same name and model in another namespace sees none of these engines.
    with pytest.raises(MetricsUnavailable, match="no engine replica"):
        metrics.snapshot(deployment_selector("team-b", MODEL, MODEL), SETTINGS.slo.quantile)
    low_scale = low[-1].serving
    # The prompt histogram arrives whole, one series per bucket: every 500-token prompt in (200, 500].
    buckets = metrics.snapshot(SELECTOR, SETTINGS.slo.quantile).prompt_tokens_buckets
    assert PromptLengths.from_histogram(buckets).buckets == ((200.0, 500.0, 1.0),)

    for exporter in exporters:  # a load step: 8 req/s per replica with a queue building up
        exporter.set_load(rate=8.0, running=40, waiting=30, kv_usage=0.6, queue_s=2.0)
    high = run_loop(metrics, memory, seconds=10, replicas=2)
    peak = max(r.serving for r in high)
    assert peak > low_scale, [r.reason for r in high]
    assert any("queued" in r.reason or "TTFT" in r.reason for r in high)

    for exporter in exporters:
        exporter.set_load(rate=0.5, running=3, waiting=0, kv_usage=0.1)
    down = run_loop(metrics, memory, seconds=25, replicas=peak)
    # The queue is gone at once, and so are the replicas wanted only to drain it; the scale-down delay holds those the
    # high arrival rate needed, then they go too.
    assert low_scale < down[0].serving <= peak, [r.reason for r in down]
    assert down[-1].serving < down[0].serving, [r.reason for r in down]


def test_losing_the_targets_holds_the_scale_with_a_reason(exporters, prometheus_factory):
    prometheus = prometheus_factory([e.target for e in exporters], scrape_interval="1s", target_labels=TARGET_LABELS)
    for exporter in exporters:
        exporter.set_load(rate=4.0, running=30, waiting=5, kv_usage=0.5)
    prometheus.wait_for(f'sum(rate(vllm:e2e_request_latency_seconds_count{{{SELECTOR}}}[10s])) > 0')
    metrics = PrometheusMetrics(prometheus.url, timeout_s=3, window_s=10, max_sample_age_s=5)
    memory = LoopMemory()
    before = run_loop(metrics, memory, seconds=3, replicas=2)[-1]
    assert before.scaling_active
    for exporter in exporters:
        exporter.stop()
    held = run_loop(metrics, memory, seconds=6, replicas=2)[-1]
    assert not held.scaling_active and held.plan is None
    assert held.serving == before.serving
    assert "holding" in held.reason


def test_an_unreachable_prometheus_fails_fast():
    metrics = PrometheusMetrics("http://127.0.0.1:9", timeout_s=1)
    started = time.monotonic()
    with pytest.raises(MetricsUnavailable, match="Prometheus query failed"):
        metrics.snapshot('model_name="x"', 0.95)
    assert time.monotonic() - started < 5
