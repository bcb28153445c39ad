"""Kopf handlers: each one only picks the object and calls the reconciler."""

import logging

import kopf

from fleetserve.api.labels import ENGINE_NAME, INSTANCE_LABEL, MANAGED_BY, MANAGED_BY_LABEL, NAME_LABEL
from fleetserve.api.spec import API_VERSION, GROUP, KIND, PLURAL, VERSION
from fleetserve.kube import shared as kube
from fleetserve.operator import reconcile

LLMD = (GROUP, VERSION, PLURAL)
OWNED = {MANAGED_BY_LABEL: MANAGED_BY}
RETRY_REFUSED_SECONDS = 15  # a few API calls per retry; a freed name or a raised quota is picked up soon


def post_event(body: dict, type_: str, reason: str, message: str) -> None:
    kopf.event(body, type=type_, reason=reason, message=message)


def reconcile_or_retry(body: dict, logger: logging.Logger) -> None:
    try:
        reconcile.reconcile(kube(), body, logger, post_event)
    except (reconcile.ChildWriteRefused, reconcile.NameConflict) as error:
        # Already a condition and an Event; try again later: a quota may be raised or the name freed.
        raise kopf.TemporaryError(str(error), delay=RETRY_REFUSED_SECONDS) from None


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_) -> None:
    # Keep kopf's bookkeeping in our annotations; the status belongs to the API and is schema-checked.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=GROUP)
    settings.posting.level = logging.WARNING  # only our own Events, not kopf's handler chatter
    settings.watching.server_timeout = 300


@kopf.on.resume(*LLMD)
@kopf.on.create(*LLMD)
@kopf.on.update(*LLMD, field="spec")
def reconcile_spec(body: kopf.Body, logger: logging.Logger, **_) -> None:
    reconcile_or_retry(dict(body), logger)


@kopf.on.event(*LLMD, when=lambda body, **_: reconcile.autoscaler_plan_pending(dict(body)))
def apply_autoscaler_plan(body: kopf.Body, logger: logging.Logger, **_) -> None:
    reconcile_or_retry(dict(body), logger)


# Status follows what the cluster reports: workload readiness, pods going Pending, pods losing the serving
# label on a reclaimed spot node. Event handlers (unlike timers) need no finalizer on the LLMDeployment.
@kopf.on.event("apps", "v1", "deployments", labels=OWNED)
@kopf.on.event("apps", "v1", "statefulsets", labels=OWNED)
@kopf.on.event("leaderworkerset.x-k8s.io", "v1", "leaderworkersets", labels=OWNED)
@kopf.on.event("", "v1", "pods", labels={NAME_LABEL: ENGINE_NAME})
def child_changed(body: kopf.Body, type: str | None, logger: logging.Logger, **_) -> None:
    name = body.metadata.labels.get(INSTANCE_LABEL)
    parent = kube().get(API_VERSION, KIND, body.metadata.namespace, name) if name else None
    if parent is None:
        return
    if type == "DELETED" and body.get("kind") != "Pod":
        reconcile_or_retry(parent, logger)  # someone deleted a workload: put it back (never while the LLMD goes)
    else:
        reconcile.refresh_status(kube(), parent)
