"""The real operator (a `fleetserve operator` process) against the API emulator over HTTP."""

from pathlib import Path

import yaml

EXAMPLES = Path(__file__).parents[2] / "examples"
LLMD = ("fleetserve.io/v1alpha1", "LLMDeployment")


def example(name: str) -> dict:
    return yaml.safe_load((EXAMPLES / name).read_text())


def condition(body: dict | None, kind: str) -> dict:
    for item in ((body or {}).get("status") or {}).get("conditions", []):
        if item["type"] == kind:
            return item
    return {}


async def test_apply_creates_owned_children_and_becomes_ready(cluster, operator):
    cr = await cluster.create(example("cpu-tiny.yaml"))
    uid = cr["metadata"]["uid"]
    deployment = await cluster.wait_for("the on-demand Deployment",
                                        lambda: cluster.get("apps/v1", "Deployment", "default", "tiny-on-demand"))
    for api_version, kind, name in [("v1", "Service", "tiny"), ("policy/v1", "PodDisruptionBudget", "tiny"),
                                    ("networking.k8s.io/v1", "NetworkPolicy", "tiny")]:
        child = await cluster.wait_for(f"{kind}/{name}", lambda: cluster.get(api_version, kind, "default", name))
        assert child["metadata"]["ownerReferences"][0]["uid"] == uid
    assert deployment["metadata"]["ownerReferences"][0]["uid"] == uid
    assert not cluster.objects("apps/v1", "StatefulSet")

    status = (await cluster.wait_for("a first status", lambda: (cluster.get(*LLMD, "default", "tiny") or {}).get("status")))
    assert status["replicas"]["desired"] == 1 and status["replicas"]["ready"] == 0
    assert condition(cluster.get(*LLMD, "default", "tiny"), "Ready")["status"] == "False"

    await cluster.report_ready(deployment)
    ready = await cluster.wait_for("Ready=True", lambda: condition(cluster.get(*LLMD, "default", "tiny"), "Ready").get("status") == "True")
    assert ready
    body = cluster.get(*LLMD, "default", "tiny")
    assert body["status"]["endpoint"] == "http://tiny.default.svc.cluster.local:8000/v1"
    assert body["status"]["observedGeneration"] == body["metadata"]["generation"]
    assert body["status"]["replicas"]["summary"] == "1/1"
    assert operator.alive()


def deployment(cluster, name: str) -> dict | None:
    return cluster.get("apps/v1", "Deployment", "default", name)


async def test_a_workload_deleted_by_hand_comes_back(cluster, operator):
    await cluster.create(example("cpu-tiny.yaml"))
    first = await cluster.wait_for("the Deployment", lambda: deployment(cluster, "tiny-on-demand"))
    await cluster.delete("apps/v1", "Deployment", "default", "tiny-on-demand")
    again = await cluster.wait_for("the Deployment back", lambda: (
        d := deployment(cluster, "tiny-on-demand")) and d["metadata"]["uid"] != first["metadata"]["uid"] and d)
    assert again["spec"]["replicas"] == 1


async def test_spec_change_updates_the_workloads(cluster, operator):
    await cluster.create(example("cpu-tiny.yaml"))
    first = await cluster.wait_for("the Deployment", lambda: deployment(cluster, "tiny-on-demand"))
    assert "16" in first["spec"]["template"]["spec"]["containers"][0]["args"]

    await cluster.patch(*LLMD, "default", "tiny", {"spec": {"engine": {"maxNumSeqs": 32}, "replicas": {"min": 2}}})
    updated = await cluster.wait_for("the Deployment to change", lambda: (
        d := deployment(cluster, "tiny-on-demand")) and d["spec"]["replicas"] == 2 and d)
    args = updated["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--max-num-seqs") + 1] == "32"
    assert updated["metadata"]["generation"] == 2
    body = await cluster.wait_for("status for generation 2", lambda: (
        b := cluster.get(*LLMD, "default", "tiny"))["status"].get("observedGeneration") == 2 and b)
    assert body["status"]["replicas"]["desired"] == 2
    assert len(cluster.objects("apps/v1", "Deployment")) == 1


