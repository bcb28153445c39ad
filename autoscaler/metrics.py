"""Reads one deployment's serving metrics from Prometheus (through prometheus-api-client) into a snapshot.

The engine exports vLLM's metric names, which any vLLM server shares; a label matcher passed in (see
`deployment_selector`) picks one deployment's pods. Every query aggregates over the deployment's replicas, so one
snapshot describes the pool.
"""

import dataclasses
import json
import time

from fleetserve.api.labels import INSTANCE_TARGET_LABEL

# Prometheus needs at least two samples in a rate window, and a missed scrape must not empty it: at least 4x the
# PodMonitor's 15 s scrape interval.
DEFAULT_WINDOW_S = 60
# Bursts are remembered for this many rate windows (5 min at the default window: a burst that returns within about
# one cold start finds the replicas it needs still there); a shorter window, reacting faster, forgets sooner too.
BURST_HORIZON_WINDOWS = 5


class MetricsUnavailable(Exception):
    """Prometheus could not be reached, was too slow, or has no fresh samples for the deployment."""


@dataclasses.dataclass(frozen=True)
class MetricsSnapshot:
    """Pool-wide measurements over the last `window_s`; None where Prometheus had no samples (e.g. no traffic)."""

    replicas_reporting: int
    arrival_rate: float  # requests/s entering the engines (completions plus queue growth)
    waiting: float  # requests queued in the engines now
    running: float  # requests being decoded now
    kv_cache_usage: float | None  # mean fraction of KV cache in use, 0..1
    prompt_tokens_rate: float
    generation_tokens_rate: float
    completion_rate: float  # requests/s finished
    ttft_mean_s: float | None
    itl_mean_s: float | None
    queue_time_mean_s: float | None
    e2e_mean_s: float | None
    ttft_quantile_s: float | None  # observed TTFT at the SLO percentile
    # Prompt length at the SLO percentile: vLLM's vllm:request_prompt_tokens histogram (None where the engine
    # does not export it; the policy then plans with the mean prompt).
    prompt_tokens_quantile: float | None = None
    # Mean prompt of the requests finished in the window (vllm:request_prompt_tokens, observed when a request ends,
    # as TTFT is); None where the engine does not export it: the prompt-token rate over completions instead. The
    # counter counts a prompt at its first token, so in a window of long requests the two populations differ.
    prompt_tokens_mean: float | None = None
    # Highest completion rate over any rate window within the last BURST_HORIZON_WINDOWS windows (5 min at the
    # default 60 s): the bursts a mean over one window smooths away. In requests, not prompt tokens: the prompt
    # lengths' spread is planned for through their distribution (prompt_tokens_buckets), and a window that held a few
    # long prompts is not more requests to come. Completions, not arrivals: the arrival estimate's queue growth
    # spikes for a moment whenever a queue forms, and a peak of that would be held for the whole horizon.
    completion_burst_rate: float | None = None
    # vllm:request_prompt_tokens per bucket: (le, rate of prompts up to le tokens), +Inf included; the prompt-length
    # distribution the prefill-queue model plans over. None where the engine does not export the histogram.
    prompt_tokens_buckets: tuple[tuple[float, float], ...] | None = None


def deployment_selector(namespace: str, instance: str, model_name: str) -> str:
    """Series of one LLMDeployment's engines: its namespace and its pods' instance label, both target labels the
    scrape adds (the PodMonitor's own `namespace`, and app.kubernetes.io/instance copied by podTargetLabels), plus
    the model name the engine labels its series with. Values are quoted as PromQL (Go) strings."""
    matchers = {"namespace": namespace, INSTANCE_TARGET_LABEL: instance, "model_name": model_name}
    return ",".join(f"{label}={json.dumps(value)}" for label, value in matchers.items())


def router_selector(selector: str) -> str:
    """The same deployment's router series: its namespace and instance, no model name (the router's own series
    carry none). `deployment_selector` puts the model name last."""
    return selector.split(",model_name=", 1)[0]


