"""Fixtures of the autoscaler tests: fake engine exporters (vLLM-named metrics whose load the test sets) and spot
node pools a test owns (the local control plane's fixtures come from tests/conftest.py)."""

import http.server
import threading

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from fleetserve.api.engine_defaults import token_buckets

LABELS = ["model_name"]
BUCKETS = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80]


def _serve_text_format(port: int, registry: CollectorRegistry) -> http.server.ThreadingHTTPServer:
    """Always the 0.0.4 text format, as our engine serves it: prometheus_client's own server would negotiate
    OpenMetrics, and the engine's own format is what the tests' Prometheus should read."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = generate_latest(registry)
            self.send_response(200)
            self.send_header("Content-Type", CONTENT_TYPE_PLAIN_0_0_4)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


class FakeEngineExporter:
    """Serves `rate` completions/s, each with fixed latencies and token counts, plus running/waiting gauges."""

    def __init__(self, port: int, model: str, tick_s: float = 0.2):
        registry = CollectorRegistry()

        def series(kind, name, **extra):
            return kind(name, name, LABELS, registry=registry, **extra).labels(model)

        self.running = series(Gauge, "vllm:num_requests_running")
        self.waiting = series(Gauge, "vllm:num_requests_waiting")
        self.kv_usage = series(Gauge, "vllm:kv_cache_usage_perc")
        self.prompt_tokens = series(Counter, "vllm:prompt_tokens")
        self.generation_tokens = series(Counter, "vllm:generation_tokens")
        self.ttft = series(Histogram, "vllm:time_to_first_token_seconds", buckets=BUCKETS)
        self.itl = series(Histogram, "vllm:inter_token_latency_seconds", buckets=BUCKETS)
        self.e2e = series(Histogram, "vllm:e2e_request_latency_seconds", buckets=BUCKETS)
        self.queue = series(Histogram, "vllm:request_queue_time_seconds", buckets=BUCKETS)
        self.prompt_lengths = series(Histogram, "vllm:request_prompt_tokens", buckets=token_buckets(4096))
        self.rate = 0.0
        self.queue_s = 0.0
        self._owed = 0.0
        self._tick_s = tick_s
        self._stop = threading.Event()
        self._server = _serve_text_format(port, registry)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def set_load(self, rate: float, running: float, waiting: float, kv_usage: float, queue_s: float = 0.0) -> None:
        self.rate, self.queue_s = rate, queue_s
        self.running.set(running)
        self.waiting.set(waiting)
        self.kv_usage.set(kv_usage)

    def _complete_one(self) -> None:
        self.prompt_tokens.inc(500)
        self.prompt_lengths.observe(500)
        self.generation_tokens.inc(100)
        self.queue.observe(self.queue_s)
        self.ttft.observe(self.queue_s + 0.2)
        self.e2e.observe(self.queue_s + 5.2)
        for _ in range(10):  # a sample of the request's inter-token gaps is enough for the mean
            self.itl.observe(0.05)

    def _run(self) -> None:
        while not self._stop.wait(self._tick_s):
            self._owed += self.rate * self._tick_s
            while self._owed >= 1:
                self._owed -= 1
                self._complete_one()

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self._server.server_port}"

    def stop(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        self._thread.join(timeout=5)
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def fake_exporters(free_port):
    """Starts `n` fake engine exporters on free loopback ports; all are stopped at test end."""
    started: list[FakeEngineExporter] = []

    def start(n: int) -> list[FakeEngineExporter]:
        started.extend(FakeEngineExporter(free_port(), "fake-llm") for _ in range(n))
        return started[-n:]

    yield start
    for exporter in started:
        exporter.stop()


SPOT_LABEL = "fleetserve.test/spot"


class SpotPool:
    """CPU-only spot KWOK nodes of one test, labelled and tainted as a cloud's spot pool is. The label's value is
    the test's namespace, so only this test's spot replicas land there (the nodes are cluster-wide)."""

    def __init__(self, cluster) -> None:
        self.cluster = cluster
        self.taint = {"key": SPOT_LABEL, "value": cluster.namespace, "effect": "NoSchedule"}
        # capacity.spot of the LLMDeployment: select and tolerate these nodes.
        self.spec = {"nodeSelector": {SPOT_LABEL: cluster.namespace},
                     "tolerations": [{"key": SPOT_LABEL, "operator": "Equal", "value": cluster.namespace,
                                      "effect": "NoSchedule"}]}

    async def add_node(self, suffix: str, cpu: str = "1") -> str:
        """A Ready spot node; `cpu` bounds how many replicas fit on it. Returns its name."""
        name = f"{self.cluster.namespace}-{suffix}"
        await self.cluster.add_node(name, {SPOT_LABEL: self.cluster.namespace}, taints=[self.taint], cpu=cpu)
        return name


@pytest.fixture
def spot_pool(cluster):
    return SpotPool(cluster)
