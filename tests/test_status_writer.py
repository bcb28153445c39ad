"""The operator and the autoscaler write status.conditions through one guarded writer (review finding W1).

A merge patch replaces a list whole, so a write computed from a stale read would drop the other writer's
conditions. Each writer computes on the fresh object and writes with its resourceVersion; these tests use an
in-memory API that enforces that precondition like the apiserver does.
"""

import copy

from fleetserve.api.spec import parse_status
from fleetserve.autoscaler import deployment_io
from fleetserve.autoscaler.control import TickResult
from fleetserve.autoscaler.spot import CapacityPlan, PreemptionRate
from fleetserve.kube import Conflict, update_status
from fleetserve.operator.reconcile import failed_status

T1 = "2026-01-01T00:00:05Z"


def merge(target, patch):
    """RFC 7386 JSON merge patch: objects merge, null deletes, everything else (lists too) replaces."""
    if not isinstance(patch, dict):
        return patch
    merged = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = merge(merged.get(key), value)
    return merged


class OneObjectApi:
    """One LLMDeployment behind get and merge_patch, with the apiserver's resourceVersion check.

    `between_read_and_write` runs once, after the first read: another writer getting in first.
    """

    def __init__(self, status: dict, between_read_and_write=None) -> None:
        meta = {"namespace": "ns", "name": "m", "uid": "u1", "resourceVersion": "1", "generation": 1}
        self.obj = {"apiVersion": "fleetserve.io/v1alpha1", "kind": "LLMDeployment", "metadata": meta, "status": status}
        self.between_read_and_write = between_read_and_write
        self.conflicts = 0

    def get(self, api_version, kind, namespace, name):
        fresh = copy.deepcopy(self.obj)
        if self.between_read_and_write:
            interleaved, self.between_read_and_write = self.between_read_and_write, None
            interleaved(self)
        return fresh

    def merge_patch(self, api_version, kind, namespace, name, patch, subresource=None):
        assert subresource == "status"
        if patch["metadata"]["resourceVersion"] != self.obj["metadata"]["resourceVersion"]:
            self.conflicts += 1
            raise Conflict("the object has been modified")
        self.obj["status"] = merge(self.obj["status"], patch["status"])
        self.obj["metadata"]["resourceVersion"] = str(int(self.obj["metadata"]["resourceVersion"]) + 1)
        return copy.deepcopy(self.obj)

    def conditions(self) -> dict[str, str]:
        return {c["type"]: c["reason"] for c in self.obj["status"].get("conditions", [])}


HELD = TickResult(plan=None, serving=2, scaling_active=False, reason="holding: Prometheus query failed")
SCALED = TickResult(plan=CapacityPlan(on_demand=1, spot=2, reason="load"), serving=3, scaling_active=True, reason="load")


def autoscaler_writes(api: OneObjectApi, stale_body: dict, result: TickResult) -> dict | None:
    return update_status(api, stale_body, lambda fresh: deployment_io.status_patch(
        result, PreemptionRate(), parse_status(fresh), T1))


def operator_writes(api: OneObjectApi, stale_body: dict) -> dict | None:
    return update_status(api, stale_body, lambda fresh: failed_status(fresh, 1, "InvalidSpec", "spec.x: bad"))


def test_an_autoscaler_write_from_a_stale_read_keeps_the_operators_conditions():
    api = OneObjectApi({})
    stale = copy.deepcopy(api.obj)  # the timer's copy, taken before its Prometheus queries
    operator_writes(api, api.obj)
    autoscaler_writes(api, stale, SCALED)
    assert api.conditions() == {"Ready": "InvalidSpec", "Progressing": "InvalidSpec", "Degraded": "InvalidSpec",
                                "InsufficientCapacity": "InvalidSpec", "ScalingActive": "MetricsAvailable"}
    assert api.obj["status"]["autoscaler"]["desiredSpot"] == 2


def test_an_operator_write_from_a_stale_read_keeps_the_autoscalers_condition_and_plan():
    api = OneObjectApi({})
    stale = copy.deepcopy(api.obj)
    autoscaler_writes(api, api.obj, SCALED)
    operator_writes(api, stale)
    assert api.conditions()["ScalingActive"] == "MetricsAvailable" and api.conditions()["Ready"] == "InvalidSpec"
    assert api.obj["status"]["scalingDecisions"][-1]["to"] == 3


def test_a_write_landing_between_read_and_patch_is_retried_on_the_fresh_status():
    api = OneObjectApi({}, between_read_and_write=lambda api: operator_writes(api, api.obj))
    autoscaler_writes(api, copy.deepcopy(api.obj), HELD)
    assert api.conflicts == 1
    assert api.conditions()["Ready"] == "InvalidSpec" and api.conditions()["ScalingActive"] == "MetricsUnavailable"


def test_the_autoscaler_keeps_its_condition_transition_time_while_status_holds():
    api = OneObjectApi({})
    autoscaler_writes(api, api.obj, SCALED)
    first = next(c for c in api.obj["status"]["conditions"] if c["type"] == "ScalingActive")
    update_status(api, api.obj, lambda fresh: deployment_io.status_patch(
        SCALED, PreemptionRate(), parse_status(fresh), "2026-01-01T00:01:00Z"))
    again = next(c for c in api.obj["status"]["conditions"] if c["type"] == "ScalingActive")
    assert first["lastTransitionTime"] == again["lastTransitionTime"] == T1
