"""The grammar matchers' worker processes (grammar_workers.py): a batch's constrained rows split between several
workers give the tokens of one worker; a worker that dies fails the step it was in with a clear error, the engine
carries on, and the next constrained request gets new workers."""

import json
from multiprocessing import shared_memory

import jsonschema
import pytest

from fleetserve.engine import structured_output
from fleetserve.engine.sampling_params import SamplingParams
from fleetserve.engine.structured_output import grammar_compiler

SCHEMA = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 8},
                                           "age": {"type": "integer", "minimum": 0, "maximum": 120}},
          "required": ["name", "age"], "additionalProperties": False}


def compile_schema(engine):
    return grammar_compiler(engine.tokenizer, engine.vocab_size,
                            tuple(sorted(engine.loaded.eos_token_ids))).json_schema(SCHEMA)


def test_rows_split_between_workers_give_the_tokens_of_one_worker(make_engine, prompts, monkeypatch):
    one = make_engine(num_kv_blocks=64, max_model_len=512, overlap_steps=True)
    monkeypatch.setattr(structured_output, "default_processes", lambda: 3)
    three = make_engine(num_kv_blocks=64, max_model_len=512, overlap_steps=True)
    grammar = compile_schema(one)
    free = SamplingParams(max_tokens=12, temperature=0.0, ignore_eos=True)
    constrained = SamplingParams(max_tokens=48, temperature=0.0, grammar=grammar)
    batch = prompts[:4], [constrained, free, constrained, constrained]
    expected = one.generate(*batch)
    got = three.generate(*batch)
    assert three.sampler.grammars.workers._load == [0, 0, 0]  # each worker had a row; all removed since
    assert len(three.sampler.grammars.workers._procs) == 3
    assert [o.new_token_ids for o in got] == [o.new_token_ids for o in expected]
    for out in (got[0], got[2], got[3]):
        jsonschema.validate(json.loads(out.new_text), SCHEMA)


def test_a_dead_worker_fails_its_step_and_the_next_request_gets_new_workers(make_engine, prompts):
    engine = make_engine(num_kv_blocks=64, max_model_len=512, overlap_steps=True)
    grammar = compile_schema(engine)
    engine.add_request("json", prompts[0],
                       SamplingParams(max_tokens=48, temperature=0.0, grammar=grammar))
    engine.add_request("free", prompts[1],
                       SamplingParams(max_tokens=8, temperature=0.0, ignore_eos=True))
    engine.step()
    workers = engine.sampler.grammars.workers
    for proc in workers._procs:
        proc.kill()
        proc.wait()
    outputs = []
    while engine.has_unfinished_requests() or engine._in_flight is not None:
        outputs += engine.step()
    errors = {o.request_id: o.error for o in outputs if o.error}
    assert "json" in errors and "grammar worker" in errors["json"]
    assert not workers.alive
    out = engine.generate([prompts[2]], SamplingParams(max_tokens=48, temperature=0.0, grammar=grammar))[0]
    assert engine.sampler.grammars.workers is not workers
    jsonschema.validate(json.loads(out.new_text), SCHEMA)


@pytest.mark.parametrize("overlap", [False, True])
def test_no_worker_process_outlives_its_engine_masks(make_engine, prompts, overlap):
    engine = make_engine(num_kv_blocks=64, max_model_len=512, overlap_steps=overlap)
    engine.generate([prompts[0]], SamplingParams(max_tokens=24, temperature=0.0, grammar=compile_schema(engine)))
    workers = engine.sampler.grammars.workers
    procs, name = workers._procs, workers._shm.name
    workers.close()
    assert all(proc.poll() is not None for proc in procs)
    with pytest.raises(FileNotFoundError):
        shared_memory.SharedMemory(name=name)
