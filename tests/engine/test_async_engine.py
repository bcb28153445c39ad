"""AsyncEngine, the server's contract: streaming, timings, abort and disconnect free blocks, faults never hang."""

import asyncio
import threading

import pytest

from fleetserve.engine.async_engine import AsyncEngine
from fleetserve.engine.config import EngineConfig
from fleetserve.engine.sampling_params import SamplingParams

GREEDY = SamplingParams(max_tokens=10, temperature=0.0)


@pytest.fixture(params=[False, True], ids=["step-by-step", "overlapped"])  # overlapped: a GPU's default
async def engine(loaded_model, request):
    eng = AsyncEngine(EngineConfig(device="cpu", num_kv_blocks=64, max_model_len=512, overlap_steps=request.param),
                      loaded_model)
    await eng.start()
    yield eng
    await eng.shutdown()


async def collect(agen, timeout=120):
    async def run():
        return [out async for out in agen]

    return await asyncio.wait_for(run(), timeout)


async def wait_until(predicate, timeout=30):
    for _ in range(int(timeout / 0.05)):
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise TimeoutError("condition not reached")


async def test_streams_the_same_tokens_as_the_sync_engine(engine, make_engine, prompts):
    [expected] = make_engine(num_kv_blocks=64, max_model_len=512).generate([prompts[1]], GREEDY)
    outs = await collect(engine.generate("a", prompts[1], GREEDY))
    assert [t for o in outs for t in o.new_token_ids] == expected.new_token_ids
    assert "".join(o.new_text for o in outs) == expected.new_text
    assert [o.finished for o in outs] == [False] * (len(outs) - 1) + [True]
    t = outs[-1].timings
    assert t.arrival <= t.first_scheduled <= t.first_token <= t.finished
    assert engine.healthy and engine.model_name == "smollm2-135m-instruct" and engine.max_model_len == 512


async def test_concurrent_streams_and_stats(engine, prompts):
    results = await asyncio.gather(*(collect(engine.generate(f"r{i}", prompts[i], GREEDY)) for i in range(4)))
    assert all(r[-1].finished for r in results)
    await wait_until(lambda: engine.stats().num_running == 0)
    stats = engine.stats()
    assert stats.generation_tokens == sum(r[-1].completion_tokens for r in results)
    assert stats.prompt_tokens == sum(len(prompts[i]) for i in range(4))
    assert stats.kv_cache_usage == 0.0 and stats.num_waiting == 0


async def test_abort_ends_the_stream_and_frees_blocks(engine, prompts):
    agen = engine.generate("long", prompts[2], SamplingParams(max_tokens=400, temperature=0.0, ignore_eos=True))
    first = await asyncio.wait_for(agen.__anext__(), 60)
    assert not first.finished and engine.stats().kv_cache_usage > 0
    engine.abort("long")
    rest = await collect(agen)
    assert rest[-1].finish_reason == "abort" and rest[-1].completion_tokens < 400
    await wait_until(lambda: engine.stats().kv_cache_usage == 0.0)


async def test_consumer_going_away_aborts_the_request(engine, prompts):
    agen = engine.generate("gone", prompts[2], SamplingParams(max_tokens=400, temperature=0.0, ignore_eos=True))
    await asyncio.wait_for(agen.__anext__(), 60)
    await agen.aclose()  # what a client disconnect does to the server's handler
    await wait_until(lambda: engine.stats().num_running == 0 and engine.stats().kv_cache_usage == 0.0)
    assert "gone" not in engine.engine.requests


async def test_cancelled_task_aborts_the_request(engine, prompts):
    async def consume():
        async for _ in engine.generate("cancel", prompts[2], SamplingParams(max_tokens=400, ignore_eos=True)):
            pass

    task = asyncio.create_task(consume())
    await wait_until(lambda: engine.stats().num_running == 1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await wait_until(lambda: engine.stats().num_running == 0 and engine.stats().kv_cache_usage == 0.0)


async def test_a_failing_step_aborts_its_requests_and_the_engine_keeps_serving(engine, prompts, monkeypatch):
    real_run = engine.engine.runner.run
    calls = {"n": 0}

    def flaky(seqs, pending_tokens=None):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("simulated device fault")
        return real_run(seqs, pending_tokens)

    monkeypatch.setattr(engine.engine.runner, "run", flaky)
    outs = await collect(engine.generate("victim", prompts[1], GREEDY))
    assert outs[-1].finish_reason == "abort" and "simulated device fault" in outs[-1].error
    again = await collect(engine.generate("next", prompts[1], GREEDY))
    assert again[-1].finish_reason in ("stop", "length") and engine.healthy
    assert engine.stats().kv_cache_usage == 0.0


async def test_a_dead_step_loop_turns_unhealthy_and_releases_waiters(engine, prompts, monkeypatch):
    def broken():
        raise RuntimeError("scheduler bug")

    monkeypatch.setattr(engine.engine.scheduler, "schedule", broken)
    outs = await collect(engine.generate("doomed", prompts[1], GREEDY), timeout=30)
    assert outs[-1].finished and outs[-1].finish_reason == "abort" and outs[-1].error
    await wait_until(lambda: not engine.healthy)
    with pytest.raises(RuntimeError):
        await collect(engine.generate("after", prompts[1], GREEDY))


async def test_requests_it_cannot_serve_raise_value_errors(engine):
    with pytest.raises(ValueError, match="prompt"):
        await collect(engine.generate("big", [5] * 600, GREEDY))
    with pytest.raises(ValueError, match="max_tokens"):
        await collect(engine.generate("zero", [5, 6], SamplingParams(max_tokens=0)))
    assert engine.healthy



async def test_requests_handed_over_during_a_step_count_as_waiting(engine, prompts, monkeypatch):
    release = threading.Event()
    real_step = engine.engine.step

    def long_step(**kwargs):
        release.wait(30)
        return real_step(**kwargs)

    monkeypatch.setattr(engine.engine, "step", long_step)
    first = engine.generate("first", prompts[0], GREEDY)
    pending = [asyncio.ensure_future(first.__anext__())]
    await wait_until(lambda: engine.stats().num_waiting == 1)  # admitted into the engine, its step not done
    others = [engine.generate(f"q{i}", prompts[i], GREEDY) for i in range(1, 4)]
    pending += [asyncio.ensure_future(agen.__anext__()) for agen in others]
    await wait_until(lambda: engine.stats().num_waiting == 4)  # three more queued behind the long step
    release.set()
    await asyncio.wait_for(asyncio.gather(*pending), 60)
    for agen in [first, *others]:
        await agen.aclose()
