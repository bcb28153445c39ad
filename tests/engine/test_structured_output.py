"""Grammar-constrained decoding in the engine: a constrained request's output follows its schema while the
unconstrained requests of the same batch produce exactly what they produce alone."""

import json

import jsonschema

from fleetserve.engine.sampling_params import SamplingParams
from fleetserve.engine.structured_output import grammar_compiler

SCHEMA = {"type": "object", "properties": {"answer": {"enum": ["yes", "no"]}, "confidence": {
    "type": "integer", "minimum": 0, "maximum": 10}}, "required": ["answer", "confidence"],
    "additionalProperties": False}


def test_mixed_batch(make_engine, prompts):
    engine = make_engine(num_kv_blocks=64, max_model_len=512)
    compiler = grammar_compiler(engine.tokenizer, engine.vocab_size, tuple(sorted(engine.loaded.eos_token_ids)))
    free = SamplingParams(max_tokens=12, temperature=0.0)
    alone = engine.generate(prompts[:2], free)
    constrained = [SamplingParams(max_tokens=40, temperature=t, seed=3, grammar=compiler.json_schema(SCHEMA))
                   for t in (0.0, 1.0)]
    outs = engine.generate([prompts[0], prompts[2], prompts[1], prompts[3]], [free, constrained[0], free,
                                                                               constrained[1]])
    assert [outs[0].new_token_ids, outs[2].new_token_ids] == [a.new_token_ids for a in alone]
    for out in (outs[1], outs[3]):
        assert out.finish_reason == "stop"
        jsonschema.validate(json.loads(out.new_text), SCHEMA)
