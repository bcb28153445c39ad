"""Greedy output is token-identical to HF transformers `generate` on the same weights, however the engine batches,
caches, chunks or preempts."""

from fleetserve.engine.sampling_params import SamplingParams

GREEDY = SamplingParams(max_tokens=16, temperature=0.0)


def mixed_params(n: int) -> list[SamplingParams]:
    return [SamplingParams(max_tokens=4 + (i * 5) % 13, temperature=0.0) for i in range(n)]


def expected(hf_greedy, prompts, params):
    return [hf_greedy(p, sp.max_tokens) for p, sp in zip(prompts, params)]


def test_single_requests_match_hf(make_engine, hf_greedy, prompts):
    engine = make_engine(enable_prefix_caching=False)
    for prompt in prompts[:3]:
        [out] = engine.generate([prompt], GREEDY)
        assert out.new_token_ids == hf_greedy(prompt, GREEDY.max_tokens)
        assert out.finished and out.finish_reason in ("stop", "length")


def test_16_concurrent_mixed_lengths_match_hf(make_engine, hf_greedy, prompts):
    engine = make_engine()
    params = mixed_params(len(prompts))
    assert len(prompts) >= 16
    outs = engine.generate(prompts, params)
    assert [o.new_token_ids for o in outs] == expected(hf_greedy, prompts, params)


def test_text_is_the_decoded_tokens(make_engine, tokenizer, prompts):
    engine = make_engine()
    outs = engine.generate(prompts[:4], GREEDY)
    for out in outs:
        ids = [t for t in out.new_token_ids if t != tokenizer.eos_token_id]
        assert out.new_text == tokenizer.decode(ids, skip_special_tokens=True)


def test_shared_prefix_hits_the_cache_and_changes_nothing(make_engine, hf_greedy, chat_prompt):
    system = ("You are a meticulous assistant for a bakery. Always answer politely, mention our opening hours "
              "(8am to 6pm, closed on Mondays) when relevant, and keep answers short.")
    questions = ["Do you sell croissants?", "Are you open on Monday?", "What time do you close?"]
    prompts = [chat_prompt([{"role": "system", "content": system}, {"role": "user", "content": q}])
               for q in questions]
    engine = make_engine()
    first = engine.generate(prompts[:1], GREEDY)
    before = engine.stats()
    rest = engine.generate(prompts[1:], GREEDY)
    after = engine.stats()
    shared_blocks = len(prompts[0]) // 16 - 1
    assert after.prefix_cache_queries - before.prefix_cache_queries == len(prompts[1]) + len(prompts[2])
    assert after.prefix_cache_hits - before.prefix_cache_hits >= 2 * 16 * shared_blocks > 0
    got = [o.new_token_ids for o in first + rest]
    assert got == [hf_greedy(p, GREEDY.max_tokens) for p in prompts]


def test_tiny_kv_pool_preempts_32_requests_and_outputs_are_unchanged(make_engine, prompts):
    prompts = (prompts * 2)[:32]
    params = mixed_params(32)
    roomy = make_engine().generate(prompts, params)
    tiny = make_engine(num_kv_blocks=24, max_model_len=256)  # 384 tokens of cache for ~2000 wanted
    squeezed = tiny.generate(prompts, params)
    assert tiny.stats().num_preemptions > 0
    assert [o.new_token_ids for o in squeezed] == [o.new_token_ids for o in roomy]
    assert [o.new_text for o in squeezed] == [o.new_text for o in roomy]
    assert tiny.block_manager.num_free_blocks == 24


def test_chunked_prefill_gives_identical_output(make_engine, hf_greedy, prompts):
    prompts = prompts[6:12]
    params = mixed_params(len(prompts))
    engine = make_engine(max_num_batched_tokens=3, enable_prefix_caching=False)  # every prompt takes >= 2 steps
    assert all(len(p) > 3 for p in prompts)
    outs = engine.generate(prompts, params)
    assert [o.new_token_ids for o in outs] == expected(hf_greedy, prompts, params)
