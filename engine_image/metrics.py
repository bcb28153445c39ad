"""Prometheus metrics under vLLM's names, so dashboards, KEDA triggers and gateway extensions work unchanged.

Gauges and counters are read from `engine.stats()` at scrape time (the engine already counts them); the latency
histograms are observed by the server from each request's stream and its final timings.
"""

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.registry import Collector

from fleetserve.api.engine_defaults import token_buckets
from fleetserve.engine.outputs import RequestOutput

# vLLM's bucket boundaries (vllm/v1/metrics/loggers.py), so its Grafana dashboards read our histograms as-is
TTFT_BUCKETS = [0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0,
                40.0, 80.0, 160.0, 640.0, 2560.0]
ITL_BUCKETS = [0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0,
               80.0]
REQUEST_LATENCY_BUCKETS = [0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0,
                           240.0, 480.0, 960.0, 1920.0, 7680.0]


# (name, EngineStats field, help); counter names get "_total" appended by prometheus_client, as vLLM's do
GAUGES = [
    ("vllm:num_requests_running", "num_running", "Number of requests in model execution batches."),
    ("vllm:num_requests_waiting", "num_waiting", "Number of requests waiting to be processed."),
    ("vllm:kv_cache_usage_perc", "kv_cache_usage", "KV-cache usage. 1 means 100 percent usage."),
]
COUNTERS = [
    ("vllm:prefix_cache_queries", "prefix_cache_queries", "Prefix cache queries, in terms of number of queried tokens."),
    ("vllm:prefix_cache_hits", "prefix_cache_hits", "Prefix cache hits, in terms of number of cached tokens."),
    ("vllm:num_preemptions", "num_preemptions", "Cumulative number of preemption from the engine."),
    ("vllm:prompt_tokens", "prompt_tokens", "Number of prefill tokens processed."),
    ("vllm:generation_tokens", "generation_tokens", "Number of generation tokens processed."),
]


class EngineStatsCollector(Collector):
    """Turns one `engine.stats()` snapshot into gauge and counter samples on every scrape."""

    def __init__(self, model_name: str, read_stats: Callable[[], object]):
        self.model_name = model_name
        self.read_stats = read_stats

    def describe(self) -> Iterator[Metric]:
        # lets the registry learn our names without calling the engine at registration
        yield from self._families(stats=None)

    def collect(self) -> Iterator[Metric]:
        yield from self._families(self.read_stats())

    def _families(self, stats) -> Iterator[Metric]:
        for name, field, help_text in GAUGES:
            family = GaugeMetricFamily(name, help_text, labels=["model_name"])
            if stats is not None:
                family.add_metric([self.model_name], float(getattr(stats, field)))
            yield family
        for name, field, help_text in COUNTERS:
            family = CounterMetricFamily(name, help_text, labels=["model_name"])
            if stats is not None:
                family.add_metric([self.model_name], float(getattr(stats, field)))
            yield family


class ServerMetrics:
    """One app's metrics: its own registry (tests run several apps in one process), the collector and histograms."""

    def __init__(self, model_name: str, read_stats: Callable[[], object], max_model_len: int):
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(EngineStatsCollector(model_name, read_stats))

        def histogram(name: str, help_text: str, buckets: list[float] | list[int]):
            return Histogram(name, help_text, ["model_name"], registry=self.registry, buckets=buckets).labels(
                model_name)

        self.time_to_first_token = histogram(
            "vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.", TTFT_BUCKETS)
        self.inter_token_latency = histogram(
            "vllm:inter_token_latency_seconds", "Histogram of inter-token latency in seconds.", ITL_BUCKETS)
        self.e2e_request_latency = histogram(
            "vllm:e2e_request_latency_seconds", "Histogram of e2e request latency in seconds.",
            REQUEST_LATENCY_BUCKETS)
        self.request_queue_time = histogram(
            "vllm:request_queue_time_seconds", "Histogram of time spent in WAITING phase for request.",
            REQUEST_LATENCY_BUCKETS)
        # the autoscaler sizes for the prompt tail from this one (autoscaler/metrics.py)
        self.request_prompt_tokens = histogram(
            "vllm:request_prompt_tokens", "Number of prefill tokens processed.", token_buckets(max_model_len))
        self.request_generation_tokens = histogram(
            "vllm:request_generation_tokens", "Number of generation tokens processed.", token_buckets(max_model_len))

    def observe_token_gap(self, seconds: float) -> None:
        self.inter_token_latency.observe(seconds)

    def observe_finished(self, output: RequestOutput) -> None:
        """Records a completed request's token counts, and its latencies from the engine's own instants."""
        self.request_prompt_tokens.observe(output.prompt_tokens)
        self.request_generation_tokens.observe(output.completion_tokens)
        timings = output.timings
        if timings is None:
            return
        if timings.first_token is not None:
            self.time_to_first_token.observe(timings.first_token - timings.arrival)
        if timings.first_scheduled is not None:
            self.request_queue_time.observe(timings.first_scheduled - timings.arrival)
        if timings.finished is not None:
            self.e2e_request_latency.observe(timings.finished - timings.arrival)

    def exposition(self) -> tuple[bytes, str]:
        """The text a scrape gets, and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_PLAIN_0_0_4
