"""A fault in one request's sampling, detokenising or stop matching fails that request alone: the others in its
batch finish exactly as they would have without it, and the engine keeps serving. The faults are injected by the
tests (monkeypatch), never by production code."""

import pytest

from fleetserve.engine.detokenizer import IncrementalDetokenizer
from fleetserve.engine.sampler import Sampler
from fleetserve.engine.sampling_params import SamplingParams

FAULTY_SEED = 666  # marks the one request whose sampling is made to fail
FAULTY_STOP = "\x00boom"  # marks the one request whose detokeniser is made to fail


@pytest.fixture(scope="module")
def engine(make_engine):
    return make_engine(num_kv_blocks=128)


def batch(prompts) -> tuple[list, list[SamplingParams]]:
    """Greedy and seeded requests mixed, some with stop strings, all long enough to run together for a while."""
    params = [SamplingParams(max_tokens=10, temperature=0.0, ignore_eos=True),
              SamplingParams(max_tokens=10, temperature=0.9, top_p=0.9, seed=11, ignore_eos=True),
              SamplingParams(max_tokens=10, temperature=0.0, stop=["zzz"], ignore_eos=True),
              SamplingParams(max_tokens=10, temperature=0.7, seed=12, ignore_eos=True, logprobs=2)]
    return prompts[1:5], params


def assert_unchanged(got, expected) -> None:
    for g, e in zip(got, expected):
        assert (g.new_token_ids, g.new_text, g.finish_reason, g.error) == (e.new_token_ids, e.new_text,
                                                                            e.finish_reason, None)


@pytest.mark.parametrize("after_tokens", [0, 3])  # the fault on the first draw, or mid-stream
def test_a_sampling_fault_fails_only_its_request(engine, prompts, monkeypatch, after_tokens):
    batch_prompts, params = batch(prompts)
    expected = engine.generate(batch_prompts, params)
    draws = {"n": 0}
    real_draw = Sampler._draw

    def faulty_draw(logits, p, generator):
        if p.seed == FAULTY_SEED:
            draws["n"] += 1
            if draws["n"] > after_tokens:
                raise RuntimeError("injected sampling fault")
        return real_draw(logits, p, generator)

    monkeypatch.setattr(Sampler, "_draw", staticmethod(faulty_draw))
    victim = SamplingParams(max_tokens=10, temperature=1.0, seed=FAULTY_SEED, ignore_eos=True)
    got = engine.generate(batch_prompts + [prompts[6]], params + [victim])
    assert_unchanged(got[:-1], expected)
    assert got[-1].finish_reason == "abort" and "injected sampling fault" in got[-1].error
    assert len(got[-1].new_token_ids) == after_tokens
    assert not engine.requests and engine.block_manager.usage == 0.0


def test_a_detokenising_fault_fails_only_its_request(engine, prompts, monkeypatch):
    batch_prompts, params = batch(prompts)
    expected = engine.generate(batch_prompts, params)
    real_take = IncrementalDetokenizer.take

    def faulty_take(self):
        if FAULTY_STOP in self.stop:
            raise UnicodeError("injected detokeniser fault")
        return real_take(self)

    monkeypatch.setattr(IncrementalDetokenizer, "take", faulty_take)
    victim = SamplingParams(max_tokens=10, temperature=0.0, stop=[FAULTY_STOP], ignore_eos=True)
    got = engine.generate(batch_prompts + [prompts[6]], params + [victim])
    assert_unchanged(got[:-1], expected)
    assert got[-1].finish_reason == "abort" and "injected detokeniser fault" in got[-1].error
    assert not engine.requests and engine.block_manager.usage == 0.0
    [after] = engine.generate([prompts[1]], params[0])  # and the engine keeps serving
    assert after.new_token_ids == expected[0].new_token_ids


def test_a_top_p_that_rounds_to_zero_keeps_the_best_token(engine, prompts):
    greedy = SamplingParams(max_tokens=6, temperature=0.0, ignore_eos=True)
    tiny = SamplingParams(max_tokens=6, temperature=1.0, top_p=1e-300, seed=1, ignore_eos=True)
    [g, t] = engine.generate([prompts[2], prompts[2]], [greedy, tiny])
    assert t.error is None and t.new_token_ids == g.new_token_ids
