"""Correctness on the GPU against HF transformers: logits, greedy continuations, and batching/preemption.

Bounds, stated up front: our bf16 logits may differ from HF's float32 logits (same weights) by at most twice what
HF's own bf16 model differs by, plus 1e-2 (relative Frobenius error over the vocabulary); greedy continuations
must agree with HF's float32 model (the function both compute, without either side's rounding) on at least 95% of
tokens before the first divergence (summed over prompts), where a divergence at a near-tie (see
classify_divergences) does not count against us. Agreement with HF's bf16 model, and HF bf16's own agreement with
HF float32, are reported beside it: two bf16 computations part at near-ties more often than either parts from
float32.
"""


import torch

from fleetserve.engine.sampling_params import SamplingParams
from fleetserve.engine.sequence import Sequence

GREEDY_AGREEMENT_TARGET = 0.95


CHAT_QUESTIONS = [
    "Write a short story about a lighthouse keeper who finds a message in a bottle.",
    "Explain how a refrigerator keeps food cold, step by step.",
    "What are the main differences between a list and a tuple in Python?",
    "Describe the water cycle to a ten-year-old.",
    "Give me a recipe for a simple tomato soup.",
    "Why is the sky blue? Explain the physics in plain words.",
    "Write a polite email asking my landlord to fix a leaking tap.",
    "List some tips for getting better sleep and explain each one.",
    "Summarise the plot of a detective novel you would like to write.",
    "How do vaccines train the immune system?",
    "Write a poem about autumn leaves falling in a quiet park.",
    "Explain what a hash table is and when to use one.",
    "Plan a three-day trip to the mountains for a family of four.",
    "What should a beginner know before starting to run every day?",
    "Describe how bread rises when it is baked.",
    "Tell me about the history of the bicycle.",
]


def chat_prompts(tokenizer) -> list[list[int]]:
    """The questions as a user's chat turn, through the model's chat template (what the server sends it)."""
    return [tokenizer.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True,
                                          tokenize=True, return_dict=False) for q in CHAT_QUESTIONS]


def relative_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    return ((out.double() - ref.double()).norm() / ref.double().norm()).item()


