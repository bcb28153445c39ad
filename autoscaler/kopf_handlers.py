"""Kopf handlers that run the autoscaler inside the operator process (imported by `fleetserve operator`).

- a timer per LLMDeployment with autoscaling enabled: Prometheus -> control.tick -> status.autoscaler (+ Event),
  written through the same guarded status writer as the operator's, so neither drops the other's conditions;
- pod and node watchers that take a replica out of the Service as soon as its spot node is being reclaimed, and
  count those preemptions for the over-provisioning estimate.

Handlers only move data between Kubernetes, Prometheus and the pure modules; the decisions live in control.py.
"""

import collections
import logging
import os
import threading
import time

import kopf

from fleetserve.api.conditions import now_rfc3339
from fleetserve.api.labels import SERVING_LABEL
from fleetserve.api.spec import (
    GROUP, PLURAL, VERSION, InvalidSpec, LLMDeploymentStatus, SpotPreemptions, parse_spec, parse_status,
)
from fleetserve.autoscaler import deployment_io, preemption
from fleetserve.autoscaler.control import LoopMemory, tick
from fleetserve.autoscaler.metrics import MetricsUnavailable, PrometheusMetrics
from fleetserve.autoscaler.spot import PreemptionRate
from fleetserve.kube import shared as kube
from fleetserve.kube import update_status

log = logging.getLogger(__name__)

PROMETHEUS_URL_ENV = "FLEETSERVE_PROMETHEUS_URL"
WAKE_ANNOTATION = "fleetserve.io/wake"  # any new value starts a deployment that was scaled to zero
TICK_INTERVAL_S = float(os.environ.get("FLEETSERVE_AUTOSCALER_INTERVAL", "5"))
# Rates and means are taken over this window: long enough to smooth single requests, short enough to react.
METRICS_WINDOW_S = int(os.environ.get("FLEETSERVE_METRICS_WINDOW_S", "30"))
COUNTED_PODS_KEPT = 10_000

_memories: dict[tuple[str, str], LoopMemory] = {}
_new_preemptions: collections.Counter = collections.Counter()  # (namespace, instance) -> not yet in status
_counted_pods: collections.deque = collections.deque(maxlen=COUNTED_PODS_KEPT)  # pod uids already counted
_lock = threading.Lock()  # sync handlers run in Kopf's thread pool
_metrics: PrometheusMetrics | None = None
_prometheus_url: str | None = os.environ.get(PROMETHEUS_URL_ENV)


def configure(prometheus_url: str | None) -> None:
    """Called by the operator CLI for its --prometheus-url flag (the env var is the default)."""
    global _prometheus_url, _metrics
    _prometheus_url, _metrics = prometheus_url, None


def _snapshot(selector: str, quantile: float):
    global _metrics
    if not _prometheus_url:
        return MetricsUnavailable(f"no Prometheus configured: set {PROMETHEUS_URL_ENV} or --prometheus-url")
    if _metrics is None:
        _metrics = PrometheusMetrics(_prometheus_url, window_s=METRICS_WINDOW_S)
    try:
        return _metrics.snapshot(selector, quantile)
    except MetricsUnavailable as error:
        return error


def _memory_for(key: tuple[str, str], status: LLMDeploymentStatus) -> LoopMemory:
    if key not in _memories:
        # A restarted operator keeps what it learned about preemptions (persisted in status).
        learned = status.spot_preemptions or SpotPreemptions()
        _memories[key] = LoopMemory(preemptions=PreemptionRate(learned.observed, learned.spot_replica_hours))
    return _memories[key]


def _autoscaling_enabled(spec, **_) -> bool:
    return bool((spec.get("autoscaling") or {}).get("enabled"))


@kopf.timer(GROUP, VERSION, PLURAL, id="autoscaler", interval=TICK_INTERVAL_S, when=_autoscaling_enabled)
def autoscale(name, namespace, spec, body, meta, **_):
    try:
        parsed = parse_spec(dict(spec))
    except InvalidSpec:
        return  # the operator's reconcile handler reports the invalid spec in the status
    settings = deployment_io.settings_from_spec(parsed)
    body = dict(body)
    status = parse_status(body)
    snapshot = _snapshot(deployment_io.metrics_selector(name, parsed), settings.slo.quantile)
    with _lock:
        new_preemptions = _new_preemptions.pop((namespace, name), 0)
    memory = _memory_for((namespace, name), status)
    wake = (meta.get("annotations") or {}).get(WAKE_ANNOTATION)
    woken, memory.last_wake = bool(wake) and wake != memory.last_wake, wake
    observed = deployment_io.observed_from_status(status)
    result = tick(settings, memory, snapshot, observed, new_preemptions, time.time(), wake=woken)
    now = now_rfc3339()
    # Computed on the status read just before the write (the queries above take seconds), never on `status`.
    written = update_status(kube(), body, lambda fresh: deployment_io.status_patch(
        result, memory.preemptions, parse_status(fresh), now))
    decision = deployment_io.recorded_decision(written)
    # kopf.event, not kopf.info: the operator posts only warnings from its log, our decisions must always show.
    if decision:
        message = f"{decision.from_} -> {decision.to} replicas: {decision.reason}"
        log.info("%s/%s: %s", namespace, name, message)
        kopf.event(body, type="Normal", reason="Scaled", message=message)
    was_active = next((c.status for c in status.conditions if c.type == "ScalingActive"), None)
    if not result.scaling_active and was_active != "False":
        kopf.event(body, type="Warning", reason="ScalingHeld", message=result.reason)


@kopf.on.cleanup()
def _forget_all(**_):
    _memories.clear()


def _count_preemption(pod: dict) -> None:
    uid = pod["metadata"].get("uid")
    instance = preemption.owner_instance(pod)
    with _lock:
        if not preemption.is_spot(pod) or instance is None or uid in _counted_pods:
            return
        _counted_pods.append(uid)
        _new_preemptions[(pod["metadata"].get("namespace"), instance)] += 1


@kopf.on.event("", "v1", "pods", labels={SERVING_LABEL: "true"})
def stop_serving_doomed_pod(body, meta, patch, logger, **_):
    """A pod being deleted or disrupted stops receiving new requests at once (in-flight ones may finish)."""
    signal = preemption.pod_preemption_signal(body)
    if signal is None and not meta.get("deletionTimestamp"):
        return
    patch.metadata.labels[SERVING_LABEL] = None
    if signal:
        _count_preemption(body)
    logger.info(f"removed from the Service: {signal or 'pod is being deleted'}")


@kopf.on.event("", "v1", "nodes", when=lambda body, **_: preemption.node_preemption_signal(body) is not None)
def stop_serving_on_reclaimed_node(name, body, logger, **_):
    """A spot-termination taint/condition on a node takes all serving replicas there out of their Services."""
    signal = preemption.node_preemption_signal(body)
    serving = kube().list("v1", "Pod", None, {SERVING_LABEL: "true"}, field_selector=f"spec.nodeName={name}")
    for pod in serving:
        if (pod.get("spec") or {}).get("nodeName") != name:  # in case an API server ignored the field selector
            continue
        meta = pod["metadata"]
        kube().merge_patch("v1", "Pod", meta["namespace"], meta["name"], preemption.stop_serving_patch())
        _count_preemption(pod)
        logger.info(f"pod {meta['namespace']}/{meta['name']} removed from its Service: {signal}")
