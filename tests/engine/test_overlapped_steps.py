"""Overlapped steps (on by default on a GPU, forced on here on the CPU): a step is launched before the previous
step's tokens are read back, with placeholders in between. Whatever the requests do (stop on EOS or a stop string,
hit max_tokens or max_model_len, get preempted, share prefixes, sample with a seed, ask for logprobs, get aborted
mid-flight), every output must be exactly what the step-by-step engine gives, and nothing may leak."""

import pytest

from fleetserve.engine.sampling_params import SamplingParams
from fleetserve.engine.sequence import PENDING_TOKEN


def mixed_params(n: int) -> list[SamplingParams]:
    """Greedy and seeded sampling, short and long, some with stop strings or logprobs; EOS stays on."""
    params = []
    for i in range(n):
        p = SamplingParams(max_tokens=3 + (i * 7) % 17, temperature=0.0 if i % 3 else 0.8, seed=i,
                           stop=["."] if i % 4 == 1 else [], logprobs=2 if i % 5 == 2 else None)
        params.append(p)
    return params


def outputs(engine, prompts, params):
    """Everything a request returns; logprobs apart, as a different batch composition (after preemption) moves
    them in the last float digits."""
    outs = engine.generate(prompts, params)
    return ([(o.new_token_ids, o.new_text, o.finish_reason, o.completion_tokens, o.prompt_tokens,
              [lp.token_id for lp in o.logprobs or []]) for o in outs],
            [lp.logprob for o in outs for lp in o.logprobs or []])


def assert_nothing_leaks(engine):
    assert engine.block_manager.num_free_blocks == engine.block_manager.num_blocks
    assert not engine.requests and not engine.scheduler.has_work() and engine._in_flight is None
    assert all(c == 0 for c in engine.block_manager.ref_counts)


def test_overlap_is_on_only_where_asked_or_on_a_gpu(make_engine):
    assert make_engine(overlap_steps=True).overlap
    assert not make_engine().overlap  # CPU default: a CPU step cannot run while the host works


@pytest.mark.parametrize("settings", [
    dict(),  # roomy cache, prefix caching on
    dict(num_kv_blocks=10, max_model_len=160),  # preemption by recompute
    dict(max_num_batched_tokens=5, enable_prefix_caching=False),  # chunked prefill mixed with decodes
], ids=["roomy", "preempting", "chunked"])
def test_overlapped_outputs_equal_step_by_step_outputs(make_engine, prompts, settings):
    prompts = (prompts * 2)[:24]
    params = mixed_params(len(prompts))
    plain = make_engine(**settings)
    overlapped = make_engine(overlap_steps=True, **settings)
    (got, got_logprobs), (want, want_logprobs) = outputs(overlapped, prompts, params), outputs(plain, prompts, params)
    assert got == want
    assert got_logprobs == pytest.approx(want_logprobs, abs=1e-3)
    if "num_kv_blocks" in settings:
        assert overlapped.stats().num_preemptions > 0
    assert_nothing_leaks(overlapped)


def test_max_tokens_and_max_model_len_are_exact(make_engine, prompts):
    engine = make_engine(overlap_steps=True, max_model_len=len(prompts[0]) + 5)
    capped, by_len = engine.generate([prompts[0], prompts[0]], [
        SamplingParams(max_tokens=3, temperature=0.0, ignore_eos=True),
        SamplingParams(max_tokens=50, temperature=0.0, ignore_eos=True)])
    assert len(capped.new_token_ids) == capped.completion_tokens == 3 and capped.finish_reason == "length"
    assert len(by_len.new_token_ids) == 5 and by_len.finish_reason == "length"
    assert_nothing_leaks(engine)


def test_shared_prefix_still_hits_the_cache(make_engine, prompts):
    """Blocks are registered only once their tokens are read back (a placeholder cannot be hashed)."""
    engine = make_engine(overlap_steps=True)
    long_prompt = [t for p in prompts for t in p][:80]
    params = SamplingParams(max_tokens=20, temperature=0.0, ignore_eos=True)
    [first] = engine.generate([long_prompt], params)
    before = engine.stats().prefix_cache_hits
    [again] = engine.generate([long_prompt + first.new_token_ids[:12]], SamplingParams(max_tokens=4,
                                                                                    temperature=0.0))
    assert engine.stats().prefix_cache_hits - before >= 16 * ((len(long_prompt) + 12) // 16 - 1)
    assert all(PENDING_TOKEN not in engine.block_manager.block_tokens[b] for b in engine.block_manager.cached.values())


def test_abort_while_a_step_is_in_flight_frees_everything(make_engine, prompts):
    engine = make_engine(overlap_steps=True)
    params = SamplingParams(max_tokens=30, temperature=0.0, ignore_eos=True)
    for i, p in enumerate(prompts[:4]):
        engine.add_request(f"r{i}", p, params)
    seen = {f"r{i}": 0 for i in range(4)}
    for _ in range(4):
        for out in engine.step():
            seen[out.request_id] += len(out.new_token_ids)
    assert engine._in_flight is not None  # a step is queued whose tokens nobody has read yet
    aborted = engine.abort("r1")
    assert aborted.finish_reason == "abort" and aborted.completion_tokens == seen["r1"]
    finished = {}
    while engine.has_unfinished_requests() or engine._in_flight is not None:
        for out in engine.step():
            assert out.request_id != "r1"  # nothing more for an aborted request
            seen[out.request_id] += len(out.new_token_ids)
            if out.finished:
                finished[out.request_id] = out
    assert sorted(finished) == ["r0", "r2", "r3"] and all(seen[r] == 30 for r in finished)
    assert_nothing_leaks(engine)