@torch.inference_mode()
def engine_logits(engine, prompts: list[list[int]], next_tokens: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Our logits at each prompt's last position (prefill path), then after appending next_tokens (decode path,
    CUDA graph when one is captured for this batch size)."""
    seqs = [Sequence(f"logits-{i}", p, SamplingParams(max_tokens=2)) for i, p in enumerate(prompts)]
    for seq in seqs:
        engine.scheduler.add(seq)
    scheduled = engine.scheduler.schedule()
    assert len(scheduled) == len(seqs), "raise max_num_batched_tokens for the logits check"
    prefill = engine.runner.run(scheduled).clone()
    engine.scheduler.step_done(scheduled)
    for seq, token in zip(seqs, next_tokens):
        seq.token_ids.append(token)
    scheduled = engine.scheduler.schedule()
    decode = engine.runner.run(scheduled).clone()
    engine.scheduler.step_done(scheduled)
    for seq in seqs:
        engine.scheduler.finish(seq, "abort")
    return prefill, decode


@torch.inference_mode()
def hf_last_logits(hf_model, prompts: list[list[int]]) -> torch.Tensor:
    return torch.stack([hf_model(torch.tensor([p], device="cuda")).logits[0, -1].float() for p in prompts])


def logits_check(engine, hf_model, prompts: list[list[int]]) -> dict:
    """hf_model arrives in bf16 and leaves in float32 (converted in place: the float32 reference computes the
    same function of the same bf16-rounded weights)."""
    hf_bf16 = hf_last_logits(hf_model, prompts)
    next_tokens = hf_bf16.argmax(-1).tolist()
    hf_bf16_decode = hf_last_logits(hf_model, [p + [t] for p, t in zip(prompts, next_tokens)])
    ours_prefill, ours_decode = engine_logits(engine, prompts, next_tokens)
    hf_model.to(torch.float32)  # not .float(): transformers refuses that for a GGUF-loaded model
    ref_prefill = hf_last_logits(hf_model, prompts)
    ref_decode = hf_last_logits(hf_model, [p + [t] for p, t in zip(prompts, next_tokens)])
    result = {
        "ours_prefill_err": relative_error(ours_prefill, ref_prefill),
        "ours_decode_err": relative_error(ours_decode, ref_decode),
        "hf_bf16_prefill_err": relative_error(hf_bf16, ref_prefill),
        "hf_bf16_decode_err": relative_error(hf_bf16_decode, ref_decode),
        "top1_agree_prefill": (ours_prefill.argmax(-1) == ref_prefill.argmax(-1)).float().mean().item(),
    }
    bound = lambda hf_err: 2 * hf_err + 1e-2  # noqa: E731
    result["passed"] = (result["ours_prefill_err"] <= bound(result["hf_bf16_prefill_err"])
                        and result["ours_decode_err"] <= bound(result["hf_bf16_decode_err"]))
    return result


def common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


@torch.inference_mode()
def hf_greedy(hf_model, prompts: list[list[int]], max_new_tokens: int) -> list[list[int]]:
    outs = []
    for p in prompts:
        ids = torch.tensor([p], device="cuda")
        out = hf_model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                max_new_tokens=max_new_tokens, min_new_tokens=max_new_tokens, eos_token_id=None,
                                pad_token_id=0)
        outs.append(out[0, len(p):].tolist())
    return outs


def engine_greedy(engine, prompts: list[list[int]], max_new_tokens: int) -> list[list[int]]:
    params = SamplingParams(max_tokens=max_new_tokens, temperature=0.0, ignore_eos=True)
    return [out.new_token_ids for out in engine.generate(prompts, params)]


def agreement(ours: list[list[int]], theirs: list[list[int]]) -> float:
    """Tokens before the first divergence over all tokens."""
    return sum(common_prefix(a, b) for a, b in zip(ours, theirs)) / sum(len(b) for b in theirs)


def greedy_check(ours: list[list[int]], theirs: list[list[int]], prompts: list[list[int]]) -> dict:
    """Strict agreement of our continuations with the reference's. Divergences are kept for
    `classify_divergences`, which needs the model in float32."""
    prefixes = [common_prefix(a, b) for a, b in zip(ours, theirs)]
    total = sum(len(b) for b in theirs)
    divergences = [(i, d, p + b[:d], b[d], a[d], len(b) - d)
                   for i, (p, a, b, d) in enumerate(zip(prompts, ours, theirs, prefixes)) if d < len(b)]
    return {"prompts": len(prompts), "tokens": total, "agreement_before_divergence": sum(prefixes) / total,
            "identical_prompts": len(prompts) - len(divergences), "divergences": divergences}


@torch.inference_mode()
def classify_divergences(greedy: dict, hf_fp32, bf16_rel_err: float) -> dict:
    """A divergence is a near-tie when the float32 reference's logits of the two tokens differ by less than three
    times the typical bf16 logit error (HF's own bf16 relative error times the logits' RMS): there either choice
    is within rounding, and the continuations after it legitimately differ. The tie-aware agreement counts the
    tokens after a near-tie as agreeing; the check passes when it reaches 95%."""
    divergences = greedy.pop("divergences")
    near_ties, after_ties, margins = 0, 0, []
    for prompt, position, context, hf_token, our_token, remaining in divergences:
        ref = hf_fp32(torch.tensor([context], device="cuda")).logits[0, -1].double()
        margin = (ref[hf_token] - ref[our_token]).abs().item()
        tolerance = 3 * bf16_rel_err * ref.pow(2).mean().sqrt().item()
        margins.append({"prompt": prompt, "position": position, "reference_token": hf_token,
                        "our_token": our_token, "margin": margin, "tolerance": tolerance})
        if margin <= tolerance:
            near_ties += 1
            after_ties += remaining
    tie_aware = greedy["agreement_before_divergence"] + after_ties / greedy["tokens"]
    greedy.update({"near_tie_divergences": near_ties, "other_divergences": len(divergences) - near_ties,
                   "divergence_margins": margins, "tie_aware_agreement": tie_aware,
                   "passed": tie_aware >= GREEDY_AGREEMENT_TARGET})
    return greedy


@torch.inference_mode()
def probe_divergences(greedy: dict, engines: dict, prompts: list[list[int]], reference: list[list[int]],
                      max_new_tokens: int, hf_model) -> list[dict]:
    """For each divergence that is no near-tie: how far bf16 itself is off there, and which part of our engine
    picks the other token. At the context where the continuations part (the prompt plus the reference's tokens
    before it): HF's own bf16 model's relative logit error there and its margin of the reference's token over
    ours (> 0: it would pick the reference's; hf_model arrives in float32 holding bf16-rounded weights, so the
    round trip through bf16 is exact); our margin, computed by the prefill path and by a decode step, for the
    context alone and among the other prompts' contexts of the same length; and, for each engine variant in
    `engines` (name -> factory), the token its whole greedy run picks there and how long it agrees with the
    reference, for all prompts run together and for this prompt alone."""
    probes = []
    for d in greedy["divergence_margins"]:
        if d["margin"] <= d["tolerance"]:
            continue
        i, position, ref_token, our_token = d["prompt"], d["position"], d["reference_token"], d["our_token"]
        margin = lambda logits: (logits[ref_token] - logits[our_token]).item()  # noqa: E731
        context = prompts[i] + reference[i][:position]
        fp32 = hf_model(torch.tensor([context], device="cuda")).logits[0, -1].float()
        hf_model.to(torch.bfloat16)
        bf16 = hf_model(torch.tensor([context], device="cuda")).logits[0, -1].float()
        hf_model.to(torch.float32)
        batch = [context] + [p + r[:position] for j, (p, r) in enumerate(zip(prompts, reference)) if j != i]
        engine = next(iter(engines.values()))()
        margins = {
            "prefill, alone": margin(engine_logits(engine, [context], [0])[0][0]),
            "decode step, alone": margin(engine_logits(engine, [context[:-1]], [context[-1]])[1][0]),
            "prefill, in the batch": margin(engine_logits(engine, batch, [0] * len(batch))[0][0]),
            "decode step, in the batch": margin(engine_logits(engine, [b[:-1] for b in batch],
                                                              [b[-1] for b in batch])[1][0]),
        }
        del engine
        runs = {}
        for name, make in engines.items():
            for together in (True, False):
                outs = engine_greedy(make(), prompts if together else [prompts[i]], max_new_tokens)
                out = outs[i if together else 0]
                runs[f"{name}, {'all prompts' if together else 'alone'}"] = {
                    "token_there": out[position], "agrees_for": common_prefix(out, reference[i])}
        probes.append({**d, "hf_bf16_relative_error_here": relative_error(bf16, fp32),
                       "hf_bf16_margin": margin(bf16), "our_margins": margins, "greedy_runs": runs})
    return probes


def batching_check(make_engine, prompts: list[list[int]], max_new_tokens: int) -> dict:
    """Everything at once in an engine whose KV cache is too small for all of it (so the scheduler preempts), vs
    each prompt alone in a roomy one: greedy outputs must be the same, up to near-ties (other batch sizes round
    differently in bf16), so the result goes through `classify_divergences` like the HF comparison."""
    alone_engine = make_engine(1024)
    alone = [engine_greedy(alone_engine, [p], max_new_tokens)[0] for p in prompts]
    del alone_engine
    need = sum(-(-(len(p) + max_new_tokens) // 16) for p in prompts)
    tight_engine = make_engine(max(need // 3, max(-(-(len(p) + max_new_tokens) // 16) for p in prompts) + 1))
    together = engine_greedy(tight_engine, prompts, max_new_tokens)
    result = greedy_check(together, alone, prompts)
    result["preemptions"] = tight_engine.scheduler.num_preemptions
    return result