def parse_window_s(text: str) -> int:
    """A rate window in whole seconds from configuration; ValueError with the reason for anything else."""
    try:
        seconds = float(text)
    except ValueError:
        raise ValueError(f"the metrics window must be a number of seconds, got {text!r}") from None
    if not (seconds > 0 and seconds.is_integer()):  # also rejects NaN and infinity
        raise ValueError(f"the metrics window must be a positive whole number of seconds, got {text!r}")
    return int(seconds)


def _mean_of_histogram(name: str, selector: str, window: str) -> str:
    return f"sum(rate({name}_sum{{{selector}}}[{window}])) / sum(rate({name}_count{{{selector}}}[{window}]))"


def build_queries(selector: str, window_s: int, quantile: float) -> dict[str, str]:
    """The PromQL behind each snapshot field (documented in docs/autoscaler.md)."""
    w = f"{window_s}s"
    s = selector
    completions = f"sum(rate(vllm:e2e_request_latency_seconds_count{{{s}}}[{w}]))"
    return {
        "replicas_reporting": f"count(vllm:num_requests_running{{{s}}})",
        # A scrape gap leaves the last gauge value visible for 5 minutes; its age tells us the data is stale.
        "sample_age_s": f"time() - max(timestamp(vllm:num_requests_running{{{s}}}))",
        "completion_rate": completions,
        # Arrivals = completions + growth of the in-engine population, so overload is not mistaken for demand.
        "queue_growth": f"sum(deriv(vllm:num_requests_waiting{{{s}}}[{w}])) + sum(deriv(vllm:num_requests_running{{{s}}}[{w}]))",
        "waiting": f"sum(vllm:num_requests_waiting{{{s}}})",
        # Requests the router holds while every replica is full wait as surely as those queued in the engines.
        "router_held": f"sum(fleetserve_router_held_requests{{{router_selector(s)}}})",
        "running": f"sum(vllm:num_requests_running{{{s}}})",
        "kv_cache_usage": f"avg(vllm:kv_cache_usage_perc{{{s}}})",
        "prompt_tokens_rate": f"sum(rate(vllm:prompt_tokens_total{{{s}}}[{w}]))",
        "generation_tokens_rate": f"sum(rate(vllm:generation_tokens_total{{{s}}}[{w}]))",
        "ttft_mean_s": _mean_of_histogram("vllm:time_to_first_token_seconds", s, w),
        "itl_mean_s": _mean_of_histogram("vllm:inter_token_latency_seconds", s, w),
        "queue_time_mean_s": _mean_of_histogram("vllm:request_queue_time_seconds", s, w),
        "e2e_mean_s": _mean_of_histogram("vllm:e2e_request_latency_seconds", s, w),
        "ttft_quantile_s": (
            f"histogram_quantile({quantile}, sum by (le) "
            f"(rate(vllm:time_to_first_token_seconds_bucket{{{s}}}[{w}])))"
        ),
        "prompt_tokens_mean": _mean_of_histogram("vllm:request_prompt_tokens", s, w),
        "prompt_tokens_quantile": (
            f"histogram_quantile({quantile}, sum by (le) (rate(vllm:request_prompt_tokens_bucket{{{s}}}[{w}])))"
        ),
        # The busiest completion rate of any window ending in the last BURST_HORIZON_WINDOWS windows.
        "completion_burst_rate": f"max_over_time({completions}[{BURST_HORIZON_WINDOWS * window_s}s:{max(1, window_s // 4)}s])",
        # A whole histogram, one series per bucket (HISTOGRAM_FIELDS): the prompt-length distribution, over the
        # burst horizon: its tail buckets need more prompts than one window holds.
        "prompt_tokens_buckets": (f"sum by (le) (rate(vllm:request_prompt_tokens_bucket{{{s}}}"
                                  f"[{BURST_HORIZON_WINDOWS * window_s}s]))"),
    }


# Fields whose query returns one series per bucket (`le`) rather than one value.
HISTOGRAM_FIELDS = frozenset({"prompt_tokens_buckets"})


