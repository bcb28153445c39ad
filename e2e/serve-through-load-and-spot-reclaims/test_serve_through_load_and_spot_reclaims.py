"""The whole stack in one box, as a user runs it: `helm install` the chart, `kubectl apply` an autoscaled CPU
LLMDeployment with spot allowed, send a real trace's traffic through its router with a load step up and back
down, lose a spot node twice mid-run, scale to zero, and send one more request.

Real: the control plane (scripts/local-cluster.sh), helm and kubectl, the operator (a pod under the chart's RBAC),
the router, the engines serving the built-in model, Prometheus discovering them through the apiserver as a
PodMonitor configures it, and the openai client. Stand-ins, for what cannot exist here: node agents run pods as
processes in a network namespace of the test's own (tests/harness/node_agent.py, pod_network.py), and clients
reach the router at its pod IP where kube-proxy would route the Service's ClusterIP.

FLEETSERVE_E2E_MINUTES sets the length of the load (default 8, what CI runs; README.md says how to run the
10-minute version); FLEETSERVE_E2E_REPORT names a folder for the report, the plot and the operator's log (default:
the test's tmp folder).
"""

import asyncio
import json
import os
import time
from pathlib import Path

import httpx
import pytest
import yaml

from harness.fixtures import PROCESS_NODE_TOLERATION
from harness.kube import control_plane_bin
from harness.llmd import engine_pods, ready
from harness.operator_process import RELEASE_NAMESPACE, install_chart
from harness.ports import free_port
from harness.prometheus import start_cluster_prometheus
from harness.timeline import Timeline, write_report
from harness.trace_replay import LoadRun, Phase, trace_requests

NAME = "assistant"
MINUTES = float(os.environ.get("FLEETSERVE_E2E_MINUTES", "8"))
# The load, plus the install, the scale to zero and the request at zero, each bounded on its own below.
pytestmark = pytest.mark.timeout(MINUTES * 60 + 900)
SCALE_DOWN_DELAY_S = 30
REACTION_S = 90  # metrics window (20 s) + a scrape, a tick and a model load: how soon a step up must show
SPOT_LABEL = {"cloud.google.com/gke-spot": "true"}
SPOT_TAINT = {"key": "cloud.google.com/gke-spot", "value": "true", "effect": "NoSchedule"}
RECLAIM_TAINT = {"key": "cloud.google.com/impending-node-termination", "value": "true", "effect": "NoSchedule"}
SPOT_NOTICE_S = 15  # what GKE gives a spot VM's pods
SPOT_RETURNS_AFTER_S = 45
MAX_REPLICAS = 4
ON_PROCESS_NODES = {"nodeSelector": {"fleetserve.test/process-node": "true"}, "tolerations": [PROCESS_NODE_TOLERATION]}


def phases() -> list[Phase]:
    # Low 2, high 3, low 5 tenths: the last leaves room for the autoscaler to forget the burst (five 20 s rate
    # windows) and then wait out the scale-down delay, about 150 s after the step down.
    unit = MINUTES * 60 / 10
    return [Phase(2 * unit, 0.2), Phase(3 * unit, 1.2), Phase(5 * unit, 0.2)]


def deployment() -> dict:
    return {"apiVersion": "fleetserve.io/v1alpha1", "kind": "LLMDeployment", "metadata": {"name": NAME}, "spec": {
        "model": {"source": "builtin://smollm2-135m-instruct"},
        "engine": {"maxNumSeqs": 16, "maxModelLen": 1024},
        "resources": {"cpu": "1", "memory": "2Gi"},
        "env": [{"name": "OMP_NUM_THREADS", "value": "1"}],  # two cores for everything: no thread oversubscription
        "replicas": {"min": 1, "max": MAX_REPLICAS},
        "autoscaling": {"enabled": True, "slo": {"ttftSeconds": 2.0, "itlSeconds": 0.25, "percentile": 95},
                        "scaleDownDelaySeconds": SCALE_DOWN_DELAY_S},
        "capacity": {"onDemand": {"minReplicas": 1, **ON_PROCESS_NODES},
                     "spot": {"enabled": True, "maxShare": 0.75, "nodeSelector": SPOT_LABEL,
                              "tolerations": [{"key": "cloud.google.com/gke-spot", "operator": "Equal", "value": "true",
                                               "effect": "NoSchedule"}, PROCESS_NODE_TOLERATION]}},
    }}