async def test_spot_and_on_demand_split_follows_spec_then_autoscaler(cluster, operator):
    await cluster.create(example("spot-mix.yaml"))
    on_demand = await cluster.wait_for("on-demand", lambda: deployment(cluster, "mix-on-demand"))
    spot = await cluster.wait_for("spot", lambda: deployment(cluster, "mix-spot"))
    # replicas.min=5, onDemand.minReplicas=1, spot.maxShare=0.8: 1 on-demand and 4 spot.
    assert (on_demand["spec"]["replicas"], spot["spec"]["replicas"]) == (1, 4)
    spot_pod = spot["spec"]["template"]["spec"]
    assert spot_pod["nodeSelector"]["cloud.google.com/gke-spot"] == "true"
    assert {"key": "cloud.google.com/gke-spot", "operator": "Equal", "value": "true", "effect": "NoSchedule"} in spot_pod["tolerations"]
    od_terms = on_demand["spec"]["template"]["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert od_terms["nodeSelectorTerms"][0]["matchExpressions"] == [
        {"key": "cloud.google.com/gke-spot", "operator": "NotIn", "values": ["true"]}]

    # The autoscaler writes its plan into the status; the operator re-renders with those counts.
    await cluster.wait_for("first status", lambda: (cluster.get(*LLMD, "default", "mix").get("status") or {}).get("replicas"))
    await cluster.patch(*LLMD, "default", "mix", {"status": {"autoscaler": {
        "desiredOnDemand": 2, "desiredSpot": 6, "reason": "p95 TTFT 1.8s > 1.0s", "time": "2026-01-01T00:00:00Z"}}},
        subresource="status")
    await cluster.wait_for("the plan applied", lambda: (
        deployment(cluster, "mix-on-demand")["spec"]["replicas"], deployment(cluster, "mix-spot")["spec"]["replicas"]) == (2, 6))
    status = await cluster.wait_for("status to follow the plan", lambda: (
        s := cluster.get(*LLMD, "default", "mix")["status"])["replicas"]["desired"] == 8 and s)
    assert status["replicas"]["spot"]["desired"] == 6
    assert any("on-demand=2 spot=6" in e["message"] for e in cluster.events("ReplicasApplied"))

    await cluster.report_ready(deployment(cluster, "mix-on-demand"))
    await cluster.report_ready(deployment(cluster, "mix-spot"), ready=5)
    status = await cluster.wait_for("readiness per capacity", lambda: (
        s := cluster.get(*LLMD, "default", "mix")["status"])["replicas"]["ready"] == 7 and s)
    assert (status["replicas"]["onDemand"]["ready"], status["replicas"]["spot"]["ready"]) == (2, 5)
    assert condition(cluster.get(*LLMD, "default", "mix"), "Degraded")["status"] == "True"