def _buckets(result: list) -> tuple[tuple[float, float], ...] | None:
    """(le, value) pairs from a `sum by (le)` result, in order of le; None for no series."""
    pairs = sorted((float(series["metric"]["le"]), float(series["value"][1])) for series in result)
    return tuple(pairs) or None


def _scalar(result: list) -> float | None:
    """A scalar from an instant-vector result; None for no series or NaN (e.g. 0/0 when idle)."""
    if not result:
        return None
    value = float(result[0]["value"][1])
    return None if value != value else value


def snapshot_from_values(values: dict, max_sample_age_s: float) -> MetricsSnapshot:
    """Assemble a snapshot from query results; absent counters mean "no traffic" (0), absent gauges mean a gap."""
    if not values.get("replicas_reporting") or values.get("waiting") is None or values.get("running") is None:
        raise MetricsUnavailable("no engine replica is reporting vllm:num_requests_running/waiting")
    age = values.get("sample_age_s")
    if age is None or age > max_sample_age_s:
        raise MetricsUnavailable(f"newest engine sample is {age if age is None else round(age, 1)}s old")
    completion_rate = values.get("completion_rate") or 0.0
    return MetricsSnapshot(
        replicas_reporting=int(values["replicas_reporting"]),
        arrival_rate=max(0.0, completion_rate + (values.get("queue_growth") or 0.0)),
        waiting=values["waiting"] + (values.get("router_held") or 0.0),
        running=values["running"],
        kv_cache_usage=values.get("kv_cache_usage"),
        prompt_tokens_rate=values.get("prompt_tokens_rate") or 0.0,
        generation_tokens_rate=values.get("generation_tokens_rate") or 0.0,
        completion_rate=completion_rate,
        ttft_mean_s=values.get("ttft_mean_s"),
        itl_mean_s=values.get("itl_mean_s"),
        queue_time_mean_s=values.get("queue_time_mean_s"),
        e2e_mean_s=values.get("e2e_mean_s"),
        ttft_quantile_s=values.get("ttft_quantile_s"),
        prompt_tokens_mean=values.get("prompt_tokens_mean"),
        prompt_tokens_quantile=values.get("prompt_tokens_quantile"),
        completion_burst_rate=values.get("completion_burst_rate"),
        prompt_tokens_buckets=values.get("prompt_tokens_buckets"),
    )


class PrometheusMetrics:
    """Queries one Prometheus for deployments' snapshots, failing fast (bounded timeout, no retries)."""

    def __init__(self, url: str, timeout_s: float = 3.0, window_s: int = DEFAULT_WINDOW_S,
                 max_sample_age_s: float = 20.0):
        # Imported here: the simulator shares this module's snapshot type without needing the client.
        from prometheus_api_client import PrometheusConnect
        from urllib3.util.retry import Retry

        # No retries: a slow Prometheus must make this tick hold the scale, not stall the operator.
        self._prometheus = PrometheusConnect(url=url, disable_ssl=True, timeout=timeout_s, retry=Retry(total=0))
        self._timeout_s = timeout_s
        self._window_s = window_s
        self._max_sample_age_s = max_sample_age_s

    def snapshot(self, selector: str, quantile: float) -> MetricsSnapshot:
        started = time.monotonic()
        values = {}
        for field, query in build_queries(selector, self._window_s, quantile).items():
            if time.monotonic() - started > self._timeout_s:
                raise MetricsUnavailable(f"Prometheus slower than {self._timeout_s}s for one snapshot")
            read = _buckets if field in HISTOGRAM_FIELDS else _scalar
            try:
                values[field] = read(self._prometheus.custom_query(query))
            except Exception as error:  # connection refused, timeout, HTTP 5xx, bad JSON: all mean "no data"
                raise MetricsUnavailable(f"Prometheus query failed: {type(error).__name__}: {error}") from error
        return snapshot_from_values(values, self._max_sample_age_s)
