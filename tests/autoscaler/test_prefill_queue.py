"""A replica's prefill queue over the measured prompt-length distribution: the histogram read, the first-come
first-served waits, and the share of feasible requests it predicts over the SLO."""

import math

import numpy as np
import pytest

from fleetserve.autoscaler.estimate import CapacityEstimate
from fleetserve.autoscaler.policy import Load, PrefillQueue, SloTarget, recommend
from fleetserve.autoscaler.prompt_lengths import PromptLengths
from fleetserve.autoscaler.queueing import fifo_waits

SLO = SloTarget(ttft_s=1.0, quantile=0.99)
ALLOWED = (1 - SLO.quantile) * (1 - SLO.headroom)
SPEED = 10_000.0  # prompt tokens prefilled per second


def capacity(lengths: PromptLengths) -> CapacityEstimate:
    mean_tokens = float(np.mean(lengths.sample(np.random.default_rng(1), 100_000)))
    return CapacityEstimate(slots_per_replica=256, service_time_s=2.0, prefill_s=mean_tokens / SPEED,
                            prefill_tokens_per_s=SPEED, prompt_lengths=lengths)


def test_the_histogram_becomes_buckets():
    lengths = PromptLengths.from_histogram([(10.0, 2.0), (20.0, 3.0), (math.inf, 4.0)])
    # Above the last bound (20) prompts spread up to the next 1-2-5 step (50).
    assert lengths.buckets == ((0.0, 10.0, 0.5), (10.0, 20.0, 0.25), (20.0, 50.0, 0.25))
    assert PromptLengths.from_histogram([(10.0, 0.0), (math.inf, 0.0)]) is None  # nothing finished
    drawn = lengths.sample(np.random.default_rng(0), 40_000)
    assert drawn.min() >= 1 and drawn.max() <= 50
    assert np.mean(drawn <= 10) == pytest.approx(0.5, abs=0.01) and np.mean(drawn > 20) == pytest.approx(0.25, abs=0.01)


def test_lengths_spread_evenly_in_log_scale_within_a_bucket():
    # 1-2-5 buckets are spaced in log scale, and prompt lengths thin out towards a bucket's long end.
    drawn = PromptLengths(((100.0, 10_000.0, 1.0),)).sample(np.random.default_rng(0), 40_000)
    assert np.median(drawn) == pytest.approx(1000, rel=0.05)
    assert PromptLengths.one_length(700.0).sample(np.random.default_rng(0), 3).tolist() == [700.0] * 3


def test_first_come_first_served_waits():
    service = np.array([2.0, 2.0, 2.0, 0.5])
    assert fifo_waits(service, np.array([0.0, 1.0, 1.0, 5.0])).tolist() == [0.0, 1.0, 2.0, 0.0]
    assert fifo_waits(service, np.array([0.0, 3.0, 3.0, 3.0])).tolist() == [0.0, 0.0, 0.0, 0.0]
    # M/M/1 at rho = 0.5: mean wait rho / (1 - rho) x the mean service.
    rng = np.random.default_rng(0)
    waits = fifo_waits(rng.exponential(0.1, 400_000), rng.exponential(0.2, 400_000))
    assert waits.mean() == pytest.approx(0.1, rel=0.05)


def test_round_robin_gaps_are_more_regular_than_poisson():
    # Prompts of 0.15-0.5 s; 8 req/s over 4 replicas: each replica's prefill is busy about 60% of the time.
    lengths = PromptLengths(((1500.0, 5000.0, 1.0),))
    queue = PrefillQueue(Load(8.0, 0, 10), capacity(lengths), SLO)
    rng = np.random.default_rng(0)
    prefill_s = lengths.sample(rng, 200_000) / SPEED
    poisson = np.mean(fifo_waits(prefill_s, rng.exponential(4 / 8.0, 200_000)) + prefill_s > SLO.ttft_s)
    assert 0 < queue.miss_share(4, 0.0) < poisson / 2


