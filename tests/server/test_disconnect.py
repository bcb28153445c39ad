"""A client that hangs up aborts its request: the engine stops running it and its KV blocks are freed."""

import asyncio
import re
import time

import httpx

MODEL = "smollm2-135m-instruct"
LONG = {"model": MODEL, "prompt": "Write a very long essay about the sea.", "max_tokens": 400, "temperature": 0,
        "ignore_eos": True}


def sample(metrics_text: str, name: str) -> float:
    match = re.search(rf'^{re.escape(name)}{{model_name="{MODEL}"}} (\S+)$', metrics_text, re.MULTILINE)
    assert match, f"{name} missing from /metrics"
    return float(match.group(1))


def wait_until_idle(server: str, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        text = httpx.get(f"{server}/metrics").text
        values = {name: sample(text, name) for name in
                  ("vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc")}
        if not any(values.values()) or time.monotonic() > deadline:
            return values
        time.sleep(0.2)


def generated_tokens(server: str) -> float:
    return sample(httpx.get(f"{server}/metrics").text, "vllm:generation_tokens_total")


def test_closing_a_stream_aborts_the_request(server):
    before = generated_tokens(server)
    with httpx.stream("POST", f"{server}/v1/completions", json={**LONG, "stream": True}, timeout=60) as response:
        assert response.status_code == 200
        lines = response.iter_lines()
        received = [next(lines) for _ in range(6)]
        assert any(line.startswith("data: ") for line in received)
        assert sample(httpx.get(f"{server}/metrics").text, "vllm:num_requests_running") == 1
    # leaving the block closed the connection mid-stream
    assert wait_until_idle(server) == {"vllm:num_requests_running": 0, "vllm:num_requests_waiting": 0,
                                       "vllm:kv_cache_usage_perc": 0}
    assert generated_tokens(server) - before < LONG["max_tokens"], "the request ran to completion"


async def test_hanging_up_on_a_non_streaming_request_aborts_it(server):
    before = generated_tokens(server)
    async with httpx.AsyncClient(base_url=server, timeout=60) as client:
        request = asyncio.create_task(client.post("/v1/completions", json=LONG))
        deadline = time.monotonic() + 30
        while sample((await client.get("/metrics")).text, "vllm:num_requests_running") < 1:
            assert time.monotonic() < deadline, "the request never started running"
            await asyncio.sleep(0.1)
        request.cancel()  # closes that connection
    assert wait_until_idle(server) == {"vllm:num_requests_running": 0, "vllm:num_requests_waiting": 0,
                                       "vllm:kv_cache_usage_perc": 0}
    assert generated_tokens(server) - before < LONG["max_tokens"], "the request ran to completion"
