"""Scheduling policy without a model: token budget, max_num_seqs, chunked prefill, preemption by recompute."""

import random

from fleetserve.engine.block_manager import BlockManager
from fleetserve.engine.sampling_params import SamplingParams
from fleetserve.engine.scheduler import Scheduler
from fleetserve.engine.sequence import Sequence, SequenceStatus


def make(num_blocks=64, block_size=4, max_num_seqs=8, budget=32, caching=True):
    return Scheduler(BlockManager(num_blocks, block_size, caching), max_num_seqs, budget)


def add(sched, rid, n, start=0):
    return add_tokens(sched, rid, list(range(start, start + n)))


def add_tokens(sched, rid, tokens):
    seq = Sequence(rid, tokens, SamplingParams())
    sched.add(seq)
    return seq


def run_step(sched):
    """One step as the engine does it; every sequence that reached its end 'samples' token 1."""
    scheduled = sched.schedule()
    sampling = [s for s in scheduled if s.samples_after_step()]
    plan = {s.request_id: s.num_new_tokens for s in scheduled}
    sched.step_done(scheduled)
    for s in sampling:
        s.token_ids.append(1)
    return plan


def test_token_budget_chunks_a_long_prompt_and_mixes_in_decodes():
    sched = make(budget=10)
    a = add(sched, "a", 3, start=100)
    assert run_step(sched) == {"a": 3}  # a prefilled, now decoding
    add(sched, "b", 25)
    assert run_step(sched) == {"a": 1, "b": 9}
    assert run_step(sched) == {"a": 1, "b": 9}
    assert run_step(sched) == {"a": 1, "b": 7}  # b's last chunk: it samples now
    assert run_step(sched) == {"a": 1, "b": 1}
    assert a.num_output_tokens == 5


def test_max_num_seqs_limits_admission():
    sched = make(max_num_seqs=2, budget=100)
    for i in range(3):
        add(sched, f"r{i}", 4, start=10 * i)
    assert set(run_step(sched)) == {"r0", "r1"}
    assert len(sched.waiting) == 1


def test_preemption_when_blocks_run_out_requeues_newest_at_front_and_keeps_tokens():
    sched = make(num_blocks=4, block_size=4, budget=100, caching=False)
    a = add(sched, "a", 8, start=0)
    b = add(sched, "b", 8, start=50)
    run_step(sched)  # both prefilled: 8 tokens each = all 4 blocks, plus a sampled 9th not yet in the cache
    assert sched.block_manager.num_free_blocks == 0
    plan = run_step(sched)  # both need a 3rd block: b (newest) is preempted so a can grow
    assert plan == {"a": 1}
    assert sched.num_preemptions == 1
    assert b.status == SequenceStatus.WAITING and sched.waiting[0] is b
    assert b.block_table == [] and b.num_computed_tokens == 0 and len(b) == 9  # its sampled token is kept
    sched.finish(a, "stop")
    assert run_step(sched) == {"b": 9}  # recompute prompt + generated token in one go


def test_preempted_sequence_resumes_before_newer_arrivals():
    sched = make(num_blocks=4, block_size=4, budget=100, caching=False)
    add(sched, "a", 8)
    b = add(sched, "b", 8, start=50)
    run_step(sched)
    run_step(sched)  # b preempted
    c = add(sched, "c", 3, start=90)
    assert list(sched.waiting) == [b, c]


def test_finish_frees_blocks_of_waiting_and_running():
    sched = make()
    a = add(sched, "a", 9)
    b = add(sched, "b", 9, start=30)
    sched.max_num_seqs = 1
    run_step(sched)
    sched.finish(a, "abort")
    sched.finish(b, "abort")
    assert sched.block_manager.num_free_blocks == 64 and not sched.has_work()


def check_invariants(sched):
    bm = sched.block_manager
    holders = {}
    for seq in list(sched.running) + list(sched.waiting):
        for block in seq.block_table:
            holders[block] = holders.get(block, 0) + 1
    for block in range(bm.num_blocks):
        assert bm.ref_counts[block] == holders.get(block, 0)
    assert bm.num_free_blocks == sum(1 for b in range(bm.num_blocks) if bm.ref_counts[b] == 0)
    for block, users in holders.items():
        if users > 1:  # only cached, fully computed blocks are ever shared
            assert block in bm.block_hash
    for seq in sched.running:
        assert seq.num_computed_tokens <= len(seq.block_table) * bm.block_size


def test_random_traffic_with_shared_prefixes_aborts_and_preemption_leaks_nothing():
    rng = random.Random(7)
    sched = make(num_blocks=12, block_size=4, max_num_seqs=6, budget=10)
    prefixes = [list(range(100, 108)), list(range(200, 212))]
    live, finished = [], 0
    for step in range(400):
        if rng.random() < 0.3 and len(live) < 10:
            prompt = rng.choice(prefixes)[:rng.randint(1, 12)] + [rng.randint(0, 50) for _ in range(rng.randint(1, 6))]
            live.append(add_tokens(sched, f"s{step}", prompt))
        run_step(sched)
        check_invariants(sched)
        for seq in list(live):
            if seq.num_output_tokens >= 6 or rng.random() < 0.02:  # done, or aborted at a random moment
                sched.finish(seq, "length")
                live.remove(seq)
                finished += 1
        check_invariants(sched)
    for seq in live:
        sched.finish(seq, "abort")
    assert sched.block_manager.num_free_blocks == 12 and not sched.has_work()
    assert finished > 20 and sched.num_preemptions > 0 and sched.block_manager.prefix_hits > 0


def test_admission_batching_waits_for_free_places_or_steps_while_the_batch_decodes():
    sched = Scheduler(BlockManager(256, 4, True), 8, 100, admission_batch=3, admission_wait_steps=2)
    running = [add(sched, f"r{i}", 4, start=10 * i) for i in range(8)]
    add(sched, "w0", 4, start=200)
    add(sched, "w1", 4, start=300)
    assert set(run_step(sched)) == {f"r{i}" for i in range(8)}  # an empty batch fills at once
    sched.finish(running[0], "stop")  # one free place, fewer than 3: decodes alone, for at most 2 steps
    assert set(run_step(sched)) == {f"r{i}" for i in range(1, 8)}
    assert set(run_step(sched)) == {f"r{i}" for i in range(1, 8)}
    assert run_step(sched)["w0"] == 4  # waited 2 steps: admitted
    sched.finish(running[1], "stop")
    sched.finish(running[2], "stop")
    sched.finish(running[3], "stop")  # 3 free places: no wait
    assert run_step(sched)["w1"] == 4


def test_admission_batching_never_delays_a_step_that_already_prefills():
    sched = Scheduler(BlockManager(256, 4, True), 4, 6, admission_batch=4, admission_wait_steps=8)
    add(sched, "long", 10, start=0)
    add(sched, "short", 2, start=100)
    assert run_step(sched) == {"long": 6}
    assert run_step(sched) == {"long": 4, "short": 2}  # the step is eager anyway: admit
