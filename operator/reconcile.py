"""The acting layer: render the desired children, apply the plan, and write the status. Handlers call these."""

import dataclasses
import json
import logging

from kubernetes.client.exceptions import ApiException

from fleetserve.api.conditions import merge_conditions, now_rfc3339
from fleetserve.api.labels import ENGINE_NAME, INSTANCE_LABEL, MANAGED_BY, MANAGED_BY_LABEL, NAME_LABEL
from fleetserve.api.placement import ImpossibleShape, ReplicaSplit, desired_split, group_shape
from fleetserve.api.spec import (
    API_VERSION, KIND, InvalidSpec, LLMDeploymentSpec, LLMDeploymentStatus, parse_resource, parse_status, status_fields,
)
from fleetserve.kube import Kube, update_status
from fleetserve.operator import render, status
from fleetserve.operator.apply_plan import plan_changes

WORKLOAD_KINDS = (("apps/v1", "Deployment"), ("apps/v1", "StatefulSet"), ("leaderworkerset.x-k8s.io/v1", "LeaderWorkerSet"))
CHILD_KINDS = (("apps/v1", "Deployment"), ("apps/v1", "StatefulSet"), ("v1", "Service"),
               ("policy/v1", "PodDisruptionBudget"), ("networking.k8s.io/v1", "NetworkPolicy"),
               ("v1", "ServiceAccount"), ("rbac.authorization.k8s.io/v1", "Role"),
               ("rbac.authorization.k8s.io/v1", "RoleBinding"))
# Optional kinds: (apiVersion, kind, the CRD whose presence turns them on).
POD_MONITOR = ("monitoring.coreos.com/v1", "PodMonitor", "podmonitors.monitoring.coreos.com")
LEADER_WORKER_SET = ("leaderworkerset.x-k8s.io/v1", "LeaderWorkerSet", "leaderworkersets.leaderworkerset.x-k8s.io")


def cluster_features(kube: Kube) -> render.ClusterFeatures:
    def installed(crd_name: str) -> bool:
        return kube.get("apiextensions.k8s.io/v1", "CustomResourceDefinition", None, crd_name) is not None
    return render.ClusterFeatures(pod_monitor=installed(POD_MONITOR[2]), leader_worker_set=installed(LEADER_WORKER_SET[2]))


def pinned_features(features: render.ClusterFeatures, live: list[dict]) -> render.ClusterFeatures:
    """Running tensor-parallel groups keep their workload kind: installing LeaderWorkerSet later must not replace
    a StatefulSet group (a full outage and model reload). To migrate, delete the group's workloads."""
    kinds = {child["kind"] for child in live}
    if "StatefulSet" in kinds:
        return dataclasses.replace(features, leader_worker_set=False)
    if "LeaderWorkerSet" in kinds:
        return dataclasses.replace(features, leader_worker_set=True)
    return features


def live_children(kube: Kube, namespace: str, name: str, features: render.ClusterFeatures) -> list[dict]:
    optional = [(api_version, kind) for (api_version, kind, _), on in
                ((POD_MONITOR, features.pod_monitor), (LEADER_WORKER_SET, features.leader_worker_set)) if on]
    labels = {INSTANCE_LABEL: name, MANAGED_BY_LABEL: MANAGED_BY}
    found = []
    for api_version, kind in [*CHILD_KINDS, *optional]:
        # The list answer has no apiVersion/kind per item; planning keys on them.
        found += [{**item, "apiVersion": api_version, "kind": kind}
                  for item in kube.list(api_version, kind, namespace, labels)]
    return found


def engine_pods(kube: Kube, namespace: str, name: str) -> list[dict]:
    return kube.list("v1", "Pod", namespace, {NAME_LABEL: ENGINE_NAME, INSTANCE_LABEL: name})


class NameConflict(Exception):
    """A child's name is taken by an object this LLMDeployment does not manage; it is never adopted."""


class ChildWriteRefused(Exception):
    """The apiserver refused a child write with a 4xx (invalid field, quota, admission, RBAC)."""


def refused_reason(error: ApiException) -> str:
    try:
        return json.loads(error.body).get("message") or error.reason
    except (TypeError, ValueError):
        return str(error.reason)


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


def apply_children(kube: Kube, body: dict, spec: LLMDeploymentSpec, features: render.ClusterFeatures,
                   logger: logging.Logger) -> ReconcileOutcome:
    meta = body["metadata"]
    live = live_children(kube, meta["namespace"], meta["name"], features)
    split = desired_split(spec, parse_status(body).autoscaler)
    desired = render.render_children(body, spec, split, pinned_features(features, live))
    outcome = ReconcileOutcome(split)
    for change in plan_changes(desired, live, meta.get("uid")):
        label = f"{change.kind}/{change.name}"
        logger.info("%s %s in namespace %s", change.action, label, change.namespace)
        try:
            if change.action == "create":
                kube.create(change.body)
                outcome.created.append(label)
            elif change.action == "patch":
                kube.merge_patch(change.api_version, change.kind, change.namespace, change.name, change.body)
                outcome.patched.append(label)
            else:
                kube.delete(change.api_version, change.kind, change.namespace, change.name)
                outcome.deleted.append(label)
        except ApiException as error:
            if change.action == "create" and error.status == 409:
                raise NameConflict(f"{label} already exists and is not managed by this LLMDeployment"
                                   " (it lacks the operator's labels); rename one of them") from None
            if 400 <= error.status < 500 and error.status != 409:
                raise ChildWriteRefused(f"{change.action} {label}: HTTP {error.status}: {refused_reason(error)}") from None
            raise
    return outcome