def test_more_replicas_miss_fewer_requests_and_the_fewest_is_found():
    lengths = PromptLengths(((100.0, 2000.0, 0.9), (2000.0, 8000.0, 0.1)))
    queue = PrefillQueue(Load(20.0, 0, 10), capacity(lengths), SLO)
    misses = [queue.miss_share(n, 0.0) for n in range(1, 41)]
    assert misses[0] > 0.5  # one replica would be busy prefilling more than all of the time
    assert misses[-1] < ALLOWED and sorted(misses, reverse=True) == misses
    fewest = queue.fewest_replicas(ALLOWED, 40)
    assert misses[fewest - 1] <= ALLOWED < misses[fewest - 2]
    assert queue.fewest_replicas(ALLOWED, fewest - 1) is None
    assert queue.miss_share(fewest, 0.3) > queue.miss_share(fewest, 0.0)  # a wait for a slot eats the slack


def test_the_length_distribution_not_its_mean_sizes_the_fleet():
    # About the same mean prompt (0.1 s of prefill): once all alike, once a tenth of them 0.6-0.9 s long.
    alike = PromptLengths.one_length(1000.0)
    skewed = PromptLengths(((100.0, 500.0, 0.9), (6000.0, 9000.0, 0.1)))
    assert capacity(skewed).prefill_s == pytest.approx(capacity(alike).prefill_s, rel=0.2)
    load = Load(30.0, 0, 10)
    few = recommend(load, capacity(alike), SLO, ready_replicas=4, cold_start_s=0, max_replicas=100)
    many = recommend(load, capacity(skewed), SLO, ready_replicas=4, cold_start_s=0, max_replicas=100)
    assert many.replicas > few.replicas
    assert many.predicted_miss_share <= ALLOWED and "of feasible requests" in many.reason


def test_prompts_that_alone_miss_the_slo_do_not_size_the_fleet():
    feasible = PromptLengths(((100.0, 1000.0, 1.0),))
    # A twentieth of the prompts take 1.5-2 s to prefill against a 1 s SLO: no replica count helps them.
    with_infeasible = PromptLengths(((100.0, 1000.0, 0.95), (15_000.0, 20_000.0, 0.05)))
    load = Load(5.0, 0, 10)
    plain = recommend(load, capacity(feasible), SLO, ready_replicas=2, cold_start_s=0, max_replicas=50)
    result = recommend(load, capacity(with_infeasible), SLO, ready_replicas=2, cold_start_s=0, max_replicas=50)
    assert "not reachable" not in result.reason and result.replicas < 50
    # They still take prefill time from the others, so the fleet may grow for that, not to max.
    assert result.replicas >= plain.replicas


def test_feasible_prompts_with_little_slack_are_planned_for():
    # A few prompts of 0.85-0.95 s keep only 0.05-0.15 s for any wait: the fleet keeps its prefill queues short.
    roomy = PromptLengths(((100.0, 1000.0, 0.97), (4000.0, 4500.0, 0.03)))
    tight = PromptLengths(((100.0, 1000.0, 0.97), (8500.0, 9500.0, 0.03)))
    load = Load(20.0, 0, 10)
    relaxed = recommend(load, capacity(roomy), SLO, ready_replicas=2, cold_start_s=0, max_replicas=100)
    careful = recommend(load, capacity(tight), SLO, ready_replicas=2, cold_start_s=0, max_replicas=100)
    assert careful.replicas > relaxed.replicas


def test_before_any_histogram_the_mean_prefill_stands_in():
    measured_nothing = CapacityEstimate(slots_per_replica=16, service_time_s=8.0, prefill_s=0.2)
    queue = PrefillQueue(Load(10.0, 0, 5), measured_nothing, SLO)
    assert queue.miss_share(1, 0.0) > 0.9  # 10 x 0.2 s of prefill a second: two replicas' worth
    assert queue.miss_share(20, 0.0) == 0.0  # gaps of 2 s on average, rarely under the 0.2 s a prompt takes
