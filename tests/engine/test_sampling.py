"""Sampling through the engine: seeds reproducible whatever the batch, top-k/top-p, stop strings and stop token
ids, logprobs, max_tokens."""

import math

import pytest
import torch

from fleetserve.engine.sampler import filtered_probs
from fleetserve.engine.sampling_params import SamplingParams

GREEDY = SamplingParams(max_tokens=12, temperature=0.0)


@pytest.fixture(scope="module")
def engine(make_engine):
    return make_engine(num_kv_blocks=128)


def test_seeded_sampling_is_reproducible_across_batch_compositions(engine, prompts):
    seeded = SamplingParams(max_tokens=12, temperature=1.0, seed=1234)
    [alone] = engine.generate([prompts[1]], seeded)
    others = [SamplingParams(max_tokens=3 + i, temperature=0.8, seed=i) for i in range(4)] + [GREEDY]
    crowd = engine.generate(prompts[5:10] + [prompts[1]], others + [seeded])
    assert crowd[-1].new_token_ids == alone.new_token_ids
    [reseeded] = engine.generate([prompts[1]], SamplingParams(max_tokens=12, temperature=1.0, seed=99))
    assert reseeded.new_token_ids != alone.new_token_ids


def test_top_k_1_and_tiny_top_p_are_greedy(engine, prompts):
    [greedy] = engine.generate([prompts[2]], GREEDY)
    top_k = engine.generate([prompts[2]], SamplingParams(max_tokens=12, temperature=1.5, top_k=1, seed=7))
    top_p = engine.generate([prompts[2]], SamplingParams(max_tokens=12, temperature=1.5, top_p=1e-6, seed=7))
    assert top_k[0].new_token_ids == greedy.new_token_ids == top_p[0].new_token_ids


def test_top_k_samples_only_among_the_k_best(engine, prompts):
    params = SamplingParams(max_tokens=12, temperature=5.0, top_k=3, seed=3, logprobs=3)
    [out] = engine.generate([prompts[3]], params)
    for lp in out.logprobs:
        assert lp.token in lp.top  # the raw distribution's top 3 contains every pick


def test_filtered_probs_top_p_keeps_the_smallest_set_reaching_p():
    logits = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))
    probs = filtered_probs(logits, SamplingParams(temperature=1.0, top_p=0.7))
    assert probs.tolist() == pytest.approx([0.5 / 0.8, 0.3 / 0.8, 0.0, 0.0])
    probs = filtered_probs(logits, SamplingParams(temperature=1.0, top_k=3))
    assert probs[3] == 0 and probs[:3].sum() == pytest.approx(1.0)


def test_stop_string_ends_the_request_and_is_never_returned(engine, prompts):
    [free] = engine.generate([prompts[1]], GREEDY)
    text = free.new_text
    stop = text[len(text) // 2:len(text) // 2 + 3]
    assert stop.strip(), text
    chunks = []
    engine.add_request("stop", prompts[1], SamplingParams(max_tokens=12, temperature=0.0, stop=["zzzq", stop]))
    while engine.has_unfinished_requests():
        for out in engine.step():
            chunks.append(out.new_text)
            final = out
    assert "".join(chunks) == text[:text.index(stop)]
    assert final.finish_reason == "stop"
    assert not any(stop in c for c in chunks)


def test_stop_token_id_ends_the_request_and_is_not_text(engine, tokenizer, prompts):
    [free] = engine.generate([prompts[2]], GREEDY)
    stop_id = free.new_token_ids[4]
    cut = free.new_token_ids.index(stop_id)
    [out] = engine.generate([prompts[2]], SamplingParams(max_tokens=12, temperature=0.0, stop_token_ids=[stop_id]))
    assert out.new_token_ids == free.new_token_ids[:cut + 1]
    assert out.finish_reason == "stop"
    assert out.new_text == tokenizer.decode(free.new_token_ids[:cut], skip_special_tokens=True)


def test_logprobs_are_sane(engine, prompts):
    [out] = engine.generate([prompts[4]], SamplingParams(max_tokens=8, temperature=0.0, logprobs=2))
    assert len(out.logprobs) == len(out.new_token_ids)
    for token_id, lp in zip(out.new_token_ids, out.logprobs):
        assert lp.token_id == token_id and lp.logprob <= 0.0
        assert len(lp.top) <= 2 and sum(math.exp(v) for v in lp.top.values()) <= 1.0 + 1e-5
        assert lp.logprob == pytest.approx(max(lp.top.values()), abs=1e-5)  # greedy picks the best
    [plain] = engine.generate([prompts[4]], SamplingParams(max_tokens=2, temperature=0.0))
    assert plain.logprobs is None


def test_max_tokens_and_ignore_eos(engine, prompts):
    [one] = engine.generate([prompts[0]], SamplingParams(max_tokens=1, temperature=0.0))
    assert len(one.new_token_ids) == 1 and one.completion_tokens == 1 and one.finished
    [long] = engine.generate([prompts[0]], SamplingParams(max_tokens=20, temperature=0.0, ignore_eos=True))
    assert len(long.new_token_ids) == 20 and long.finish_reason == "length"


@pytest.mark.parametrize("field, params", [
    ("max_tokens", SamplingParams(max_tokens=0)),
    ("temperature", SamplingParams(temperature=-1.0)),
    ("top_p", SamplingParams(top_p=0.0)),
    ("top_k", SamplingParams(top_k=-2)),
])
def test_bad_params_are_rejected_naming_the_field(engine, field, params):
    with pytest.raises(ValueError, match=field):
        engine.add_request("bad", [1, 2, 3], params)
    assert not engine.has_unfinished_requests()


def test_prompt_too_long_or_out_of_vocabulary_is_rejected(engine):
    with pytest.raises(ValueError, match="prompt"):
        engine.add_request("long", [5] * engine.max_model_len, GREEDY)
    with pytest.raises(ValueError, match="prompt"):
        engine.add_request("oov", [10**7], GREEDY)


def test_a_vanishing_temperature_is_greedy(engine, prompts):
    [greedy] = engine.generate([prompts[3]], GREEDY)
    [tiny] = engine.generate([prompts[3]], SamplingParams(max_tokens=12, temperature=1e-9, seed=1))
    assert tiny.new_token_ids == greedy.new_token_ids
