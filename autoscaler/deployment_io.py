"""Translation between the LLMDeployment resource and the loop's plain values: spec -> settings,
status -> observed replicas, and a tick's result -> the status patch and the decision history."""

from fleetserve.autoscaler.control import LoopSettings, Observed, TickResult
from fleetserve.autoscaler.policy import SloTarget
from fleetserve.autoscaler.spot import SpotSettings
from fleetserve.operator.spec import LLMDeploymentSpec

DECISIONS_KEPT = 5


def settings_from_spec(spec: LLMDeploymentSpec) -> LoopSettings:
    slo = spec.autoscaling.slo
    return LoopSettings(
        min_replicas=spec.replicas.min,
        max_replicas=spec.replicas.max,
        slo=SloTarget(ttft_s=slo.ttft_seconds, quantile=slo.percentile / 100),
        itl_slo_s=slo.itl_seconds,
        max_num_seqs=spec.engine.max_num_seqs,
        scale_up_stabilization_s=spec.autoscaling.scale_up_stabilization_seconds,
        scale_down_delay_s=spec.autoscaling.scale_down_delay_seconds,
        spot=SpotSettings(
            enabled=spec.capacity.spot.enabled,
            max_share=spec.capacity.spot.max_share,
            on_demand_min=spec.capacity.on_demand.min_replicas,
        ),
    )


def metrics_selector(name: str, spec: LLMDeploymentSpec) -> str:
    """The engine labels every metric with the served model name (metadata.name unless overridden)."""
    return f'model_name="{spec.engine.served_model_name or name}"'


def observed_from_status(status: dict) -> Observed:
    """Replica counts the operator maintains in status.replicas (whole tensor-parallel groups)."""
    replicas = status.get("replicas") or {}
    spot = replicas.get("spot") or {}
    on_demand = replicas.get("onDemand") or {}
    return Observed(
        ready=replicas.get("ready", 0), spot_ready=spot.get("ready", 0),
        on_demand_up=on_demand.get("ready", 0) + on_demand.get("pending", 0),
    )


def _current_total(status: dict) -> int | None:
    plan = status.get("autoscaler")
    return None if plan is None else plan.get("desiredOnDemand", 0) + plan.get("desiredSpot", 0)


def scaling_condition(result: TickResult, previous: list[dict], now: str) -> dict:
    """status.conditions entry ScalingActive; its transition time moves only when its status flips."""
    status = "True" if result.scaling_active else "False"
    old = next((c for c in previous if c.get("type") == "ScalingActive"), None)
    since = old["lastTransitionTime"] if old and old.get("status") == status else now
    return {
        "type": "ScalingActive",
        "status": status,
        "reason": "MetricsAvailable" if result.scaling_active else "MetricsUnavailable",
        "message": result.reason[:1000],
        "lastTransitionTime": since,
    }


def status_patch(result: TickResult, status: dict, now: str) -> tuple[dict, dict | None]:
    """The status fields to patch, and the new decision (for an Event) when the plan changed."""
    conditions = [c for c in status.get("conditions") or [] if c.get("type") != "ScalingActive"]
    patch = {"conditions": conditions + [scaling_condition(result, status.get("conditions") or [], now)]}
    if result.plan is None:
        return patch, None
    old_plan = status.get("autoscaler") or {}
    changed = (old_plan.get("desiredOnDemand"), old_plan.get("desiredSpot")) != (result.plan.on_demand, result.plan.spot)
    if not changed:
        return patch, None
    patch["autoscaler"] = {
        "desiredOnDemand": result.plan.on_demand,
        "desiredSpot": result.plan.spot,
        "reason": result.reason[:1000],
        "time": now,
    }
    previous_total = _current_total(status)
    decision = {
        "time": now,
        "from": previous_total if previous_total is not None else observed_from_status(status).ready,
        "to": result.plan.total,
        "onDemand": result.plan.on_demand,
        "spot": result.plan.spot,
        "reason": result.reason[:1000],
    }
    patch["scalingDecisions"] = (list(status.get("scalingDecisions") or []) + [decision])[-DECISIONS_KEPT:]
    return patch, decision


def preemption_status(memory_rate, now: str) -> dict:
    """status.spotPreemptions: what the over-provisioning has learned, so a restarted operator keeps it."""
    return {
        "observed": memory_rate.preemptions,
        "spotReplicaHours": round(memory_rate.spot_replica_hours, 4),
        "ratePerReplicaHour": round(memory_rate.per_replica_hour(), 4),
        "time": now,
    }
