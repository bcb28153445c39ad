"""Capacity estimation from measurements, the spot split, and preemption-rate learning."""

import math

import pytest

from fleetserve.autoscaler.estimate import PRIOR, CapacityEstimate, batch_itl_sample, estimate_capacity, fit_itl_line
from fleetserve.autoscaler.metrics import MetricsSnapshot, MetricsUnavailable, snapshot_from_values
from fleetserve.autoscaler.spot import PreemptionRate, SpotSettings, overprovision, poisson_quantile, split


def snapshot(**overrides) -> MetricsSnapshot:
    values = dict(
        replicas_reporting=2, arrival_rate=2.0, waiting=0.0, running=20.0, kv_cache_usage=0.25,
        prompt_tokens_rate=2000.0, generation_tokens_rate=400.0, completion_rate=2.0,
        ttft_mean_s=0.3, itl_mean_s=0.04, queue_time_mean_s=0.1, e2e_mean_s=8.1, ttft_quantile_s=0.6,
    )
    return MetricsSnapshot(**{**values, **overrides})


def test_slots_come_from_measured_kv_occupancy():
    # 10 running per replica fill 25% of the KV cache: 40 sequences fit.
    estimate = estimate_capacity(snapshot(), PRIOR, [(10, 0.04), (20, 0.04)], itl_slo_s=0.1, max_num_seqs=256)
    assert estimate.slots_per_replica == 40
    assert estimate.prefill_s == pytest.approx(0.2)
    assert estimate.service_time_s >= 8.0  # at least the measured time in the engine


def test_slots_are_limited_by_the_itl_slo_through_the_fitted_line():
    samples = [(4, 0.02), (8, 0.03), (16, 0.05)]  # decode step = 0.01 + 0.0025 * batch
    line = fit_itl_line(samples)
    assert line.base_s == pytest.approx(0.01) and line.per_sequence_s == pytest.approx(0.0025)
    estimate = estimate_capacity(snapshot(kv_cache_usage=0.01), PRIOR, samples, itl_slo_s=0.06, max_num_seqs=256)
    # Prompts take 20% of a replica's time (2 req/s x 0.2 s over 2 replicas), so a token takes a step / 0.8: the
    # step may be 0.048 s, batch 15.
    assert estimate.slots_per_replica == 15
    # Service time is planned at that larger batch: 200 tokens x ITL(15) plus prefill.
    assert estimate.service_time_s == pytest.approx(0.2 + 200 * (0.01 + 0.0025 * 15) / 0.8)


def test_an_itl_sample_is_the_decode_step_without_the_prompt_chunks_it_shared():
    # 1000 prompt tokens/s per replica at 5000 tokens/s: 20% of each step is prefill, so a 0.04 s ITL is a 0.032 s
    # decode step; before the prefill speed is known, the ITL is taken as it is.
    assert batch_itl_sample(snapshot(), 5000.0) == (10.0, pytest.approx(0.032))
    assert batch_itl_sample(snapshot(), 0.0) == (10.0, 0.04)


def test_the_itl_fit_is_not_trusted_far_beyond_the_batches_seen():
    # A noisy, steep-looking fit over batches 8..12 must not plan for batch 200, nor for batch 300 at ITL 0.1 s.
    samples = [(8, 0.010), (10, 0.0101), (12, 0.0102)]
    estimate = estimate_capacity(snapshot(kv_cache_usage=0.01), PRIOR, samples, itl_slo_s=0.1, max_num_seqs=256)
    assert estimate.slots_per_replica == 24


def test_idle_pool_keeps_the_previous_estimate():
    previous = CapacityEstimate(12, 5.0, 0.1)
    idle = snapshot(completion_rate=0.0, running=0.0, e2e_mean_s=None, itl_mean_s=None, ttft_mean_s=None)
    assert estimate_capacity(idle, previous, [], 0.1, 256) is previous


def test_snapshot_rejects_missing_and_stale_engine_series():
    with pytest.raises(MetricsUnavailable, match="no engine replica"):
        snapshot_from_values({"replicas_reporting": None, "waiting": None, "running": None}, 20)
    with pytest.raises(MetricsUnavailable, match="old"):
        snapshot_from_values({"replicas_reporting": 2, "waiting": 0, "running": 1, "sample_age_s": 95.0}, 20)
    fresh = snapshot_from_values(
        {"replicas_reporting": 2, "waiting": 3, "running": 1, "sample_age_s": 1.0,
         "completion_rate": 1.5, "queue_growth": 0.5}, 20)
    assert fresh.arrival_rate == pytest.approx(2.0)  # completions plus queue growth


def test_split_keeps_the_on_demand_floor_and_the_spot_share():
    settings = SpotSettings(enabled=True, max_share=0.8, on_demand_min=1)
    no_preemptions = PreemptionRate(prior_preemptions=0)
    plan = split(10, settings, no_preemptions, replacement_s=120, spot_not_serving=0)
    assert (plan.on_demand, plan.spot) == (2, 8)  # max share 0.8 beats the floor of 1
    assert split(1, settings, no_preemptions, 120, 0).spot == 0  # the floor comes first
    assert split(10, SpotSettings(False, 0.8, 1), no_preemptions, 120, 0).spot == 0
    assert split(0, settings, no_preemptions, 120, 0).total == 0


