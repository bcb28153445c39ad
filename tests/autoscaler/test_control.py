"""One control tick end to end (pure): gaps hold the scale, spot falls back and returns, status and events."""

import dataclasses

import pytest

from fleetserve.api.placement import GroupShape, ReplicaSplit
from fleetserve.api.spec import LLMDeploymentStatus, parse_spec
from fleetserve.autoscaler import control, deployment_io, preemption
from fleetserve.autoscaler.control import FEEDBACK_MAX, SPOT_FALLBACK_AFTER_S, LoopMemory, LoopSettings, Observed, tick
from fleetserve.autoscaler.metrics import MetricsSnapshot, MetricsUnavailable
from fleetserve.autoscaler.policy import SloTarget
from fleetserve.autoscaler.spot import SpotSettings
from fleetserve.engine.config import EngineConfig
from fleetserve.kube import covers
from fleetserve.operator.status import replica_status

SETTINGS = LoopSettings(
    min_replicas=1, max_replicas=20, slo=SloTarget(ttft_s=1.0, quantile=0.95), itl_slo_s=0.1, max_num_seqs=32,
    scale_up_stabilization_s=0, scale_down_delay_s=60, spot=SpotSettings(enabled=True, max_share=1.0, on_demand_min=1),
)


def load(rate: float, replicas: int, waiting: float = 0.0) -> MetricsSnapshot:
    """A pool serving `rate` req/s, each request ~10 s in the engine, 16 sequences per replica filling 50% KV."""
    return MetricsSnapshot(
        replicas_reporting=replicas, arrival_rate=rate, waiting=waiting, running=16.0 * replicas, kv_cache_usage=0.5,
        prompt_tokens_rate=rate * 500, generation_tokens_rate=rate * 200, completion_rate=rate,
        ttft_mean_s=0.3, itl_mean_s=0.05, queue_time_mean_s=0.0, e2e_mean_s=10.0, ttft_quantile_s=0.5,
    )


def test_prometheus_gap_holds_the_scale_and_reports_it():
    memory = LoopMemory()
    first = tick(SETTINGS, memory, load(6.0, 4), Observed(4, 3, 1), 0, now=0)
    gap = tick(SETTINGS, memory, MetricsUnavailable("Prometheus query failed: timeout"), Observed(4, 3, 1), 0, now=5)
    assert gap.plan is None and not gap.scaling_active
    assert gap.serving == first.serving
    assert "holding" in gap.reason and "timeout" in gap.reason
    status = LLMDeploymentStatus.model_validate({"autoscaler": {"desiredOnDemand": 1, "desiredSpot": 3}})
    fields = deployment_io.status_patch(gap, memory.preemptions, status, "2026-01-01T00:00:00Z")
    assert deployment_io.recorded_decision(fields) is None and "autoscaler" not in fields
    condition = fields["conditions"][-1]
    assert (condition["type"], condition["status"], condition["reason"]) == ("ScalingActive", "False", "MetricsUnavailable")


def test_decisions_follow_a_load_step_up_and_down():
    memory = LoopMemory()
    low = tick(SETTINGS, memory, load(1.0, 2), Observed(2, 1, 1), 0, now=0)
    high = tick(SETTINGS, memory, load(12.0, 8), Observed(8, 7, 1), 0, now=5)
    assert high.serving > low.serving  # up at once
    held = tick(SETTINGS, memory, load(1.0, high.serving), Observed(high.serving, high.serving - 1, 1), 0, now=30)
    assert held.serving == high.serving  # down only after the delay
    down = high
    for now in range(35, 200, 5):
        down = tick(SETTINGS, memory, load(1.0, down.serving), Observed(down.serving, down.serving - 1, 1), 0, now=now)
    assert down.serving < high.serving


def test_replicas_for_a_queue_go_with_the_queue_not_after_the_delay():
    memory = LoopMemory()
    rate = tick(SETTINGS, memory, load(12.0, 8), Observed(8, 7, 1), 0, now=0).serving
    queued = tick(SETTINGS, memory, load(12.0, rate, waiting=3000), Observed(rate, rate - 1, 1), 0, now=5)
    assert queued.serving > rate
    drained = tick(SETTINGS, memory, load(12.0, queued.serving), Observed(queued.serving, queued.serving - 1, 1), 0,
                   now=10)
    assert drained.serving == rate  # the queue gone, its replicas go at once; the rate's stay


