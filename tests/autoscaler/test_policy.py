"""The pure policy: queueing prediction, recommendation, damping, floors/ceilings and tensor-parallel groups."""

import pytest

from fleetserve.autoscaler.estimate import CapacityEstimate
from fleetserve.autoscaler.policy import Load, PrefillQueue, SloTarget, clamp, recommend, service_time_at, stabilize
from fleetserve.autoscaler.queueing import UNSTABLE, backlog_drain_time, erlang_c, waiting_time_quantile

CAPACITY = CapacityEstimate(slots_per_replica=16, service_time_s=8.0, prefill_s=0.2)
SLO = SloTarget(ttft_s=1.0, quantile=0.99)


def test_erlang_c_matches_the_textbook_value():
    # Two servers at one Erlang of load: C = 1/3.
    assert erlang_c(2, 1.0) == pytest.approx(1 / 3)
    assert erlang_c(4, 0.0) == 0.0
    assert erlang_c(4, 4.0) == 1.0


def test_waiting_time_grows_with_load_and_diverges_at_saturation():
    waits = [waiting_time_quantile(rate, 8.0, 32, 0.99) for rate in (0.5, 2.0, 3.5, 3.9)]
    assert waits == sorted(waits)
    assert waits[0] == 0.0
    assert waiting_time_quantile(4.0, 8.0, 32, 0.99) == UNSTABLE
    assert waiting_time_quantile(1.0, 8.0, 0, 0.99) == UNSTABLE


def test_backlog_drains_faster_with_more_servers():
    assert backlog_drain_time(0, 1.0, 8.0, 16) == 0.0
    assert backlog_drain_time(100, 1.0, 8.0, 32) < backlog_drain_time(100, 1.0, 8.0, 16)
    assert backlog_drain_time(100, 4.0, 8.0, 32) == UNSTABLE


def test_recommendation_is_monotone_in_load():
    counts = [
        recommend(Load(rate, backlog=0, in_flight=1), CAPACITY, SLO, ready_replicas=1, cold_start_s=60, max_replicas=100).replicas
        for rate in [0.1 * i for i in range(1, 200)]
    ]
    assert counts == sorted(counts)
    assert counts[0] == 1 and counts[-1] > 5


def test_recommendation_meets_the_slo_with_headroom_and_the_utilisation_cap():
    load = Load(arrival_rate=10.0, backlog=0, in_flight=50)
    result = recommend(load, CAPACITY, SLO, ready_replicas=10, cold_start_s=60, max_replicas=100)

    def fits(replicas: int) -> bool:
        service_s = service_time_at(load, CAPACITY, replicas)
        servers = replicas * CAPACITY.slots_per_replica
        slot_wait = waiting_time_quantile(load.arrival_rate, service_s, servers, 0.99)
        missed = PrefillQueue(load, CAPACITY, SLO).miss_share(replicas, slot_wait)
        return missed <= 0.008 and load.arrival_rate * service_s / servers <= SLO.max_utilization

    assert fits(result.replicas) and result.predicted_miss_share <= 0.008  # 1% less the 0.2 headroom
    assert not fits(result.replicas - 1)  # one replica fewer breaks one of the two


def test_fewer_replicas_each_spend_more_time_in_prefill_and_decode_slower():
    measured = CapacityEstimate(slots_per_replica=16, service_time_s=8.0, prefill_s=0.2, prefill_share=0.25)
    load = Load(arrival_rate=5.0, backlog=0, in_flight=40)  # at 4 replicas: 5 x 0.2 / 4 = the measured 25%
    assert service_time_at(load, measured, 4) == pytest.approx(8.0)
    assert service_time_at(load, measured, 2) > 8.0 > service_time_at(load, measured, 8)
    assert service_time_at(load, measured, 1) == UNSTABLE  # 100% of the time in prefill: no decoding at all


def test_backlog_and_cold_start_ask_for_more_replicas():
    calm = recommend(Load(10.0, 0, 80), CAPACITY, SLO, ready_replicas=8, cold_start_s=120, max_replicas=100)
    queued = recommend(Load(10.0, 2000, 80), CAPACITY, SLO, ready_replicas=8, cold_start_s=120, max_replicas=100)
    # Too few ready replicas: requests pile up during the cold start and must be drained too.
    short = recommend(Load(10.0, 0, 80), CAPACITY, SLO, ready_replicas=0, cold_start_s=120, max_replicas=100)
    assert queued.replicas > calm.replicas
    assert short.replicas > calm.replicas


