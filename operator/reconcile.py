"""The acting layer: render the desired children, apply the plan, and write the status. Handlers call these."""

import datetime
import logging

from fleetserve.operator import render, status
from fleetserve.operator.apply_plan import covers, plan_changes
from fleetserve.operator.kube import Kube
from fleetserve.operator.placement import ImpossibleShape, desired_split, group_shape
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


def write_status(kube: Kube, body: dict, fields: dict) -> None:
    meta = body["metadata"]
    kube.merge_patch(API_VERSION, KIND, meta["namespace"], meta["name"], {"status": fields}, subresource="status")


class ReconcileOutcome:
    """What one reconcile did, for Events and logs."""

    def __init__(self, created: list[str], patched: list[str], deleted: list[str]) -> None:
        self.created, self.patched, self.deleted = created, patched, deleted

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
    outcome = ReconcileOutcome([], [], [])
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


def observed_status(kube: Kube, body: dict, spec: LLMDeploymentSpec) -> dict:
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
    return {
        "observedGeneration": meta.get("generation"),
        "replicas": replicas,
        "conditions": status.merge_conditions(previous.get("conditions", []), conditions, now()),
        "endpoint": render.endpoint_url(meta["name"], meta["namespace"], spec),
        "selector": render.serving_selector(meta["name"]),
    }


def failed_status(body: dict, reason: str, message: str) -> dict:
    previous = (body.get("status") or {}).get("conditions", [])
    return {
        "observedGeneration": body["metadata"].get("generation"),
        "conditions": status.merge_conditions(previous, status.failure_conditions(reason, message), now()),
    }


def reconcile(kube: Kube, body: dict, logger: logging.Logger, post_event) -> None:
    """Render, apply and report. Bad specs become conditions and Events, never exceptions that retry forever.

    `post_event(body, type, reason, message)` posts a Kubernetes Event about the LLMDeployment.
    """
    try:
        spec = parse_resource(body)
        outcome = apply_children(kube, body, spec, logger)
    except InvalidSpec as error:
        post_event(body, "Warning", "InvalidSpec", str(error))
        write_status(kube, body, failed_status(body, "InvalidSpec", str(error)))
        return
    except ImpossibleShape as error:
        post_event(body, "Warning", "ImpossibleShape", str(error))
        write_status(kube, body, failed_status(body, "ImpossibleShape", str(error)))
        return
    fields = observed_status(kube, body, spec)
    before, after = (body.get("status") or {}).get("replicas") or {}, fields["replicas"]
    old_counts = ((before.get("onDemand") or {}).get("desired"), (before.get("spot") or {}).get("desired"))
    new_counts = (after["onDemand"]["desired"], after["spot"]["desired"])
    if old_counts != new_counts:
        plan_used = spec.autoscaling.enabled and bool((body.get("status") or {}).get("autoscaler"))
        source = "the autoscaler's plan" if plan_used else "spec.replicas.min"
        post_event(body, "Normal", "ReplicasApplied",
                   f"replicas on-demand={new_counts[0]} spot={new_counts[1]} (from {source})")
    if outcome.summary():
        post_event(body, "Normal", "Applied", outcome.summary())
    write_status(kube, body, fields)


def refresh_status(kube: Kube, body: dict) -> None:
    """Re-read the children and pods and rewrite the status; does nothing for specs that can't render."""
    try:
        spec = parse_resource(body)
        fields = observed_status(kube, body, spec)
    except (InvalidSpec, ImpossibleShape):
        return
    if not covers(body.get("status") or {}, fields):  # unchanged status writes would only wake every watcher
        write_status(kube, body, fields)


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
