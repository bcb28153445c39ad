"""The acting layer: render the desired children, apply the plan, and write the status. Handlers call these."""

import datetime
import logging

from fleetserve.operator import render, status
from fleetserve.operator.apply_plan import covers, plan_changes
from fleetserve.operator.kube import Conflict, Kube
from fleetserve.operator.placement import ImpossibleShape, ReplicaSplit, desired_split, group_shape
from fleetserve.operator.spec import API_VERSION, KIND, InvalidSpec, LLMDeploymentSpec, parse_resource

WORKLOAD_KINDS = (("apps/v1", "Deployment"), ("apps/v1", "StatefulSet"), ("leaderworkerset.x-k8s.io/v1", "LeaderWorkerSet"))
CHILD_KINDS = (("apps/v1", "Deployment"), ("apps/v1", "StatefulSet"), ("v1", "Service"),
               ("policy/v1", "PodDisruptionBudget"), ("networking.k8s.io/v1", "NetworkPolicy"))
# Optional kinds: (apiVersion, kind, the CRD whose presence turns them on).
POD_MONITOR = ("monitoring.coreos.com/v1", "PodMonitor", "podmonitors.monitoring.coreos.com")
LEADER_WORKER_SET = ("leaderworkerset.x-k8s.io/v1", "LeaderWorkerSet", "leaderworkersets.leaderworkerset.x-k8s.io")


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def cluster_features(kube: Kube) -> render.ClusterFeatures:
    def installed(crd_name: str) -> bool:
        return kube.get("apiextensions.k8s.io/v1", "CustomResourceDefinition", None, crd_name) is not None
    return render.ClusterFeatures(pod_monitor=installed(POD_MONITOR[2]), leader_worker_set=installed(LEADER_WORKER_SET[2]))


def live_children(kube: Kube, namespace: str, name: str, features: render.ClusterFeatures) -> list[dict]:
    optional = [(api_version, kind) for (api_version, kind, _), on in
                ((POD_MONITOR, features.pod_monitor), (LEADER_WORKER_SET, features.leader_worker_set)) if on]
    labels = {"app.kubernetes.io/instance": name, "app.kubernetes.io/managed-by": render.MANAGED_BY}
    found = []
    for api_version, kind in [*CHILD_KINDS, *optional]:
        # The list answer has no apiVersion/kind per item; planning keys on them.
        found += [{**item, "apiVersion": api_version, "kind": kind}
                  for item in kube.list(api_version, kind, namespace, labels)]
    return found


def engine_pods(kube: Kube, namespace: str, name: str) -> list[dict]:
    return kube.list("v1", "Pod", namespace, {"app.kubernetes.io/name": "fleetserve-engine",
                                             "app.kubernetes.io/instance": name})


STATUS_WRITE_ATTEMPTS = 5


class StatusConflict(RuntimeError):
    """The status kept changing under us; the handler's retry will try again."""


def update_status(kube: Kube, body: dict, compute) -> None:
    """Write `compute(fresh_body)` into the status, guarded by the fresh resourceVersion.

    The autoscaler writes conditions too, and a merge patch replaces a list whole: a write computed from a stale
    read would drop its condition. So read, compute and write with a precondition, and retry on conflicts.
    `compute` returns None when there is nothing to write.
    """
    meta = body["metadata"]
    for _ in range(STATUS_WRITE_ATTEMPTS):
        fresh = kube.get(API_VERSION, KIND, meta["namespace"], meta["name"])
        if fresh is None or fresh["metadata"].get("uid") != meta.get("uid"):
            return  # deleted meanwhile
        fields = compute(fresh)
        if fields is None or covers(fresh.get("status") or {}, fields):
            return  # unchanged status writes would only wake every watcher
        patch = {"metadata": {"resourceVersion": fresh["metadata"]["resourceVersion"]}, "status": fields}
        try:
            kube.merge_patch(API_VERSION, KIND, meta["namespace"], meta["name"], patch, subresource="status")
            return
        except Conflict:
            continue
    raise StatusConflict(f"status of {meta['namespace']}/{meta['name']} changed {STATUS_WRITE_ATTEMPTS} times while writing it")


class ReconcileOutcome:
    """What one reconcile did, for Events and logs."""

    def __init__(self, split: ReplicaSplit) -> None:
        self.split = split
        self.created: list[str] = []
        self.patched: list[str] = []
        self.deleted: list[str] = []

    def summary(self) -> str:
        parts = [f"{verb} {', '.join(names)}" for verb, names in
                 (("created", self.created), ("updated", self.patched), ("deleted", self.deleted)) if names]
        return "; ".join(parts)