def test_spot_fallback_covers_what_is_not_serving_and_returns():
    settings = SpotSettings(enabled=True, max_share=1.0, on_demand_min=1)
    rate = PreemptionRate(prior_preemptions=0)
    short = split(6, settings, rate, 120, spot_not_serving=3)
    assert (short.on_demand, short.spot) == (4, 5)  # spot still requested: its pods notice capacity coming back
    back = split(6, settings, rate, 120, spot_not_serving=0)
    assert (back.on_demand, back.spot) == (1, 5)


def test_overprovisioning_follows_the_learned_preemption_rate():
    assert poisson_quantile(0, 0.9) == 0
    assert poisson_quantile(2.0, 0.9) == 4
    assert overprovision(10, rate_per_replica_hour=0.0, replacement_s=120) == 0
    assert overprovision(10, rate_per_replica_hour=6.0, replacement_s=120) >= 2
    rate = PreemptionRate().observe(preemptions=12, spot_replicas=4, elapsed_s=3600)
    assert rate.preemptions == 12 and rate.spot_replica_hours == pytest.approx(4.0)
    assert rate.per_replica_hour() == pytest.approx((12 + 0.1) / 5.0)
    settings = SpotSettings(enabled=True, max_share=1.0, on_demand_min=0)
    assert split(10, settings, rate, 600, 0).spot > split(10, settings, PreemptionRate(), 600, 0).spot


def test_saturated_replicas_bound_the_capacity_the_model_promises():
    # The ITL fit promises 15 slots x 12.1 s per replica: 1.2 requests/s. Saturated (every slot busy, a queue),
    # the two replicas complete 1 request/s in all, 0.5 each: Little's law gives 15 x 2 / 1.0 = 30 s a slot.
    samples = [(4, 0.02), (8, 0.03), (16, 0.05)]
    busy = snapshot(kv_cache_usage=0.01, running=40.0, waiting=12.0, completion_rate=1.0,
                    prompt_tokens_rate=1000.0, generation_tokens_rate=200.0)
    estimate = estimate_capacity(busy, PRIOR, samples, itl_slo_s=0.06, max_num_seqs=256)
    assert estimate.slots_per_replica == 15
    assert estimate.saturated_tokens_per_s == pytest.approx(600.0)
    assert estimate.service_time_s == pytest.approx(30.0)
    # The queue gone, the bound stays, scaled to today's request size (half the tokens: half the time a slot; the
    # lighter prefill share, 0.1, lets a replica run 17 slots within the ITL SLO: 17 x 600 / 1.0 / 600 s).
    calm = snapshot(kv_cache_usage=0.01, running=10.0, waiting=0.0, completion_rate=1.0,
                    prompt_tokens_rate=500.0, generation_tokens_rate=100.0)
    later = estimate_capacity(calm, estimate, samples, itl_slo_s=0.06, max_num_seqs=256)
    assert later.saturated_tokens_per_s == pytest.approx(600.0)
    assert later.slots_per_replica == 17 and later.service_time_s == pytest.approx(17.0)
    # Unsaturated windows never set the bound.
    assert estimate_capacity(calm, PRIOR, samples, itl_slo_s=0.06, max_num_seqs=256).saturated_tokens_per_s == 0


def test_the_prompt_lengths_come_from_the_histogram_or_else_the_mean():
    # 2 prompts/s finish: one of up to 500 tokens, one of 500-2,000 (vLLM's 1-2-5 buckets; +Inf last).
    buckets = ((200.0, 0.0), (500.0, 1.0), (1000.0, 1.0), (2000.0, 2.0), (math.inf, 2.0))
    estimate = estimate_capacity(snapshot(prompt_tokens_buckets=buckets), PRIOR, [(10, 0.04)], itl_slo_s=0.1,
                                 max_num_seqs=256)
    assert estimate.prompt_lengths.buckets == ((200.0, 500.0, 0.5), (1000.0, 2000.0, 0.5))
    # Without the histogram, every prompt is taken as the mean one: 2,000 prompt tokens/s over 2 requests/s.
    plain = estimate_capacity(snapshot(), PRIOR, [(10, 0.04)], itl_slo_s=0.1, max_num_seqs=256)
    assert plain.prompt_lengths.buckets == ((1000.0, 1000.0, 1.0),)
    # An idle window measures nothing: the lengths carry over.
    idle = estimate_capacity(snapshot(completion_rate=0.0), estimate, [], itl_slo_s=0.1, max_num_seqs=256)
    assert idle.prompt_lengths == estimate.prompt_lengths


def test_an_itl_slo_missed_even_by_one_sequence_does_not_size_the_fleet():
    # Every batch size misses a 0.25 s ITL (a contended CPU): one slot per replica would ask for max replicas,
    # none of which would meet it either. The slots come from the other bounds (here twice the largest batch).
    samples = [(1, 0.4), (4, 0.5), (8, 0.6)]
    estimate = estimate_capacity(snapshot(kv_cache_usage=0.01), PRIOR, samples, itl_slo_s=0.25, max_num_seqs=16)
    assert estimate.slots_per_replica == 16
    assert fit_itl_line([(2, 0.3), (2.5, 0.3)]).largest_batch_within(0.25, 16) == 16  # flat, above the limit