def observed_status(kube: Kube, body: dict, spec: LLMDeploymentSpec, features: render.ClusterFeatures,
                    generation: int | None) -> dict:
    """Status from the children and pods; `generation` is the spec generation just applied (None: not applying)."""
    meta = body["metadata"]
    previous = (body.get("status") or {}).get("conditions", [])
    shape = group_shape(spec)
    workloads = [c for c in live_children(kube, meta["namespace"], meta["name"], features)
                 if (c["apiVersion"], c["kind"]) in WORKLOAD_KINDS]
    split = status.applied_split(workloads, shape)
    pod_list = engine_pods(kube, meta["namespace"], meta["name"])
    replicas = status.replica_status(split, workloads, pod_list, shape)
    conditions = status.observed_conditions(replicas, workloads, pod_list, spec.autoscaling.enabled, previous)
    if generation is None and apply_failed(previous):
        conditions = []  # a refresh keeps the failed apply's conditions: only a successful apply clears them
    observed = LLMDeploymentStatus(
        replicas=replicas,
        conditions=merge_conditions(previous, conditions, now_rfc3339()),
        endpoint=render.endpoint_url(meta["name"], meta["namespace"], spec),
        selector=render.serving_selector(meta["name"]),
    )
    if generation is not None:
        observed.observed_generation = generation
    return status_fields(observed)


def failed_status(body: dict, generation: int | None, reason: str, message: str) -> dict:
    previous = (body.get("status") or {}).get("conditions", [])
    return status_fields(LLMDeploymentStatus(
        observed_generation=generation,
        conditions=merge_conditions(previous, status.failure_conditions(reason, message), now_rfc3339()),
    ))


def applied_counts(observed: LLMDeploymentStatus) -> tuple[int, int] | None:
    """(on-demand, spot) replicas the operator last applied; None before it first wrote status.replicas."""
    if "replicas" not in observed.model_fields_set:
        return None
    return observed.replicas.on_demand.desired, observed.replicas.spot.desired


APPLY_FAILURES = ("InvalidSpec", "ImpossibleShape", "NameConflict", "ApplyFailed")


def apply_failed(conditions: list[dict]) -> bool:
    return any(c["type"] == "Ready" and c.get("reason") in APPLY_FAILURES for c in conditions)


def being_deleted(body: dict) -> bool:
    """The garbage collector is removing the children: re-creating them would fight it."""
    return bool(body["metadata"].get("deletionTimestamp"))


def deleted_since(kube: Kube, body: dict) -> bool:
    """Kopf may still hand over queued events of an object deleted since (in the background: gone at once, with no
    deletionTimestamp first). Children created for it would only be removed again by the garbage collector."""
    meta = body["metadata"]
    current = kube.get(API_VERSION, KIND, meta["namespace"], meta["name"])
    return current is None or current["metadata"].get("uid") != meta.get("uid")


def reconcile(kube: Kube, body: dict, logger: logging.Logger, post_event) -> None:
    """Render, apply and report. Bad specs and refused child writes become conditions and Events.

    `post_event(body, type, reason, message)` posts a Kubernetes Event about the LLMDeployment. A refused child
    write is raised again after it is reported, so the handler retries it later (a quota may be raised).
    """
    if being_deleted(body) or deleted_since(kube, body):
        return
    generation = body["metadata"].get("generation")
    features = cluster_features(kube)
    try:
        spec = parse_resource(body)
        outcome = apply_children(kube, body, spec, features, logger)
    except (InvalidSpec, ImpossibleShape, NameConflict, ChildWriteRefused) as error:
        reason = "ApplyFailed" if isinstance(error, ChildWriteRefused) else type(error).__name__
        message = str(error)  # `error` is unbound once the except block ends
        ready = next((c for c in (body.get("status") or {}).get("conditions", []) if c["type"] == "Ready"), {})
        if (ready.get("reason"), ready.get("message")) != (reason, message):  # one Event per problem, not per retry
            post_event(body, "Warning", reason, message)
        update_status(kube, body, lambda fresh: failed_status(fresh, generation, reason, message))
        if reason in ("ApplyFailed", "NameConflict"):
            raise
        return
    before = parse_status(body)
    new_counts = (outcome.split.on_demand, outcome.split.spot)
    if applied_counts(before) != new_counts:
        plan_used = spec.autoscaling.enabled and before.autoscaler is not None
        source = "the autoscaler's plan" if plan_used else "spec.replicas.min"
        post_event(body, "Normal", "ReplicasApplied",
                   f"replicas on-demand={new_counts[0]} spot={new_counts[1]} (from {source})")
    if outcome.summary():
        post_event(body, "Normal", "Applied", outcome.summary())
    update_status(kube, body, lambda fresh: observed_status(kube, fresh, spec, features, generation))


def refresh_status(kube: Kube, body: dict) -> None:
    """Re-read the children and pods and rewrite the status; does nothing for specs that can't render."""
    if being_deleted(body):
        return
    features = cluster_features(kube)

    def compute(fresh: dict) -> dict | None:
        if being_deleted(fresh):
            return None
        try:
            return observed_status(kube, fresh, parse_resource(fresh), features, generation=None)
        except (InvalidSpec, ImpossibleShape):
            return None
    update_status(kube, body, compute)


def autoscaler_plan_pending(body: dict) -> bool:
    """True when the autoscaler asked for replica counts the operator has not applied yet (a kopf filter: never
    raises, an invalid spec has no plan to apply)."""
    observed = parse_status(body)
    if observed.autoscaler is None:
        return False
    try:
        spec = parse_resource(body)
    except InvalidSpec:
        return False
    if not spec.autoscaling.enabled:
        return False
    plan = observed.autoscaler
    wanted = (plan.desired_on_demand, plan.desired_spot if spec.capacity.spot.enabled else 0)
    return applied_counts(observed) != wanted