def test_pending_spot_falls_back_to_on_demand_within_seconds_and_moves_back():
    memory = LoopMemory()
    steady = tick(SETTINGS, memory, load(6.0, 6), Observed(6, 5, 1), 0, now=0)
    spot = steady.plan.spot
    # Spot capacity is gone: pods Pending. Immediately nothing changes; after the fallback delay on-demand covers.
    pending = Observed(ready=1, spot_ready=0, on_demand_up=1)
    at_once = tick(SETTINGS, memory, load(6.0, 1), pending, 0, now=5)
    later = tick(SETTINGS, memory, load(6.0, 1), pending, 0, now=5 + SPOT_FALLBACK_AFTER_S)
    assert at_once.plan.on_demand == steady.plan.on_demand
    assert later.plan.on_demand > steady.plan.on_demand
    assert later.plan.spot >= spot  # spot is still asked for, so its capacity coming back is noticed
    back = tick(SETTINGS, memory, load(6.0, 6), Observed(6 + later.plan.on_demand, spot, later.plan.on_demand), 0, now=30)
    assert back.plan.on_demand == steady.plan.on_demand


def test_spot_that_is_starting_gets_no_on_demand_twin_but_pending_spot_does():
    memory = LoopMemory()
    steady = tick(SETTINGS, memory, load(6.0, 6), Observed(6, 5, 1), 0, now=0)
    spot = steady.plan.spot
    # The spot replicas were placed on nodes and are loading the model: they come within a cold start.
    starting = Observed(ready=1, spot_ready=0, on_demand_up=1, spot_starting=spot)
    later = tick(SETTINGS, memory, load(6.0, 1), starting, 0, now=5 + SPOT_FALLBACK_AFTER_S)
    assert later.plan.on_demand == steady.plan.on_demand
    pending = Observed(ready=1, spot_ready=0, on_demand_up=1, spot_starting=0)
    tick(SETTINGS, memory, load(6.0, 1), pending, 0, now=30)
    covered = tick(SETTINGS, memory, load(6.0, 1), pending, 0, now=30 + SPOT_FALLBACK_AFTER_S)
    assert covered.plan.on_demand > steady.plan.on_demand


def test_an_observed_ttft_over_the_slo_raises_the_planned_load_and_a_quiet_one_lowers_it_back():
    memory = LoopMemory()
    slow = dataclasses.replace(load(6.0, 6), ttft_quantile_s=1.5, waiting=3)
    first = tick(SETTINGS, memory, slow, Observed(6, 5, 1), 0, now=0).serving
    for now in range(5, 60, 5):
        raised = tick(SETTINGS, memory, slow, Observed(6, 5, 1), 0, now=now).serving
    assert raised >= first and memory.feedback == pytest.approx(FEEDBACK_MAX)
    for now in range(60, 400, 5):
        tick(SETTINGS, memory, dataclasses.replace(load(6.0, 6), ttft_quantile_s=0.1), Observed(6, 5, 1), 0, now=now)
    assert memory.feedback == 1.0


def test_on_demand_replicas_stay_until_their_spot_replacements_serve():
    memory = LoopMemory()
    # Four on-demand replicas run; the plan wants most of them on spot, which is not up yet.
    first = tick(SETTINGS, memory, load(6.0, 4), Observed(4, 0, on_demand_up=4), 0, now=0)
    assert first.plan.on_demand == 4  # make before break
    moved = tick(SETTINGS, memory, load(6.0, 8), Observed(8, first.plan.spot, 4), 0, now=5)
    assert moved.plan.on_demand == 1