def apply_children(kube: Kube, body: dict, spec: LLMDeploymentSpec, logger: logging.Logger) -> ReconcileOutcome:
    meta = body["metadata"]
    features = cluster_features(kube)
    split = desired_split(spec, (body.get("status") or {}).get("autoscaler"))
    desired = render.render_children(body, spec, split, features)
    live = live_children(kube, meta["namespace"], meta["name"], features)
    outcome = ReconcileOutcome(split)
    for change in plan_changes(desired, live, meta.get("uid")):
        label = f"{change.kind}/{change.name}"
        logger.info("%s %s", change.action, label)
        if change.action == "create":
            kube.create(change.body)
            outcome.created.append(label)
        elif change.action == "patch":
            kube.merge_patch(change.api_version, change.kind, change.namespace, change.name, change.body)
            outcome.patched.append(label)
        else:
            kube.delete(change.api_version, change.kind, change.namespace, change.name)
            outcome.deleted.append(label)
    return outcome


def observed_status(kube: Kube, body: dict, spec: LLMDeploymentSpec, generation: int | None) -> dict:
    """Status from the children and pods; `generation` is the spec generation just applied (None: not applying)."""
    meta = body["metadata"]
    previous = body.get("status") or {}
    shape = group_shape(spec)
    workloads = [c for c in live_children(kube, meta["namespace"], meta["name"], cluster_features(kube))
                 if (c["apiVersion"], c["kind"]) in WORKLOAD_KINDS]
    split = status.applied_split(workloads, shape)
    pod_list = engine_pods(kube, meta["namespace"], meta["name"])
    replicas = status.replica_status(split, workloads, pod_list, shape)
    conditions = status.observed_conditions(replicas, workloads, pod_list, spec.autoscaling.enabled,
                                            previous.get("conditions", []))
    fields = {
        "replicas": replicas,
        "conditions": status.merge_conditions(previous.get("conditions", []), conditions, now()),
        "endpoint": render.endpoint_url(meta["name"], meta["namespace"], spec),
        "selector": render.serving_selector(meta["name"]),
    }
    if generation is not None:
        fields["observedGeneration"] = generation
    return fields


def failed_status(body: dict, generation: int | None, reason: str, message: str) -> dict:
    previous = (body.get("status") or {}).get("conditions", [])
    return {
        "observedGeneration": generation,
        "conditions": status.merge_conditions(previous, status.failure_conditions(reason, message), now()),
    }


def reconcile(kube: Kube, body: dict, logger: logging.Logger, post_event) -> None:
    """Render, apply and report. Bad specs become conditions and Events, never exceptions that retry forever.

    `post_event(body, type, reason, message)` posts a Kubernetes Event about the LLMDeployment.
    """
    generation = body["metadata"].get("generation")
    try:
        spec = parse_resource(body)
        outcome = apply_children(kube, body, spec, logger)
    except (InvalidSpec, ImpossibleShape) as error:
        reason, message = type(error).__name__, str(error)  # `error` is unbound once the except block ends
        ready = next((c for c in (body.get("status") or {}).get("conditions", []) if c["type"] == "Ready"), {})
        if (ready.get("reason"), ready.get("message")) != (reason, message):  # one Event per problem, not per retry
            post_event(body, "Warning", reason, message)
        update_status(kube, body, lambda fresh: failed_status(fresh, generation, reason, message))
        return
    before = (body.get("status") or {}).get("replicas") or {}
    old_counts = ((before.get("onDemand") or {}).get("desired"), (before.get("spot") or {}).get("desired"))
    new_counts = (outcome.split.on_demand, outcome.split.spot)
    if old_counts != new_counts:
        plan_used = spec.autoscaling.enabled and bool((body.get("status") or {}).get("autoscaler"))
        source = "the autoscaler's plan" if plan_used else "spec.replicas.min"
        post_event(body, "Normal", "ReplicasApplied",
                   f"replicas on-demand={new_counts[0]} spot={new_counts[1]} (from {source})")
    if outcome.summary():
        post_event(body, "Normal", "Applied", outcome.summary())
    update_status(kube, body, lambda fresh: observed_status(kube, fresh, spec, generation))


def refresh_status(kube: Kube, body: dict) -> None:
    """Re-read the children and pods and rewrite the status; does nothing for specs that can't render."""
    def compute(fresh: dict) -> dict | None:
        try:
            return observed_status(kube, fresh, parse_resource(fresh), generation=None)
        except (InvalidSpec, ImpossibleShape):
            return None
    update_status(kube, body, compute)


def autoscaler_plan_pending(body: dict) -> bool:
    """True when the autoscaler asked for replica counts the operator has not applied yet."""
    status_ = body.get("status") or {}
    plan, replicas = status_.get("autoscaler"), status_.get("replicas") or {}
    if not plan or not (body.get("spec") or {}).get("autoscaling", {}).get("enabled"):
        return False
    applied = ((replicas.get("onDemand") or {}).get("desired"), (replicas.get("spot") or {}).get("desired"))
    spot_enabled = (body["spec"].get("capacity") or {}).get("spot", {}).get("enabled", False)
    wanted = (plan.get("desiredOnDemand"), plan.get("desiredSpot") if spot_enabled else 0)
    return applied != wanted
