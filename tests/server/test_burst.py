"""Admission matches capacity (review F7): on an idle server a burst of max_num_seqs + max_waiting requests is all
admitted, with no 429, because requests just handed to the engine wait only until its next step schedules them;
past that bound the server answers 429 with Retry-After. The default model on the CPU, with a batch of 32."""

import asyncio

import httpx
import pytest

from fleetserve.engine.server import ServerOptions, build_app, start_site

MODEL = "smollm2-135m-instruct"
MAX_NUM_SEQS = 32
MAX_WAITING = MAX_NUM_SEQS  # fleetserve serve's default: a queue as deep as one batch


@pytest.fixture(scope="module")
def burst_server(engine_loop):
    """Its own engine with a batch of 32, over the shared engine's weights."""
    from fleetserve.engine.async_engine import AsyncEngine
    from fleetserve.engine.config import EngineConfig

    shared = engine_loop.engine.engine
    engine = AsyncEngine(EngineConfig(max_model_len=256, max_num_seqs=MAX_NUM_SEQS, num_kv_blocks=1024,
                                      device="cpu"), shared.loaded)

    async def start():
        await engine.start()
        app = build_app(engine, ServerOptions(max_waiting=MAX_WAITING, max_num_seqs=MAX_NUM_SEQS))
        return await start_site(app, "127.0.0.1", 0)

    runner = engine_loop.call(start())
    host, port = runner.addresses[0][:2]
    yield f"http://{host}:{port}"
    engine_loop.call(runner.cleanup())
    engine_loop.call(engine.shutdown())


async def burst(base: str, count: int, max_tokens: int) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    async with httpx.AsyncClient(base_url=base, timeout=300, limits=limits) as client:
        async def one(i: int) -> httpx.Response:
            return await client.post("/v1/completions", json={
                "model": MODEL, "prompt": f"Request {i}: once upon a time", "max_tokens": max_tokens,
                "temperature": 0, "ignore_eos": True})

        return await asyncio.gather(*(one(i) for i in range(count)))


async def test_a_burst_up_to_batch_plus_queue_is_admitted_whole(burst_server):
    responses = await burst(burst_server, MAX_NUM_SEQS + MAX_WAITING, 4)
    assert [r.status_code for r in responses] == [200] * len(responses)
    assert {r.json()["usage"]["completion_tokens"] for r in responses} == {4}


async def test_past_the_bound_429_with_retry_after(burst_server):
    extra = 16
    responses = await burst(burst_server, MAX_NUM_SEQS + MAX_WAITING + extra, 48)  # long enough to stay inside
    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {200, 429}
    assert statuses.count(200) >= MAX_NUM_SEQS + MAX_WAITING and 429 in statuses
    for response in responses:
        if response.status_code == 429:
            assert int(response.headers["Retry-After"]) >= 1
            assert response.json()["error"]["code"] == "queue_full"