def test_a_replica_on_a_reclaimed_node_is_covered_though_its_workload_still_counts_it_ready():
    def pod(name: str, serving: bool = True, ready: bool = True, deleting: bool = False) -> dict:
        labels = {"fleetserve.io/capacity": "spot", **({"fleetserve.io/serving": "true"} if serving else {})}
        meta = {"name": name, "labels": labels, **({"deletionTimestamp": "2026-01-01T00:00:00Z"} if deleting else {})}
        return {"metadata": meta, "status": {"conditions": [{"type": "Ready", "status": str(ready)}]}}

    pods = [pod("a"), pod("b", serving=False), pod("c", ready=False), pod("d", deleting=True)]
    assert preemption.serving_replicas(pods, pods_per_replica=1) == 1
    assert preemption.serving_replicas([pod("g0-0"), pod("g0-1"), pod("g1-0")], pods_per_replica=2) == 1
    # The spot Deployment reports both replicas ready; one of them has left the Service on a reclaim notice.
    status = LLMDeploymentStatus.model_validate({"replicas": {
        "ready": 4, "onDemand": {"desired": 2, "ready": 2}, "spot": {"desired": 2, "ready": 2}}})
    assert deployment_io.observed_from_status(status).spot_ready == 2
    reclaimed = deployment_io.observed_from_status(status, spot_serving=1)
    assert (reclaimed.ready, reclaimed.spot_ready, reclaimed.on_demand_up) == (4, 1, 2)
    settings = LoopSettings(
        min_replicas=4, max_replicas=4, slo=SloTarget(ttft_s=1.0, quantile=0.95), itl_slo_s=0.1, max_num_seqs=32,
        scale_up_stabilization_s=0, scale_down_delay_s=60, spot=SpotSettings(enabled=True, max_share=0.5, on_demand_min=2))
    memory = LoopMemory()
    assert tick(settings, memory, load(1.0, 4), Observed(4, 2, 2), 0, now=0).plan.on_demand == 2
    noticed = tick(settings, memory, load(1.0, 4), reclaimed, 1, now=1)
    covered = tick(settings, memory, load(1.0, 4), reclaimed, 0, now=1 + SPOT_FALLBACK_AFTER_S)
    assert noticed.plan.on_demand == 2  # as for a Pending spot replica: covered after the fallback delay
    assert covered.plan.on_demand == 3 and "covering spot not serving" in covered.plan.reason


def test_preemptions_raise_spot_over_provisioning():
    calm, stormy = LoopMemory(), LoopMemory()
    for now in range(0, 3600, 60):
        tick(SETTINGS, calm, load(6.0, 6), Observed(6, 5, 1), 0, now=now)
        tick(SETTINGS, stormy, load(6.0, 6), Observed(6, 5, 1), 1, now=now)
    last_calm = tick(SETTINGS, calm, load(6.0, 6), Observed(6, 5, 1), 0, now=3600)
    last_stormy = tick(SETTINGS, stormy, load(6.0, 6), Observed(6, 5, 1), 0, now=3600)
    assert stormy.preemptions.preemptions == 60
    assert last_stormy.plan.spot > last_calm.plan.spot


def test_status_patch_keeps_five_decisions_and_condition_time():
    memory, status = LoopMemory(), {}
    for step, rate in enumerate([1, 4, 8, 12, 16, 20]):  # each a larger fleet, all within max
        result = tick(SETTINGS, memory, load(rate, 2), Observed(2, 1, 1), 0, now=step * 5)
        fields = deployment_io.status_patch(result, memory.preemptions, LLMDeploymentStatus.model_validate(status),
                                            f"2026-01-01T00:00:{step:02d}Z")
        assert deployment_io.recorded_decision(fields) is not None
        status = {**status, **fields}
    assert len(status["scalingDecisions"]) == 5
    assert status["scalingDecisions"][-1]["to"] == status["autoscaler"]["desiredOnDemand"] + status["autoscaler"]["desiredSpot"]
    assert status["conditions"][-1]["lastTransitionTime"] == "2026-01-01T00:00:00Z"  # no flip, time kept


def test_settings_come_from_the_llmdeployment_spec():
    spec = parse_spec({
        "model": {"source": "builtin://smollm2-135m"},
        "replicas": {"min": 0, "max": 6},
        "autoscaling": {"enabled": True, "slo": {"ttftSeconds": 2, "itlSeconds": 0.05, "percentile": 99},
                        "scaleDownDelaySeconds": 30},
        "capacity": {"onDemand": {"minReplicas": 1}, "spot": {"enabled": True, "maxShare": 0.5}},
    })
    settings = deployment_io.settings_from_spec(spec)
    assert (settings.min_replicas, settings.max_replicas, settings.scale_down_delay_s) == (0, 6, 30)
    assert settings.slo.quantile == 0.99 and settings.itl_slo_s == 0.05
    assert settings.spot == SpotSettings(True, 0.5, 1)
    assert settings.max_num_seqs == EngineConfig().max_num_seqs  # maxNumSeqs left to the engine's default
    assert deployment_io.metrics_selector("team-a", "chat", spec) == (
        'namespace="team-a",app_kubernetes_io_instance="chat",model_name="chat"')