def report_folder(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("FLEETSERVE_E2E_REPORT", tmp_path / "report"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


async def reclaim(cluster, timeline: Timeline, agent) -> None:
    """A spot reclaim as GKE does it: the termination taint, the notice's graceful shutdown, the node gone."""
    timeline.mark(f"reclaim {agent.name.rsplit('-', 1)[-1]}")
    await cluster.patch("v1", "Node", agent.name, {"spec": {"taints": [*agent.taints, RECLAIM_TAINT]}})
    await asyncio.to_thread(agent.reclaim, SPOT_NOTICE_S)
    agent.power_off()
    await cluster.delete("v1", "Node", agent.name)


async def test_helm_install_serve_a_trace_through_spot_reclaims_and_scale_to_zero(
        admin_kubeconfig, operator_kubeconfig, cluster, pod_network, process_node, tmp_path):
    folder = report_folder(tmp_path)
    system = process_node("system", cpu="8", memory="32Gi")
    process_node("on-demand", cpu="8", memory="32Gi")
    # One spot node at a time, room for two replicas: a reclaim leaves no spot capacity until the next one comes.
    spots = [process_node("spot-0", cpu="2500m", memory="16Gi", labels=SPOT_LABEL, taints=[SPOT_TAINT])]
    podmonitor_crd = yaml.safe_load((control_plane_bin() / "crds" / "podmonitors.yaml").read_text())
    if cluster.get("apiextensions.k8s.io/v1", "CustomResourceDefinition", podmonitor_crd["metadata"]["name"]) is None:
        await cluster.create_cluster_scoped(podmonitor_crd)

    # 1. helm install: the operator runs as a pod on a process node, with the chart's ServiceAccount.
    prometheus_port = free_port()
    pod_network.bridge(prometheus_port)  # the autoscaler, in its pod, queries Prometheus on this machine
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump({
        "nodeSelector": {"kubernetes.io/hostname": system.name}, "tolerations": [PROCESS_NODE_TOLERATION],
        "verbose": True,  # every autoscaler tick with its numbers, in the report folder's operator.log
        "autoscaler": {"enabled": True, "prometheusUrl": f"http://127.0.0.1:{prometheus_port}"},
        "env": [{"name": "FLEETSERVE_AUTOSCALER_INTERVAL", "value": "2"},
                {"name": "FLEETSERVE_METRICS_WINDOW_S", "value": "20"}]}))
    install_chart(admin_kubeconfig, values_file=values)
    prometheus = None
    try:
        await cluster.wait_for("the operator pod running on the system node", lambda: any(
            p["spec"].get("nodeName") == system.name and p["status"].get("podIP") and ready(p) for p in cluster.objects("v1", "Pod", namespace=RELEASE_NAMESPACE)), timeout=120)

        # 2. kubectl apply the LLMDeployment; it becomes Ready behind its router.
        manifest = tmp_path / "assistant.yaml"
        manifest.write_text(yaml.safe_dump(deployment()))
        await cluster.kubectl("apply", "-f", str(manifest))
        waited = await cluster.kubectl("wait", "--for=condition=Ready", f"llmd/{NAME}", "--timeout=300s",
                                       check=False, timeout=320)
        assert waited.returncode == 0, f"{waited.stderr}the namespace now:\n{cluster.describe()}"
        router_pod = await cluster.wait_for("the router ready", lambda: next((p for p in cluster.objects(
            "v1", "Pod", labels=f"app.kubernetes.io/name=fleetserve-router,app.kubernetes.io/instance={NAME}")
            if ready(p)), None), timeout=120)
        router = f"http://{router_pod['status']['podIP']}:8080"
        monitors = await cluster.wait_for("the PodMonitors", lambda: len(
            m := cluster.objects("monitoring.coreos.com/v1", "PodMonitor")) >= 2 and m)
        prometheus = start_cluster_prometheus(admin_kubeconfig, tmp_path, monitors, "2s", port=prometheus_port)

        # 3-4. the trace through the router, a step up and down, and two spot reclaims mid-run.
        load_phases = phases()
        requests = trace_requests(load_phases, prompt_divisor=8, max_prompt=192, max_output=32)
        started = time.monotonic()
        timeline = Timeline(started)
        stop = asyncio.Event()
        follower = asyncio.create_task(timeline.follow(cluster, NAME, stop))
        load = LoadRun(f"{router}/v1", NAME)
        replay = asyncio.create_task(load.replay(requests, started))
        timeline.mark("load up")
        high_start, high_end = load_phases[0].seconds, load_phases[0].seconds + load_phases[1].seconds
        for at in (high_start + 0.3 * load_phases[1].seconds, high_end + 0.1 * load_phases[2].seconds):
            await asyncio.sleep(max(0.0, started + at - time.monotonic()))
            # A reclaim tests the cover only if it takes serving capacity away and the cover has room to grow: wait
            # (bounded) until a spot replica on the node is Ready and on-demand is below the fleet's max. (A replica
            # still loading when its node goes takes nothing away; and while an earlier reclaim's cover still holds
            # every replica on on-demand, there is nothing left for a new one to add.)
            await cluster.wait_for("a spot replica serving, with room for on-demand to cover it", lambda: any(
                p["spec"].get("nodeName") == spots[-1].name and ready(p) for p in engine_pods(cluster, NAME, "spot"))
                and timeline.samples and timeline.samples[-1].on_demand_desired < MAX_REPLICAS,
                timeout=load_phases[1].seconds)
            await reclaim(cluster, timeline, spots[-1])
            await asyncio.sleep(SPOT_RETURNS_AFTER_S)
            timeline.mark("spot back")
            spots.append(process_node(f"spot-{len(spots)}", cpu="2500m", memory="16Gi", labels=SPOT_LABEL,
                                      taints=[SPOT_TAINT]))
        await replay
        timeline.mark("load done")

        # 5. scale to zero, then one more request: held by the router, served once a replica is up.
        await cluster.patch("fleetserve.io/v1alpha1", "LLMDeployment", NAME,
                            {"spec": {"replicas": {"min": 0}, "capacity": {"onDemand": {"minReplicas": 0}}}})
        await cluster.wait_for("zero replicas", lambda: not engine_pods(cluster, NAME), timeout=SCALE_DOWN_DELAY_S + 180)
        timeline.mark("at zero")
        held_started = time.monotonic()
        async with httpx.AsyncClient(timeout=400) as client:
            at_zero = await client.post(f"{router}/v1/chat/completions", json={
                "model": NAME, "max_tokens": 8, "messages": [{"role": "user", "content": "Are you awake?"}]})
        held_s = time.monotonic() - held_started
        timeline.mark("served from zero")
        stop.set()
        await follower

        events = cluster.events()
        checks = judge(timeline, load, load_phases, at_zero, held_s, events)
        report = write_report(folder, timeline, load.outcomes, events, checks, {
            "minutes": MINUTES, "phases": [vars(p) for p in load_phases], "requests": len(requests),
            "scale_down_delay_s": SCALE_DOWN_DELAY_S, "reaction_s": REACTION_S, "spot_notice_s": SPOT_NOTICE_S})
        print(json.dumps({"summary": report["summary"], "checks": checks}, indent=1))
        failed = {name: result for name, result in checks.items() if not result["ok"]}
        assert not failed, json.dumps(failed, indent=1)
    finally:
        if prometheus is not None:
            prometheus.stop()
        with open(folder / "operator.log", "w") as kept:  # the operator pod's log, as kubectl logs would show it
            for log in sorted(system.workdir.glob(f"{RELEASE_NAMESPACE}_*/*.log")):
                kept.write(log.read_text())
        install_chart(admin_kubeconfig)  # the operator pod back on the fake nodes for the other tests


def judge(timeline: Timeline, load: LoadRun, load_phases: list[Phase], at_zero, held_s: float, events: list[dict]) -> dict:
    """Each promise of the scenario, with what was seen."""
    outcomes = load.outcomes
    errors = [o.error for o in outcomes if o.error]
    incomplete = [o for o in outcomes if not o.error and (o.finish_reason is None or not o.text)]
    high_start = load_phases[0].seconds
    high_end = high_start + load_phases[1].seconds
    low_end = high_end + load_phases[2].seconds
    before = timeline.serving_at(high_start)
    grew = next((s.t for s in timeline.samples if s.t >= high_start and s.on_demand_desired + s.spot_desired > before), None)
    peak = max((s.on_demand_desired + s.spot_desired for s in timeline.samples if high_start <= s.t <= high_end), default=0)
    # After the step down the fleet shrinks from its high-load size; the scale-down delay (and the metrics window)
    # come first, so the shrinking shows later than the step.
    low = min((s.on_demand_desired + s.spot_desired for s in timeline.samples if high_end <= s.t <= low_end), default=peak)
    shrank = next((s.t for s in timeline.samples if high_end <= s.t <= low_end and s.on_demand_desired + s.spot_desired == low), None)
    reclaims = [t for t, label in timeline.marks if label.startswith("reclaim")]
    covered = []
    for t in reclaims:
        floor = next((s.on_demand_desired for s in reversed(timeline.samples) if s.t < t), 1)
        window = [s for s in timeline.samples if t <= s.t <= t + SPOT_RETURNS_AFTER_S + 60]
        covered.append({"at": round(t, 1), "on_demand_before": floor,
                        "on_demand_max_after": max((s.on_demand_desired for s in window), default=0),
                        "spot_preempted_seen": any(s.conditions.get("SpotPreempted", "").startswith("True") for s in window)})
    reasons = {e.get("reason") for e in events}
    return {
        "no_request_lost": {"ok": not errors and not incomplete, "requests": len(outcomes), "errors": errors[:5],
                            "incomplete": len(incomplete)},
        "scaled_up_within_reaction_time": {"ok": grew is not None and grew - high_start <= REACTION_S,
                                           "before": before, "peak": peak,
                                           "after_s": None if grew is None else round(grew - high_start, 1)},
        "scaled_down_after_the_load_dropped": {"ok": low < peak, "peak_during_high_load": peak,
                                               "lowest_after": low, "lowest_at_s_after_the_step": None if shrank is None else round(shrank - high_end, 1),
                                               "scale_down_delay_s": SCALE_DOWN_DELAY_S},
        "reclaims_drained_and_covered": {"ok": len(covered) == 2 and all(
            c["spot_preempted_seen"] and c["on_demand_max_after"] > c["on_demand_before"] for c in covered),
            "reclaims": covered},
        "events_tell_the_story": {"ok": {"Scaled", "ReplicasApplied", "SpotPreempted"} <= reasons,
                                  "reasons": sorted(r for r in reasons if r)},
        "request_at_zero_held_and_served": {"ok": at_zero.status_code == 200 and bool(
            at_zero.json()["choices"][0]["message"]["content"]), "held_s": round(held_s, 1),
            "status": at_zero.status_code},
    }
