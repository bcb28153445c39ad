"""Grammar masks with overlapped steps (on by default on a GPU, forced on here on the CPU): a step is launched
before the previous step's tokens are read back, so a constrained request that has just accepted EOS is sampled
once more (that token is dropped). Its ended grammar must not fail the step, which would abort the whole batch;
and the tokens a step leaves unaccepted go to the matchers they were drawn for, never to a new request that
reuses an id. As on a GPU, a batch with a constrained request can also sample only after the step before is read
back, the grammar workers accepting and filling meanwhile: the tokens must be those of an engine that never
overlaps."""

import json

import jsonschema
import torch

from fleetserve.engine.sampler import SampledBatch, SampledToken, host_tensor
from fleetserve.engine.sampling_params import SamplingParams
from fleetserve.engine.structured_output import GrammarMasks, grammar_compiler

SCHEMA = {"type": "object", "properties": {"answer": {"enum": ["yes", "no"]}}, "required": ["answer"],
          "additionalProperties": False}


def test_a_constrained_request_ending_on_eos_leaves_its_batch_running(make_engine, prompts):
    engine = make_engine(num_kv_blocks=64, max_model_len=512, overlap_steps=True)
    grammar = grammar_compiler(engine.tokenizer, engine.vocab_size,
                               tuple(sorted(engine.loaded.eos_token_ids))).json_schema(SCHEMA)
    free = SamplingParams(max_tokens=16, temperature=0.0, ignore_eos=True)
    alone = engine.generate(prompts[:2], free)
    constrained = SamplingParams(max_tokens=40, temperature=0.0, grammar=grammar)
    outs = engine.generate([prompts[0], prompts[2], prompts[1]], [free, constrained, free])
    assert outs[1].finish_reason == "stop" and outs[1].completion_tokens < 16  # ended on EOS while the rest ran on
    jsonschema.validate(json.loads(outs[1].new_text), SCHEMA)
    assert [outs[0].new_token_ids, outs[2].new_token_ids] == [a.new_token_ids for a in alone]
    assert [o.finish_reason for o in (outs[0], outs[2])] == ["length", "length"]


def test_unaccepted_tokens_never_reach_a_new_request_under_the_same_id(tokenizer):
    vocab = len(tokenizer)
    grammar = grammar_compiler(tokenizer, vocab, (tokenizer.eos_token_id,)).json_schema(SCHEMA)
    masks = GrammarMasks(torch.device("cpu"))  # the step's tokens are accepted when the next step needs them
    masks.add("r", grammar)
    first = tokenizer.convert_tokens_to_ids("{")
    masks.record(SampledBatch(torch.tensor([first]), lambda: [SampledToken(first)]), ["r"])
    masks.remove("r")  # finished (aborted, say) before its token was accepted
    masks.add("r", grammar)  # a new request under the same id
    logits = masks.apply(torch.zeros(1, vocab), ["r"], host_tensor)
    assert torch.isfinite(logits[0, first])  # the new grammar is at its start: "{" is still what it wants


def test_masks_filled_beside_the_read_back_give_the_tokens_of_an_engine_without_overlap(make_engine, prompts):
    plain = make_engine(num_kv_blocks=64, max_model_len=512)
    overlapped = make_engine(num_kv_blocks=64, max_model_len=512, overlap_steps=True)
    waited = []
    sample_waiting = overlapped._sample_waiting
    overlapped._sample_waiting = lambda step: waited.append(step) or sample_waiting(step)
    grammar = grammar_compiler(plain.tokenizer, plain.vocab_size,
                               tuple(sorted(plain.loaded.eos_token_ids))).json_schema(SCHEMA)
    free = SamplingParams(max_tokens=16, temperature=0.0, ignore_eos=True)
    seeded = SamplingParams(max_tokens=16, temperature=0.8, seed=7, presence_penalty=0.5, ignore_eos=True)
    constrained = SamplingParams(max_tokens=40, temperature=0.0, grammar=grammar)
    batch = [prompts[0], prompts[2], prompts[1], prompts[3]], [free, constrained, seeded, constrained]
    expected = plain.generate(*batch)
    got = overlapped.generate(*batch)
    assert waited  # the path under test ran
    assert [o.new_token_ids for o in got] == [o.new_token_ids for o in expected]
    assert [o.finish_reason for o in got] == ["length", "stop", "length", "stop"]  # constrained ones ended first
    for out in (got[1], got[3]):
        jsonschema.validate(json.loads(out.new_text), SCHEMA)
