"""Translation between the LLMDeployment resource and the loop's plain values: spec -> settings,
status -> observed replicas, and a tick's result -> the status patch and the decision history."""

import datetime

from fleetserve.api.conditions import condition, merge_conditions
from fleetserve.api.spec import (
    AutoscalerPlan, LLMDeploymentSpec, LLMDeploymentStatus, ScalingDecision, SpotPreemptions, status_fields,
)
from fleetserve.autoscaler.control import LoopSettings, Observed, TickResult
from fleetserve.autoscaler.metrics import deployment_selector
from fleetserve.autoscaler.policy import SloTarget
from fleetserve.autoscaler.spot import PreemptionRate, SpotSettings

DECISIONS_KEPT = 5
# spec.engine.maxNumSeqs left out runs the engine with its own default (fleetserve.engine.config.EngineConfig),
# which this package may not import; a test keeps the two equal.
ENGINE_DEFAULT_MAX_NUM_SEQS = 256
PREEMPTIONS_SAVED_EVERY_S = 300


def settings_from_spec(spec: LLMDeploymentSpec) -> LoopSettings:
    slo = spec.autoscaling.slo
    return LoopSettings(
        min_replicas=spec.replicas.min,
        max_replicas=spec.replicas.max,
        slo=SloTarget(ttft_s=slo.ttft_seconds, quantile=slo.percentile / 100),
        itl_slo_s=slo.itl_seconds,
        max_num_seqs=spec.engine.max_num_seqs or ENGINE_DEFAULT_MAX_NUM_SEQS,
        scale_up_stabilization_s=spec.autoscaling.scale_up_stabilization_seconds,
        scale_down_delay_s=spec.autoscaling.scale_down_delay_seconds,
        spot=SpotSettings(
            enabled=spec.capacity.spot.enabled,
            max_share=spec.capacity.spot.max_share,
            on_demand_min=spec.capacity.on_demand.min_replicas,
        ),
    )


def metrics_selector(namespace: str, name: str, spec: LLMDeploymentSpec) -> str:
    """This deployment's engine series: its namespace and pods, and the served model name the engine labels
    every metric with (metadata.name unless overridden)."""
    return deployment_selector(namespace, name, spec.engine.served_model_name or name)


def observed_from_status(status: LLMDeploymentStatus, spot_serving: int | None = None) -> Observed:
    """Replica counts the operator maintains in status.replicas (whole tensor-parallel groups).

    On-demand replicas are up unless they wait for capacity (`pending` counts only unschedulable ones): a replica
    pulling its image or loading its model is coming, one without a node may never come. Spot replicas are ready
    only while they serve (`spot_serving`, from the pods: preemption.serving_replicas), so the fallback covers a
    reclaimed replica from the notice on, not from when its node is gone.
    """
    on_demand, spot = status.replicas.on_demand, status.replicas.spot
    return Observed(
        ready=status.replicas.ready, spot_ready=spot.ready if spot_serving is None else min(spot.ready, spot_serving),
        on_demand_up=max(on_demand.ready, on_demand.desired - on_demand.pending),
        # Scheduled but not yet ready: starting, so not short. Pending (unschedulable) and reclaimed ones are.
        spot_starting=max(0, spot.desired - spot.ready - spot.pending),
    )


def scaling_condition(result: TickResult, previous: list[dict], new_plan: bool) -> dict:
    """ScalingActive, the one condition the autoscaler owns. Its message changes with a new plan or a flip of
    its status, not with every tick's numbers, so a steady tick writes nothing."""
    reason = "MetricsAvailable" if result.scaling_active else "MetricsUnavailable"
    current = condition("ScalingActive", result.scaling_active, reason, result.reason[:1000])
    old = next((c for c in previous if c["type"] == "ScalingActive"), None)
    if old is not None and not new_plan and (old["status"], old["reason"]) == (current["status"], reason):
        current["message"] = old["message"]
    return current


def preemption_status(rate: PreemptionRate, now: str) -> SpotPreemptions:
    """status.spotPreemptions: what the over-provisioning has learned, so a restarted operator keeps it."""
    return SpotPreemptions(observed=rate.preemptions, spot_replica_hours=round(rate.spot_replica_hours, 4),
                           rate_per_replica_hour=round(rate.per_replica_hour(), 4), time=now)


def _seconds_between(earlier: str, later: str) -> float | None:
    try:
        return (datetime.datetime.fromisoformat(later) - datetime.datetime.fromisoformat(earlier)).total_seconds()
    except ValueError:
        return None


def preemptions_due(stored: SpotPreemptions | None, rate: PreemptionRate, now: str) -> bool:
    """Whether to persist the learned rate now: at once for a new preemption, else every PREEMPTIONS_SAVED_EVERY_S
    (spot replica-hours grow every tick; a restart losing a few minutes of them changes little)."""
    if stored is None or stored.observed != rate.preemptions:
        return True
    age = _seconds_between(stored.time, now)
    return age is None or age >= PREEMPTIONS_SAVED_EVERY_S


def status_patch(result: TickResult, preemptions: PreemptionRate, status: LLMDeploymentStatus, now: str) -> dict:
    """The autoscaler's status fields, computed on `status` (read just before the write).

    Only the autoscaler's own fields and its ScalingActive condition change; the operator's conditions are kept
    as `status` has them. A new plan comes with a new entry in the decision history. A tick that changes nothing
    returns what `status` already holds, so the guarded writer skips the write.
    """
    old = status.autoscaler
    old_counts = None if old is None else (old.desired_on_demand, old.desired_spot)
    new_plan = result.plan is not None and old_counts != (result.plan.on_demand, result.plan.spot)
    previous = [c.model_dump(by_alias=True) for c in status.conditions]
    conditions = merge_conditions(previous, [scaling_condition(result, previous, new_plan)], now)
    fields = LLMDeploymentStatus(conditions=conditions)
    if preemptions_due(status.spot_preemptions, preemptions, now):
        fields.spot_preemptions = preemption_status(preemptions, now)
    if not new_plan:
        return status_fields(fields)
    reason = result.reason[:1000]
    fields.autoscaler = AutoscalerPlan(desired_on_demand=result.plan.on_demand, desired_spot=result.plan.spot,
                                       reason=reason, time=now)
    previous_total = observed_from_status(status).ready if old_counts is None else sum(old_counts)
    decision = ScalingDecision(time=now, from_=previous_total, to=result.plan.total, on_demand=result.plan.on_demand,
                               spot=result.plan.spot, reason=reason)
    fields.scaling_decisions = [*status.scaling_decisions, decision][-DECISIONS_KEPT:]
    return status_fields(fields)


def recorded_decision(written: dict | None) -> ScalingDecision | None:
    """The scaling decision a status write recorded (for the Event), if it recorded one."""
    if written is None:
        return None
    recorded = LLMDeploymentStatus.model_validate(written)
    return recorded.scaling_decisions[-1] if recorded.autoscaler is not None else None
