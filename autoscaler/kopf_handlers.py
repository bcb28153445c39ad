"""Kopf handlers that run the autoscaler inside the operator process (imported by `fleetserve operator`).

- one loop for the whole operator, ticking every LLMDeployment with autoscaling enabled: Prometheus ->
  control.tick -> status.autoscaler (+ Event), written through the same guarded status writer as the operator's,
  so neither drops the other's conditions. The loop finds the deployments in a Kopf index, which (unlike a timer
  or daemon per object) puts no finalizer on them: deleting one never waits for the operator;
- pod and node watchers that take a replica out of the Service as soon as its spot node is being reclaimed, and
  count those preemptions for the over-provisioning estimate.

Handlers only move data between Kubernetes, Prometheus and the pure modules; the decisions live in control.py.
"""

import asyncio
import collections
import copy
import datetime
import logging
import os
import threading
import time
from collections.abc import Mapping

import kopf
from kubernetes.client.exceptions import ApiException

from fleetserve.api.conditions import now_rfc3339
from fleetserve.api.labels import CAPACITY_LABEL, ENGINE_NAME, INSTANCE_LABEL, NAME_LABEL, SERVING_LABEL, SPOT
from fleetserve.api.placement import ImpossibleShape, group_shape
from fleetserve.api.routing import WAKE_ANNOTATION
from fleetserve.api.spec import (
    API_VERSION, GROUP, KIND, PLURAL, VERSION, InvalidSpec, LLMDeploymentStatus, SpotPreemptions, parse_spec,
    parse_status,
)
from fleetserve.autoscaler import deployment_io, preemption
from fleetserve.autoscaler.control import LoopMemory, tick
from fleetserve.autoscaler.metrics import DEFAULT_WINDOW_S, MetricsUnavailable, PrometheusMetrics, parse_window_s
from fleetserve.autoscaler.spot import PreemptionRate
from fleetserve.kube import shared as kube
from fleetserve.kube import update_status

log = logging.getLogger(__name__)

PROMETHEUS_URL_ENV = "FLEETSERVE_PROMETHEUS_URL"
WINDOW_ENV = "FLEETSERVE_METRICS_WINDOW_S"
TICK_INTERVAL_S = float(os.environ.get("FLEETSERVE_AUTOSCALER_INTERVAL", "5"))
# Rates and means are taken over this window: at least 4 scrapes, short enough to react. A bad value stops the
# operator at import with the reason, rather than every tick failing its queries.
METRICS_WINDOW_S = parse_window_s(os.environ.get(WINDOW_ENV, str(DEFAULT_WINDOW_S)))
COUNTED_PODS_KEPT = 10_000
PEERING = ("kopf.dev/v1", "ClusterKopfPeering")  # the operator always peers cluster-wide (operator/cli.py)
EVENT_SOURCE = "fleetserve-autoscaler"

_memories: dict[tuple[str, str], LoopMemory] = {}
_new_preemptions: collections.Counter = collections.Counter()  # (namespace, instance) -> not yet in status
_counted_pods: collections.deque = collections.deque(maxlen=COUNTED_PODS_KEPT)  # pod uids already counted
_lock = threading.Lock()  # ticks run in worker threads, the pod and node handlers in Kopf's thread pool
_metrics: PrometheusMetrics | None = None
_prometheus_url: str | None = os.environ.get(PROMETHEUS_URL_ENV)
_loop_task: asyncio.Task | None = None


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
    with _lock:
        if key not in _memories:
            # A restarted operator keeps what it learned about preemptions (persisted in status).
            learned = status.spot_preemptions or SpotPreemptions()
            _memories[key] = LoopMemory(preemptions=PreemptionRate(learned.observed, learned.spot_replica_hours))
        return _memories[key]


def event_manifest(body: dict, type_: str, reason: str, message: str, now: str) -> dict:
    """A core/v1 Event about the LLMDeployment, as kopf posts its own (kopf.event needs a Kopf handler's context,
    which the loop's threads don't have)."""
    meta = body["metadata"]
    return {
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
        "involvedObject": {"apiVersion": API_VERSION, "kind": KIND, "name": meta["name"],
                           "namespace": meta["namespace"], "uid": meta.get("uid")},
        "type": type_, "reason": reason, "message": message[:1024],
        "source": {"component": EVENT_SOURCE}, "reportingComponent": EVENT_SOURCE,
        "firstTimestamp": now, "lastTimestamp": now, "count": 1,
    }


