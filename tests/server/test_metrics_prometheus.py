"""A real Prometheus scrape stores our metrics under exactly vLLM's names, labelled with the model name."""

import httpx

from fleetserve.api.engine_defaults import token_buckets

MODEL = "smollm2-135m-instruct"
GAUGES_AND_COUNTERS = [
    "vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc",
    "vllm:prefix_cache_queries_total", "vllm:prefix_cache_hits_total", "vllm:num_preemptions_total",
    "vllm:prompt_tokens_total", "vllm:generation_tokens_total",
]
HISTOGRAMS = ["vllm:time_to_first_token_seconds", "vllm:inter_token_latency_seconds",
              "vllm:e2e_request_latency_seconds", "vllm:request_queue_time_seconds",
              "vllm:request_prompt_tokens", "vllm:request_generation_tokens"]


def test_prometheus_stores_the_vllm_names(server, prometheus_factory):
    for _ in range(2):  # the second request shares the first's prompt: prefix-cache hits
        response = httpx.post(f"{server}/v1/completions", timeout=60, json={
            "model": MODEL, "prompt": "A shared prefix long enough to fill at least one KV block. " * 4,
            "max_tokens": 5, "temperature": 0, "ignore_eos": True})
        assert response.status_code == 200
    prometheus = prometheus_factory(targets=[server.removeprefix("http://")], scrape_interval="1s")
    prometheus.wait_for(f'vllm:generation_tokens_total{{model_name="{MODEL}"}} >= 10')

    names = prometheus.series_names()
    expected = set(GAUGES_AND_COUNTERS) | {f"{h}_{suffix}" for h in HISTOGRAMS for suffix in ("bucket", "sum", "count")}
    assert expected <= names, sorted(expected - names)
    for name in GAUGES_AND_COUNTERS:
        [series] = prometheus.query(name)
        assert series["metric"]["model_name"] == MODEL
    for histogram in HISTOGRAMS:
        count = prometheus.query(f'{histogram}_count{{model_name="{MODEL}"}}')
        assert float(count[0]["value"][1]) >= 1, histogram
    assert float(prometheus.query("vllm:prefix_cache_hits_total")[0]["value"][1]) > 0


def test_token_count_buckets_are_vllms():
    assert token_buckets(2048) == [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000]
    assert token_buckets(5000)[-1] == 5000


def test_prompt_and_generation_tokens_per_request(server):
    """The prompt-length histogram the autoscaler queries, exactly as it queries it (autoscaler/metrics.py)."""
    before = scrape(server)
    prompt = list(range(100, 137))  # 37 prompt tokens
    response = httpx.post(f"{server}/v1/completions", timeout=60, json={
        "model": MODEL, "prompt": prompt, "max_tokens": 7, "temperature": 0, "ignore_eos": True})
    assert response.status_code == 200
    after = scrape(server)

    def added(name):
        return after[name] - before.get(name, 0.0)

    label = f'model_name="{MODEL}"'
    assert added(f"vllm:request_prompt_tokens_sum{{{label}}}") == 37
    assert added(f'vllm:request_prompt_tokens_bucket{{le="20.0",{label}}}') == 0
    assert added(f'vllm:request_prompt_tokens_bucket{{le="50.0",{label}}}') == 1
    assert added(f"vllm:request_generation_tokens_sum{{{label}}}") == 7
    assert added(f'vllm:request_generation_tokens_bucket{{le="10.0",{label}}}') == 1


def scrape(server) -> dict[str, float]:
    text = httpx.get(f"{server}/metrics", timeout=10).text
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
            if line and not line.startswith("#")}
