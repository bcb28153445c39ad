"""The batched GPU sampler: greedy rows, seeded rows reproducible whatever the batch, and the filtered
distribution it draws from matching the CPU sampler's. Needs a CUDA device."""

import pytest
import torch

pytest.importorskip("triton")
if not torch.cuda.is_available():
    pytest.skip("needs a CUDA device", allow_module_level=True)

from fleetserve.engine.gpu_sampler import GpuSampler, top_k_top_p_filter  # noqa: E402
from fleetserve.engine.sampler import Sampler, filtered_probs  # noqa: E402
from fleetserve.engine.sampling_params import SamplingParams  # noqa: E402


def test_greedy_rows_take_the_argmax_and_logprobs_come_back():
    sampler = GpuSampler(torch.device("cuda"))
    logits = torch.randn(5, 1000, device="cuda")
    params = [SamplingParams(temperature=0.0, logprobs=3) for _ in range(5)]
    for i in range(5):
        sampler.add(f"r{i}", SamplingParams(), [])
    out = sampler.sample(logits, [f"r{i}" for i in range(5)], params)
    assert [t.token_id for t in out] == logits.argmax(-1).tolist()
    ref = torch.log_softmax(logits, -1)
    for row, token in enumerate(out):
        assert abs(token.logprob - ref[row, token.token_id].item()) < 1e-4
        assert [t for t, _ in token.top] == ref[row].topk(3).indices.tolist()


def test_seeded_draws_do_not_depend_on_the_batch():
    logits = torch.randn(1, 5000, device="cuda").repeat(4, 1)
    seeded = SamplingParams(temperature=0.8, top_p=0.9, seed=1234)

    def draws(batch_ids):
        sampler = GpuSampler(torch.device("cuda"))
        for rid in batch_ids:
            sampler.add(rid, SamplingParams(seed=1234 if rid == "mine" else None), [])
        params = [seeded if rid == "mine" else SamplingParams(temperature=1.0) for rid in batch_ids]
        tokens = []
        for _ in range(20):
            out = sampler.sample(logits[:len(batch_ids)], batch_ids, params)
            tokens.append(out[batch_ids.index("mine")].token_id)
        return tokens

    assert draws(["mine"]) == draws(["a", "mine", "b"]) == draws(["a", "b", "c", "mine"])


def test_filter_matches_the_cpu_sampler():
    logits = torch.randn(3, 300, device="cuda")
    cases = [SamplingParams(temperature=0.7, top_k=20), SamplingParams(temperature=1.3, top_p=0.8),
             SamplingParams(temperature=1.0, top_k=50, top_p=0.5)]
    temps = torch.tensor([p.temperature for p in cases], device="cuda")
    filtered = top_k_top_p_filter(logits / temps[:, None], torch.tensor([p.top_k for p in cases], device="cuda"),
                                  torch.tensor([p.top_p for p in cases], device="cuda"))
    for row, p in enumerate(cases):
        ref = filtered_probs(logits[row].cpu(), p)
        assert torch.allclose(filtered[row].softmax(-1).cpu(), ref, atol=1e-5)


def test_draw_frequencies_follow_the_distribution():
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05], device="cuda")
    n = 4000
    logits = probs.log().repeat(n, 1)
    sampler = GpuSampler(torch.device("cuda"))
    ids = [f"r{i}" for i in range(n)]
    for i, rid in enumerate(ids):
        sampler.add(rid, SamplingParams(seed=i), [])
    out = sampler.sample(logits, ids, [SamplingParams(temperature=1.0)] * n)
    counts = torch.bincount(torch.tensor([t.token_id for t in out]), minlength=4).float() / n
    assert torch.allclose(counts, probs.cpu(), atol=0.03)


def test_penalties_and_logit_bias_match_the_cpu_sampler_over_steps():
    """Greedy rows with each adjustment, beside a free row, for several steps: the GPU sampler's counts (kept on
    the device) must choose what the CPU sampler (the reference) chooses."""
    torch.manual_seed(0)
    steps = torch.randn(6, 4, 500)
    params = [SamplingParams(temperature=0.0, frequency_penalty=1.5), SamplingParams(temperature=0.0),
              SamplingParams(temperature=0.0, presence_penalty=2.0, logit_bias={7: 5.0}),
              SamplingParams(temperature=0.0, repetition_penalty=1.8)]
    ids = [f"r{i}" for i in range(4)]
    chosen = {}
    for sampler, device in ((Sampler(torch.device("cpu")), "cpu"), (GpuSampler(torch.device("cuda")), "cuda")):
        for rid, p in zip(ids, params):
            sampler.add(rid, p, [3, 4, 5])
        chosen[device] = [[t.token_id for t in sampler.sample(logits.to(device), ids, params)] for logits in steps]
    assert chosen["cpu"] == chosen["cuda"]


def test_grammar_rows_accept_tokens_still_on_the_device():
    """As in overlapped steps: the next step samples before the previous step's tokens were read back; the
    constrained row must still follow its grammar, and the free row is untouched."""
    import json

    from transformers import AutoTokenizer

    from fleetserve.engine.loader import BUILTIN_GGUF, builtin_dir
    from fleetserve.engine.structured_output import grammar_compiler

    tokenizer = AutoTokenizer.from_pretrained(builtin_dir(), gguf_file=BUILTIN_GGUF)
    vocab = len(tokenizer)
    grammar = grammar_compiler(tokenizer, vocab, (tokenizer.eos_token_id,)).json_schema(
        {"type": "object", "properties": {"a": {"type": "integer", "minimum": 0, "maximum": 9}}, "required": ["a"],
         "additionalProperties": False})
    sampler = GpuSampler(torch.device("cuda"))
    params = [SamplingParams(temperature=1.0, seed=1, grammar=grammar), SamplingParams(temperature=0.0)]
    for rid, p in zip(("json", "free"), params):
        sampler.add(rid, p, [1])
    torch.manual_seed(0)
    batches, logits = [], torch.randn(12, 2, vocab, device="cuda")
    for step in logits:
        batches.append(sampler.sample_async(step.clone(), ["json", "free"], params))  # no result() in between
    tokens = [batch.result() for batch in batches]
    assert [t[1].token_id for t in tokens] == logits[:, 1].argmax(-1).tolist()
    text = tokenizer.decode([t[0].token_id for t in tokens if t[0].token_id != tokenizer.eos_token_id])
    assert json.loads(text[:text.index("}") + 1])["a"] in range(10)