def _post_event(body: dict, type_: str, reason: str, message: str) -> None:
    try:
        kube().create(event_manifest(body, type_, reason, message, now_rfc3339()))
    except ApiException as error:  # an Event is a courtesy: never fail the tick for it
        log.warning("could not post %s Event: %s", reason, error.reason)


def _measured(snapshot, memory) -> str:
    """What a tick saw, for --verbose logs: the numbers behind its decision."""
    if isinstance(snapshot, MetricsUnavailable):
        return "no metrics"
    capacity = memory.capacity
    ttft = "n/a" if snapshot.ttft_quantile_s is None else f"{snapshot.ttft_quantile_s:.2f}s"
    return (f"arrivals {snapshot.arrival_rate:.2f}/s, completions {snapshot.completion_rate:.2f}/s, "
            f"running {snapshot.running:.0f}, waiting {snapshot.waiting:.0f} on {snapshot.replicas_reporting} "
            f"replicas, TTFT quantile {ttft}; per replica {capacity.slots_per_replica} slots x "
            f"{capacity.service_time_s:.1f}s (prefill {capacity.prefill_s:.2f}s), feedback x{memory.feedback:.2f}")


def autoscale(body: dict) -> None:
    """One tick for one LLMDeployment, from its body as last seen."""
    meta = body["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    try:
        parsed = parse_spec(body.get("spec") or {})
        pods_per_replica = group_shape(parsed).pods
    except (InvalidSpec, ImpossibleShape):
        return  # the operator's reconcile handler reports the invalid spec in the status
    settings = deployment_io.settings_from_spec(parsed)
    status = parse_status(body)
    snapshot = _snapshot(deployment_io.metrics_selector(namespace, name, parsed), settings.slo.quantile)
    with _lock:
        new_preemptions = _new_preemptions.pop((namespace, name), 0)
    memory = _memory_for((namespace, name), status)
    wake = (meta.get("annotations") or {}).get(WAKE_ANNOTATION)
    woken, memory.last_wake = bool(wake) and wake != memory.last_wake, wake
    spot_serving = None
    if parsed.capacity.spot.enabled:
        spot_pods = kube().list("v1", "Pod", namespace, {NAME_LABEL: ENGINE_NAME, INSTANCE_LABEL: name, CAPACITY_LABEL: SPOT})
        spot_serving = preemption.serving_replicas(spot_pods, pods_per_replica)
    observed = deployment_io.observed_from_status(status, spot_serving)
    result = tick(settings, memory, snapshot, observed, new_preemptions, time.time(), wake=woken)
    if log.isEnabledFor(logging.DEBUG):
        log.debug("%s/%s tick: %s; %s", namespace, name, result.reason, _measured(snapshot, memory))
    now = now_rfc3339()
    # Computed on the status read just before the write (the queries above take seconds), never on `status`.
    written = update_status(kube(), body, lambda fresh: deployment_io.status_patch(
        result, memory.preemptions, parse_status(fresh), now))
    decision = deployment_io.recorded_decision(written)
    if decision:
        message = f"{decision.from_} -> {decision.to} replicas: {decision.reason}"
        log.info("%s/%s: %s", namespace, name, message)
        _post_event(body, "Normal", "Scaled", message)
    was_active = next((c.status for c in status.conditions if c.type == "ScalingActive"), None)
    if not result.scaling_active and was_active != "False":
        _post_event(body, "Warning", "ScalingHeld", result.reason)


def _autoscaling_enabled(spec, **_) -> bool:
    """A filter: never raises, whatever the spec holds (the operator reports invalid specs)."""
    autoscaling = spec.get("autoscaling")
    return isinstance(autoscaling, Mapping) and autoscaling.get("enabled") is True


@kopf.index(GROUP, VERSION, PLURAL, id="autoscaled", when=_autoscaling_enabled)
async def autoscaled(namespace, name, body, **_):
    """The autoscaled LLMDeployments as of their latest watch event; Kopf drops deleted and disabled ones."""
    return {(namespace, name): copy.deepcopy(dict(body))}


def paused_by_peers(peers: Mapping, priority: int, now: datetime.datetime) -> bool:
    """Kopf's peering rule (kopf/_core/engines/peering.py): a replica pauses while another live peer has a higher
    priority, or the same one. `peers` is the peering object's status: {id: {priority, lifetime, lastseen}}."""
    def alive(peer: Mapping) -> bool:
        try:
            lastseen = datetime.datetime.fromisoformat(peer["lastseen"])
        except (KeyError, TypeError, ValueError):
            return True  # as kopf: a peer without a readable lastseen counts as just seen
        return lastseen + datetime.timedelta(seconds=int(peer.get("lifetime", 60))) > now
    live = [peer.get("priority", 0) for peer in peers.values() if isinstance(peer, Mapping) and alive(peer)]
    return any(p > priority for p in live) or sum(p == priority for p in live) > 1  # ourselves once


def _active(settings: kopf.OperatorSettings) -> bool:
    """Whether this replica's Kopf handlers run now. Kopf stops its own timers while paused, but not this loop."""
    peering = settings.peering
    if peering.standalone:
        return True
    record = kube().get(*PEERING, None, peering.name)
    if record is None:
        return not peering.mandatory  # kopf too runs alone then, unless peering was asked for
    now = datetime.datetime.now(datetime.timezone.utc)
    return not paused_by_peers(record.get("status") or {}, peering.priority, now)


def _tick_logged(body: dict) -> None:
    try:
        autoscale(body)
    except Exception:  # one deployment's failure must not stop the others' ticks; the next round retries
        log.exception("autoscaler tick for %s/%s failed", body["metadata"]["namespace"], body["metadata"]["name"])


async def _run_loop(index: kopf.Index, settings: kopf.OperatorSettings) -> None:
    """Every TICK_INTERVAL_S, one tick per autoscaled deployment in a worker thread (Prometheus and API calls
    block). A deployment whose previous tick still runs (a slow Prometheus) skips a round; the others don't."""
    running: dict[tuple[str, str], asyncio.Future] = {}
    while True:
        await asyncio.sleep(TICK_INTERVAL_S)
        try:
            active = await asyncio.to_thread(_active, settings)
        except Exception as error:  # API server unreachable or refusing: hold this round, never end the loop
            log.warning("autoscaler holds this round: cannot read the peering object: %s", error)
            active = False
        with _lock:
            for key in [k for k in _memories if not active or k not in index]:
                del _memories[key]  # deleted, disabled, or another replica's now: start afresh from the status
        if not active:
            continue
        running = {key: task for key, task in running.items() if not task.done()}
        for key in index:
            if key not in running:
                body = next(iter(index[key]))
                running[key] = asyncio.ensure_future(asyncio.to_thread(_tick_logged, body))


@kopf.on.startup()
async def start_loop(autoscaled: kopf.Index, settings: kopf.OperatorSettings, **_):
    global _loop_task
    _loop_task = asyncio.create_task(_run_loop(autoscaled, settings))


@kopf.on.cleanup()
async def stop_loop(**_):
    if _loop_task is not None:
        _loop_task.cancel()
    with _lock:
        _memories.clear()


def _count_preemption(pod: dict, signal: str) -> None:
    """Counts a spot replica's reclaim once, and tells its LLMDeployment's story with an Event."""
    meta = pod["metadata"]
    instance = preemption.owner_instance(pod)
    with _lock:
        if not preemption.is_spot(pod) or instance is None or meta.get("uid") in _counted_pods:
            return
        _counted_pods.append(meta.get("uid"))
        _new_preemptions[(meta.get("namespace"), instance)] += 1
    owner = kube().get(API_VERSION, KIND, meta.get("namespace"), instance)
    if owner is not None:
        _post_event(owner, "Warning", "SpotPreempted", f"spot pod {meta['name']} stopped serving: {signal}")


@kopf.on.event("", "v1", "pods", labels={SERVING_LABEL: "true"})
def stop_serving_doomed_pod(body, meta, patch, logger, **_):
    """A pod being deleted or disrupted stops receiving new requests at once (in-flight ones may finish)."""
    signal = preemption.pod_preemption_signal(body)
    if signal is None and not meta.get("deletionTimestamp"):
        return
    patch.metadata.labels[SERVING_LABEL] = None
    if signal:
        _count_preemption(body, signal)
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
        _count_preemption(pod, signal)
        logger.info(f"pod {meta['namespace']}/{meta['name']} removed from its Service: {signal}")