def test_preemption_signals_from_nodes_and_pods():
    tainted = {"spec": {"taints": [{"key": "aws-node-termination-handler/spot-itn", "effect": "NoSchedule"}]}}
    assert "spot-itn" in preemption.node_preemption_signal(tainted)
    assert preemption.node_preemption_signal({"spec": {"taints": [{"key": "other"}]}}) is None
    condition = {"status": {"conditions": [{"type": "TerminationImminent", "status": "True"}]}}
    assert preemption.node_preemption_signal(condition) == "node condition TerminationImminent"
    disrupted = {"status": {"conditions": [{"type": "DisruptionTarget", "status": "True", "reason": "TerminationByKubelet"}]}}
    assert preemption.pod_preemption_signal(disrupted)
    evicted = {"status": {"conditions": [{"type": "DisruptionTarget", "status": "True", "reason": "EvictionByEvictionAPI"}]}}
    assert preemption.pod_preemption_signal(evicted) is None  # a drain is not a preemption
    assert preemption.stop_serving_patch() == {"metadata": {"labels": {"fleetserve.io/serving": None}}}


def test_scale_to_zero_after_idle_and_wake_on_request():
    settings = LoopSettings(
        min_replicas=0, max_replicas=4, slo=SloTarget(ttft_s=1.0, quantile=0.95), itl_slo_s=0.1, max_num_seqs=32,
        scale_up_stabilization_s=0, scale_down_delay_s=60, spot=SpotSettings(enabled=False, max_share=0, on_demand_min=0),
    )
    memory = LoopMemory()
    idle = MetricsSnapshot(1, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, None, None, None, None, None)
    results = [tick(settings, memory, idle, Observed(1, 0, 1), 0, now=t) for t in range(0, 90, 5)]
    assert results[0].serving == 1 and results[-1].serving == 0  # zero only after the scale-down delay
    gone = MetricsUnavailable("no engine replica is reporting")  # nothing left to scrape
    assert tick(settings, memory, gone, Observed(0, 0, 0), 0, now=95).serving == 0
    woken = tick(settings, memory, gone, Observed(0, 0, 0), 0, now=100, wake=True)
    assert woken.serving == 1 and woken.plan.total == 1 and "woken" in woken.reason


def test_a_partial_tensor_parallel_group_is_not_capacity():
    """TP=16 on 8-GPU nodes: a replica is a StatefulSet of 2 pods; with one pod ready it serves nothing."""

    def group(name: str, ready_pods: int) -> dict:
        labels = {"fleetserve.io/capacity": "on-demand"}
        return {"kind": "StatefulSet", "metadata": {"name": name, "labels": labels},
                "spec": {"replicas": 2, "template": {"metadata": {"labels": labels}}}, "status": {"readyReplicas": ready_pods}}

    shape = GroupShape(pods=2, gpus_per_pod=8)
    status = LLMDeploymentStatus(replicas=replica_status(ReplicaSplit(2, 0), [group("g0", 2), group("g1", 1)], [], shape))
    observed = deployment_io.observed_from_status(status)
    assert observed.ready == 1
    whole = tick(SETTINGS, LoopMemory(), load(4.0, 2, waiting=100), Observed(2, 0, 2), 0, now=0)
    partial = tick(SETTINGS, LoopMemory(), load(4.0, 2, waiting=100), observed, 0, now=0)
    # Less ready capacity means more requests pile up during the cold start: the plan asks for more replicas.
    assert partial.serving > whole.serving and "queued" in partial.reason


