"""The control loop reading our real engine (`fleetserve serve`, built-in model, CPU) through a real Prometheus:
the engine's own vLLM-named metrics drive the decisions up under a burst of clients and down after it."""

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import openai
import pytest

from fleetserve.autoscaler.control import LoopMemory, LoopSettings, Observed, tick
from fleetserve.autoscaler.metrics import MetricsUnavailable, PrometheusMetrics
from fleetserve.autoscaler.policy import SloTarget
from fleetserve.autoscaler.spot import SpotSettings

MODEL = "autoscaled-llm"
SETTINGS = LoopSettings(
    min_replicas=1, max_replicas=8, slo=SloTarget(ttft_s=1.0, quantile=0.95), itl_slo_s=0.5, max_num_seqs=2,
    scale_up_stabilization_s=0, scale_down_delay_s=5, spot=SpotSettings(enabled=False, max_share=0, on_demand_min=1),
)


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    """`fleetserve serve` with two batch slots, so a handful of clients already makes a queue."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    fleetserve = shutil.which("fleetserve") or str(Path(sys.executable).with_name("fleetserve"))
    log_path = tmp_path_factory.mktemp("serve") / "serve.log"
    process = subprocess.Popen(
        [fleetserve, "serve", "--port", str(port), "--host", "127.0.0.1", "--served-model-name", MODEL,
         "--max-num-seqs", "2", "--max-model-len", "512", "--device", "cpu"],
        stdout=log_path.open("w"), stderr=subprocess.STDOUT, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0, timeout=60)
    deadline = time.monotonic() + 180
    try:
        while True:
            assert process.poll() is None, log_path.read_text()[-3000:]
            assert time.monotonic() < deadline, "fleetserve serve did not come up"
            try:
                client.models.list()
                break
            except openai.APIConnectionError:
                time.sleep(0.5)
        yield f"127.0.0.1:{port}", client
    finally:
        process.terminate()
        process.wait(timeout=60)


def clients(client: openai.OpenAI, count: int, stop: threading.Event) -> list[threading.Thread]:
    def send():
        while not stop.is_set():
            try:
                client.completions.create(model=MODEL, prompt="Count slowly from one to fifty:", max_tokens=16,
                                          temperature=0, extra_body={"ignore_eos": True})
            except openai.RateLimitError:  # a full queue sheds load with 429, as designed: come back, as clients do
                time.sleep(0.2)

    threads = [threading.Thread(target=send, daemon=True) for _ in range(count)]
    for thread in threads:
        thread.start()
    return threads


def run_loop(metrics: PrometheusMetrics, memory: LoopMemory, seconds: float) -> list:
    results, deadline = [], time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            snapshot = metrics.snapshot(f'model_name="{MODEL}"', SETTINGS.slo.quantile)
        except MetricsUnavailable as error:
            snapshot = error
        results.append(tick(SETTINGS, memory, snapshot, Observed(1, 0, 1), 0, time.monotonic()))
        time.sleep(1.0)
    return results


def test_real_engine_metrics_drive_scale_up_and_down(engine, prometheus_factory):
    target, client = engine
    prometheus = prometheus_factory([target], scrape_interval="1s")
    metrics = PrometheusMetrics(prometheus.url, timeout_s=3, window_s=8, max_sample_age_s=5)
    memory = LoopMemory()

    stop_light = threading.Event()
    light = clients(client, 1, stop_light)
    prometheus.wait_for(f'sum(rate(vllm:e2e_request_latency_seconds_count{{model_name="{MODEL}"}}[8s])) > 0', timeout=60)
    calm = run_loop(metrics, memory, seconds=5)
    assert all(r.scaling_active for r in calm), [r.reason for r in calm]
    snapshot = metrics.snapshot(f'model_name="{MODEL}"', 0.95)
    assert snapshot.completion_rate > 0 and snapshot.itl_mean_s and snapshot.ttft_mean_s and snapshot.e2e_mean_s

    stop_burst = threading.Event()
    burst = clients(client, 8, stop_burst)  # 8 clients on 2 slots: a queue forms in the engine
    busy = run_loop(metrics, memory, seconds=12)
    peak = max(r.serving for r in busy)
    assert peak > calm[-1].serving, [r.reason for r in busy]

    stop_burst.set()
    stop_light.set()
    for thread in burst + light:
        thread.join(timeout=60)
    quiet = run_loop(metrics, memory, seconds=20)
    assert quiet[-1].serving < peak, [r.reason for r in quiet]
