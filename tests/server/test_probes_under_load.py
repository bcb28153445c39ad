"""Probes answer within their timeout while the server parses and tokenises many large requests: that work runs in
worker threads, never on the event loop (review F5: 16 prompts of 900 KB used to block /health for 3.5 s)."""

import asyncio
import time

import httpx

MODEL = "smollm2-135m-instruct"
PROBE_TIMEOUT_S = 3  # the readiness probe's timeoutSeconds in operator/pod_template.py


async def test_probes_answer_while_large_prompts_are_tokenised(start_server):
    base = start_server(max_waiting=64)  # room for every request, so each one is parsed and tokenised
    big_prompt = {"model": MODEL, "prompt": "lorem ipsum " * 75_000, "max_tokens": 1}  # 900 KB, over the window
    many_messages = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}] * 25_000, "max_tokens": 1}
    async with httpx.AsyncClient(base_url=base, timeout=120) as client:
        load = [asyncio.create_task(client.post("/v1/completions", json=big_prompt)) for _ in range(16)]
        load += [asyncio.create_task(client.post("/v1/chat/completions", json=many_messages)) for _ in range(6)]
        slowest = 0.0
        async with httpx.AsyncClient(base_url=base, timeout=PROBE_TIMEOUT_S) as probe:
            while not all(task.done() for task in load):
                for path in ("/health", "/readyz", "/livez"):
                    started = time.monotonic()
                    assert (await probe.get(path)).status_code == 200  # a timeout here raises
                    slowest = max(slowest, time.monotonic() - started)
                await asyncio.sleep(0.05)
        responses = await asyncio.gather(*load)
    assert [r.status_code for r in responses] == [400] * len(load)
    assert {r.json()["error"]["code"] for r in responses} == {"context_length_exceeded"}
    print(f"slowest probe under load: {slowest * 1000:.0f} ms")
