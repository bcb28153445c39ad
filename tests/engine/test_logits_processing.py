"""logit_bias and the presence / frequency / repetition penalties: the shared adjustment against a hand-written
reference, and through the engine (CPU sampler)."""

import torch

from fleetserve.engine.logits_processing import adjust
from fleetserve.engine.sampling_params import SamplingParams


def upload(values, dtype):
    return torch.tensor(values, dtype=dtype)


def test_adjust_matches_the_formulas():
    logits = torch.tensor([[2.0, -1.0, 0.5, 3.0], [1.0, 1.0, 1.0, 1.0]])
    counts = torch.tensor([[2.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    params = [SamplingParams(frequency_penalty=0.5, presence_penalty=0.25, repetition_penalty=2.0,
                             logit_bias={3: -10.0}),
              SamplingParams(logit_bias={2: 4.0})]
    in_prompt = [torch.tensor([False, False, True, False]), None]
    out = adjust(logits, params, counts, in_prompt, upload)
    # row 0: bias on 3; repetition on 0, 1 (generated) and 2 (prompt); then frequency and presence on 0 and 1
    expected0 = [2.0 / 2 - 0.5 * 2 - 0.25, -1.0 * 2 - 0.5 - 0.25, 0.5 / 2, 3.0 - 10.0]
    assert torch.allclose(out[0], torch.tensor(expected0))
    assert torch.allclose(out[1], torch.tensor([1.0, 1.0, 5.0, 1.0]))


def test_engine_applies_them_per_request_in_a_mixed_batch(make_engine, prompts):
    engine = make_engine(num_kv_blocks=64, max_model_len=512)
    greedy = SamplingParams(max_tokens=8, temperature=0.0)
    [free] = engine.generate([prompts[0]], greedy)
    forced = SamplingParams(max_tokens=8, temperature=0.0, ignore_eos=True, logit_bias={42: 100.0})
    no_repeats = SamplingParams(max_tokens=8, temperature=0.0, frequency_penalty=2.0, presence_penalty=2.0)
    outs = engine.generate([prompts[0]] * 3, [greedy, forced, no_repeats])
    assert outs[0].new_token_ids == free.new_token_ids  # its neighbours' adjustments never leak into it
    assert outs[1].new_token_ids == [42] * 8
    assert outs[2].new_token_ids != free.new_token_ids or len(set(free.new_token_ids)) == len(free.new_token_ids)