def test_idle_recommends_zero_and_the_floor_keeps_min():
    idle = recommend(Load(0, 0, 0), CAPACITY, SLO, ready_replicas=2, cold_start_s=60, max_replicas=10)
    assert idle.replicas == 0 and "idle" in idle.reason
    assert clamp(idle.replicas, min_replicas=1, max_replicas=10) == 1
    assert clamp(idle.replicas, min_replicas=0, max_replicas=10) == 0  # scale to zero only when min is 0


def test_ceiling_caps_and_says_the_slo_is_out_of_reach():
    result = recommend(Load(1000.0, 0, 10), CAPACITY, SLO, ready_replicas=1, cold_start_s=60, max_replicas=4)
    assert result.replicas == 4
    assert "not reachable" in result.reason and "max=4" in result.reason
    assert clamp(9, 1, 4) == 4


def test_prefill_longer_than_the_slo_cannot_be_fixed_by_replicas_so_it_does_not_drive_the_fleet_to_max():
    slow_prefill = CapacityEstimate(slots_per_replica=16, service_time_s=8.0, prefill_s=2.0, prefill_tail_s=2.0)
    result = recommend(Load(1.0, 0, 5), slow_prefill, SLO, ready_replicas=1, cold_start_s=60, max_replicas=6)
    # The queueing and the backlog still size the fleet; the prompt's own prefill does not.
    assert result.replicas < 6 and "not reachable" not in result.reason


def test_stabilize_scales_up_at_once_and_down_only_after_the_delay():
    assert stabilize([(0, 2, 2), (5, 6, 6)], now=5, current=2, up_window_s=0, down_delay_s=60) == 6
    history = [(0, 6, 6), (5, 2, 2), (10, 2, 2)]
    assert stabilize(history, now=10, current=6, up_window_s=0, down_delay_s=60) == 6  # a 10 s dip is ignored
    later = [(65, 2, 2), (70, 2, 2)]
    assert stabilize(later, now=70, current=6, up_window_s=0, down_delay_s=60) == 2


def test_replicas_wanted_only_to_drain_a_queue_are_not_held_for_the_delay():
    # 12 were wanted to drain a queue, of which the arrival rate needed 4; the queue is gone 20 s later.
    history = [(0, 12, 4), (20, 4, 4)]
    assert stabilize(history, now=20, current=12, up_window_s=0, down_delay_s=300) == 4
    # While the queue is there, its replicas stay.
    assert stabilize([(0, 12, 4), (5, 10, 4)], now=5, current=12, up_window_s=0, down_delay_s=300) == 10


def test_a_backlog_adds_replicas_beyond_what_the_rate_sustains():
    capacity = CapacityEstimate(slots_per_replica=8, service_time_s=4.0, prefill_s=0.1)
    calm = recommend(Load(4.0, 0, 10), capacity, SLO, ready_replicas=4, cold_start_s=60, max_replicas=50)
    queued = recommend(Load(4.0, 400, 10), capacity, SLO, ready_replicas=4, cold_start_s=60, max_replicas=50)
    assert queued.replicas > calm.replicas and queued.sustained == calm.sustained == calm.replicas


def test_stabilize_does_not_flap_on_an_oscillating_load():
    history, current = [(0, 4, 4)], 4  # as control.tick seeds it: the running scale counts as a wish made now
    scales = []
    for second in range(5, 300, 5):
        wish = 4 if (second // 20) % 2 else 2
        history = [entry for entry in history if entry[0] >= second - 120] + [(second, wish, wish)]
        current = stabilize(history, second, current, up_window_s=0, down_delay_s=120)
        scales.append(current)
    assert set(scales) == {4}


def test_scale_up_stabilization_window_takes_the_lowest_recent_wish():
    history = [(0, 2, 2), (5, 8, 8), (10, 5, 5)]
    assert stabilize(history, now=10, current=2, up_window_s=30, down_delay_s=300) == 2
    assert stabilize([(40, 8, 8), (45, 5, 5)], now=45, current=2, up_window_s=30, down_delay_s=300) == 5