async def test_cross_node_tensor_parallel_group_is_ready_only_when_whole(cluster, operator):
    await cluster.create(example("tp16-multinode.yaml"))
    group = await cluster.wait_for("the group", lambda: cluster.get("apps/v1", "StatefulSet", "default", "big-on-demand-0"))
    headless = await cluster.wait_for("the group service", lambda: cluster.get("v1", "Service", "default", "big-on-demand-group"))
    assert headless["spec"]["clusterIP"] == "None"
    assert group["spec"]["replicas"] == 2 and group["spec"]["serviceName"] == "big-on-demand-group"
    env = {e["name"]: e.get("value") for e in group["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["FLEETSERVE_NNODES"] == "2" and env["FLEETSERVE_GPUS_PER_NODE"] == "8"
    assert env["FLEETSERVE_LEADER_ADDR"] == "big-on-demand-0-0.big-on-demand-group.default.svc.cluster.local"
    assert not cluster.objects("apps/v1", "Deployment")

    await cluster.report_ready(group, ready=1)
    await cluster.wait_for("status", lambda: (cluster.get(*LLMD, "default", "big").get("status") or {}).get("replicas"))
    assert cluster.get(*LLMD, "default", "big")["status"]["replicas"]["ready"] == 0  # half a group serves nothing
    await cluster.report_ready(group, ready=2)
    await cluster.wait_for("the group ready", lambda: condition(cluster.get(*LLMD, "default", "big"), "Ready").get("status") == "True")


async def test_delete_removes_every_child(cluster, operator):
    await cluster.create(example("spot-mix.yaml"))
    await cluster.wait_for("all children", lambda: cluster.get("networking.k8s.io/v1", "NetworkPolicy", "default", "mix"))
    await cluster.delete(*LLMD, "default", "mix")
    await cluster.wait_for("the LLMDeployment gone", lambda: cluster.get(*LLMD, "default", "mix") is None)
    for api_version, kind in [("apps/v1", "Deployment"), ("v1", "Service"), ("policy/v1", "PodDisruptionBudget"),
                              ("networking.k8s.io/v1", "NetworkPolicy")]:
        assert cluster.objects(api_version, kind) == [], kind
    assert operator.alive()


async def test_operator_restart_converges_without_duplicates_or_orphans(cluster, operator):
    await cluster.create(example("spot-mix.yaml"))
    await cluster.wait_for("a first child", lambda: deployment(cluster, "mix-on-demand"))
    operator.process.kill()  # mid-reconcile: some children may not exist yet
    operator.process.wait(timeout=5)
    # While it is down: spot is switched off (mix-spot becomes an orphan) and a child is deleted by hand.
    await cluster.patch(*LLMD, "default", "mix", {"spec": {"capacity": {"spot": {"enabled": False}}}})
    if cluster.get("v1", "Service", "default", "mix"):
        await cluster.delete("v1", "Service", "default", "mix")

    await operator.start()
    await cluster.wait_for("the Service back", lambda: cluster.get("v1", "Service", "default", "mix"))
    await cluster.wait_for("the spot Deployment gone", lambda: deployment(cluster, "mix-spot") is None)
    await cluster.wait_for("all replicas on-demand", lambda: deployment(cluster, "mix-on-demand")["spec"]["replicas"] == 5)
    names = sorted(o["metadata"]["name"] for kind in [("apps/v1", "Deployment"), ("v1", "Service"),
                   ("policy/v1", "PodDisruptionBudget"), ("networking.k8s.io/v1", "NetworkPolicy")]
                   for o in cluster.objects(*kind))
    assert names == ["mix", "mix", "mix", "mix-on-demand"]


async def test_invalid_and_impossible_specs_get_a_condition_and_an_event(cluster, operator):
    bad = example("cpu-tiny.yaml")
    bad["metadata"]["name"] = "bad"
    bad["spec"]["replicas"] = {"min": 3, "max": 1}  # the emulator has no CEL; the operator must still refuse
    await cluster.create(bad)
    ready = await cluster.wait_for("InvalidSpec", lambda: condition(cluster.get(*LLMD, "default", "bad"), "Ready") or None)
    assert ready["status"] == "False" and ready["reason"] == "InvalidSpec"
    assert "spec.replicas" in ready["message"]
    assert any(e["type"] == "Warning" and "spec.replicas" in e["message"] for e in cluster.events("InvalidSpec"))

    odd = example("tp16-multinode.yaml")
    odd["metadata"]["name"] = "odd"
    odd["spec"]["parallelism"]["tensor"] = 12  # 12 GPUs can't be whole 8-GPU nodes
    await cluster.create(odd)
    stuck = await cluster.wait_for("ImpossibleShape", lambda: condition(cluster.get(*LLMD, "default", "odd"), "InsufficientCapacity") or None)
    assert stuck["status"] == "True" and stuck["reason"] == "ImpossibleShape"
    assert cluster.events("ImpossibleShape")
    assert not cluster.objects("apps/v1", "StatefulSet") and not deployment(cluster, "bad-on-demand")

    # The operator kept running: fixing the spec converges.
    await cluster.patch(*LLMD, "default", "odd", {"spec": {"parallelism": {"tensor": 16}}})
    await cluster.wait_for("the fixed group", lambda: cluster.get("apps/v1", "StatefulSet", "default", "odd-on-demand-0"))
    assert operator.alive()


async def test_pending_and_preempted_pods_show_in_conditions(cluster, operator):
    await cluster.create(example("spot-mix.yaml"))
    await cluster.wait_for("spot", lambda: deployment(cluster, "mix-spot"))
    labels = {"app.kubernetes.io/name": "fleetserve-engine", "app.kubernetes.io/instance": "mix",
              "fleetserve.io/capacity": "spot", "fleetserve.io/serving": "true"}
    await cluster.create({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "mix-spot-a", "namespace": "default", "labels": labels},
                          "spec": {"containers": [{"name": "engine", "image": "x"}]}, "status": {"phase": "Pending"}})
    pending = await cluster.wait_for("InsufficientCapacity", lambda: condition(cluster.get(*LLMD, "default", "mix"), "InsufficientCapacity").get("status") == "True")
    assert pending and cluster.get(*LLMD, "default", "mix")["status"]["replicas"]["spot"]["pending"] == 1
    # The autoscaler's preemption handler takes a pod on a reclaimed node out of the Service.
    await cluster.patch("v1", "Pod", "default", "mix-spot-a", {"metadata": {"labels": {"fleetserve.io/serving": None}}})
    preempted = await cluster.wait_for("SpotPreempted", lambda: (c := condition(cluster.get(*LLMD, "default", "mix"), "SpotPreempted")).get("status") == "True" and c)
    assert "mix-spot-a" in preempted["message"]


async def test_pod_monitor_is_rendered_when_its_crd_exists(cluster, operator):
    cluster.emulator.resources["monitoring.coreos.com/v1/podmonitors"] = cluster.emulator.ResourceInfo(
        kind="PodMonitor", namespaced=True, verbs={"get", "list", "watch", "create", "patch", "delete"})
    await cluster.create({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
                          "metadata": {"name": "podmonitors.monitoring.coreos.com"}, "spec": {
                              "group": "monitoring.coreos.com", "scope": "Namespaced",
                              "names": {"kind": "PodMonitor", "plural": "podmonitors", "singular": "podmonitor"},
                              "versions": [{"name": "v1", "served": True, "storage": True,
                                            "schema": {"openAPIV3Schema": {"type": "object"}}}]}})
    await cluster.create(example("cpu-tiny.yaml"))
    monitor = await cluster.wait_for("the PodMonitor", lambda: cluster.get("monitoring.coreos.com/v1", "PodMonitor", "default", "tiny"))
    assert monitor["spec"]["podMetricsEndpoints"][0]["port"] == "http"


async def test_cross_node_group_uses_leader_worker_set_when_installed(cluster, operator):
    cluster.emulator.resources["leaderworkerset.x-k8s.io/v1/leaderworkersets"] = cluster.emulator.ResourceInfo(
        kind="LeaderWorkerSet", namespaced=True, subresources={"status"},
        verbs={"get", "list", "watch", "create", "patch", "delete"})
    await cluster.create({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
                          "metadata": {"name": "leaderworkersets.leaderworkerset.x-k8s.io"}, "spec": {
                              "group": "leaderworkerset.x-k8s.io", "scope": "Namespaced",
                              "names": {"kind": "LeaderWorkerSet", "plural": "leaderworkersets", "singular": "leaderworkerset"},
                              "versions": [{"name": "v1", "served": True, "storage": True,
                                            "schema": {"openAPIV3Schema": {"type": "object"}}}]}})
    await cluster.create(example("tp16-multinode.yaml"))
    lws = await cluster.wait_for("the LeaderWorkerSet", lambda: cluster.get("leaderworkerset.x-k8s.io/v1", "LeaderWorkerSet", "default", "big-on-demand"))
    assert lws["spec"]["leaderWorkerTemplate"]["size"] == 2 and not cluster.objects("apps/v1", "StatefulSet")
    await cluster.patch("leaderworkerset.x-k8s.io/v1", "LeaderWorkerSet", "default", "big-on-demand",
                        {"status": {"replicas": 1, "readyReplicas": 1}}, subresource="status")
    await cluster.wait_for("Ready from the LWS", lambda: condition(cluster.get(*LLMD, "default", "big"), "Ready").get("status") == "True")