def test_on_demand_replicas_waiting_for_a_node_are_not_up_but_starting_ones_are():
    """The operator's `pending` counts only unschedulable replicas; one pulling its image or loading is coming."""
    status = LLMDeploymentStatus.model_validate({"replicas": {
        "ready": 1, "onDemand": {"desired": 4, "ready": 1, "pending": 1}, "spot": {"desired": 2, "ready": 0}}})
    observed = deployment_io.observed_from_status(status)
    assert (observed.ready, observed.spot_ready, observed.on_demand_up) == (1, 0, 3)


def test_a_steady_tick_writes_nothing():
    """Same plan, same condition status: the fields equal the stored status, so the guarded writer skips the
    write, even though the tick's numbers (the reason) and the clock moved."""
    memory = LoopMemory()
    first = tick(SETTINGS, memory, load(6.0, 4), Observed(4, 3, 1), 0, now=0)
    status = deployment_io.status_patch(first, memory.preemptions, LLMDeploymentStatus(), "2026-01-01T00:00:00Z")
    again = tick(SETTINGS, memory, load(6.5, 4), Observed(4, 3, 1), 0, now=5)
    assert again.plan == first.plan and again.reason != first.reason
    fields = deployment_io.status_patch(again, memory.preemptions, LLMDeploymentStatus.model_validate(status),
                                        "2026-01-01T00:00:05Z")
    assert covers(status, fields)
    # The learned preemption rate is saved at once for a new preemption, else every few minutes.
    later = "2026-01-01T00:%02d:00Z" % (deployment_io.PREEMPTIONS_SAVED_EVERY_S // 60)
    saved = deployment_io.status_patch(again, memory.preemptions, LLMDeploymentStatus.model_validate(status), later)
    assert saved["spotPreemptions"]["time"] == later
    preempted = tick(SETTINGS, memory, load(6.5, 4), Observed(4, 3, 1), 1, now=10)
    fields = deployment_io.status_patch(preempted, memory.preemptions, LLMDeploymentStatus.model_validate(status),
                                        "2026-01-01T00:00:10Z")
    assert fields["spotPreemptions"]["observed"] == 1


def test_scaling_active_message_follows_a_flip_of_its_status():
    memory = LoopMemory()
    active = tick(SETTINGS, memory, load(6.0, 4), Observed(4, 3, 1), 0, now=0)
    status = deployment_io.status_patch(active, memory.preemptions, LLMDeploymentStatus(), "2026-01-01T00:00:00Z")
    held = tick(SETTINGS, memory, MetricsUnavailable("Prometheus query failed: timeout"), Observed(4, 3, 1), 0, now=5)
    fields = deployment_io.status_patch(held, memory.preemptions, LLMDeploymentStatus.model_validate(status),
                                        "2026-01-01T00:00:05Z")
    condition = fields["conditions"][-1]
    assert condition["status"] == "False" and "timeout" in condition["message"]


def test_on_demand_cover_stays_while_the_spot_replacements_load_the_model():
    memory = LoopMemory()
    first = tick(SETTINGS, memory, load(6.0, 4), Observed(4, 0, on_demand_up=4), 0, now=0)
    assert first.plan.on_demand == 4
    # The spot replicas got nodes and are starting: not serving yet, so the on-demand ones stay.
    starting = tick(SETTINGS, memory, load(6.0, 4), Observed(4, 0, on_demand_up=4, spot_starting=first.plan.spot), 0, now=5)
    assert starting.plan.on_demand == 4
    serving = tick(SETTINGS, memory, load(6.0, 8), Observed(8, first.plan.spot, 4), 0, now=10)
    assert serving.plan.on_demand == 1


def test_the_ttft_feedback_is_released_when_the_prompt_tail_alone_misses_the_slo():
    memory = LoopMemory()
    slow = dataclasses.replace(load(6.0, 6), ttft_quantile_s=1.5, waiting=3)
    for now in range(0, 60, 5):
        tick(SETTINGS, memory, slow, Observed(6, 5, 1), 0, now=now)
    assert memory.feedback == pytest.approx(FEEDBACK_MAX)
    # Prompts now so long that their prefill alone takes the SLO: no replica count helps, the extra goes.
    memory.capacity = dataclasses.replace(memory.capacity, prefill_tail_s=10.0)
    memory.feedback = control._feedback(memory.feedback, slow, SETTINGS.slo, memory.capacity)
    assert memory.feedback < FEEDBACK_MAX
