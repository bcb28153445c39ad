"""A user runs `kubectl apply -f examples/` on a cluster with the chart installed: every example becomes Ready on
the (KWOK) GPU and CPU nodes, kubectl shows, describes and scales them, and deleting them leaves nothing behind.

Real kubectl, kube-apiserver, controller-manager and scheduler; the operator runs with exactly the chart's RBAC.
KWOK stands in for the nodes' kubelets, so "Ready" means scheduled and reported running, not an engine serving.
"""

import json

from harness.kube import REPO
from harness.llmd import LLMD, condition, llmd

EXAMPLES = REPO / "examples"
# What each example must produce: workloads, Services, and the node family its engine pods land on. Each has its
# router: the Service NAME (what clients use) selects it, NAME-engines the engines.
EXPECTED = {
    "tiny": ({"Deployment/tiny-on-demand", "Deployment/tiny-router"}, {"tiny", "tiny-engines"}, "kwok-cpu-"),
    "qwen-7b": ({"Deployment/qwen-7b-on-demand", "Deployment/qwen-7b-router"}, {"qwen-7b", "qwen-7b-engines"}, "kwok-gfd-l4-"),
    "chat": ({"Deployment/chat-on-demand", "Deployment/chat-router"}, {"chat", "chat-engines"}, "kwok-gfd-h100-"),
    "big": ({"StatefulSet/big-on-demand-0", "Deployment/big-router"}, {"big", "big-engines", "big-on-demand-group"},
            "kwok-gfd-h100-"),
    "mix": ({"Deployment/mix-on-demand", "Deployment/mix-spot", "Deployment/mix-router"}, {"mix", "mix-engines"},
            "kwok-gke-l4-"),
}
READY_TIMEOUT = 120


async def model_weights_volume(cluster) -> None:
    """tp16-multinode reads its weights from the PVC `model-weights`, which its user has filled beforehand."""
    pv = f"{cluster.namespace}-model-weights"
    await cluster.create_cluster_scoped({
        "apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": pv},
        "spec": {"capacity": {"storage": "1Ti"}, "accessModes": ["ReadOnlyMany"], "storageClassName": "",
                 "hostPath": {"path": "/srv/models"},
                 "claimRef": {"namespace": cluster.namespace, "name": "model-weights"}}})
    await cluster.create({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "model-weights"},
                          "spec": {"accessModes": ["ReadOnlyMany"], "storageClassName": "", "volumeName": pv,
                                   "resources": {"requests": {"storage": "1Ti"}}}})


async def names(cluster, kind: str) -> set[str]:
    out = (await cluster.kubectl("get", kind, "-o", "json")).stdout
    return {item["metadata"]["name"] for item in json.loads(out)["items"]}


async def test_kubectl_apply_examples_then_get_describe_scale_and_delete(cluster, operator):
    await model_weights_volume(cluster)
    applied = (await cluster.kubectl("apply", "-f", str(EXAMPLES))).stdout
    assert applied.count("llmdeployment.fleetserve.io/") == len(EXPECTED), applied

    waited = await cluster.kubectl("wait", "--for=condition=Ready", "llmd", "--all", f"--timeout={READY_TIMEOUT}s",
                                   check=False, timeout=READY_TIMEOUT + 10)
    assert waited.returncode == 0, waited.stderr + (await cluster.kubectl("get", "llmd,pods", "-o", "wide")).stdout
    table = (await cluster.kubectl("get", "llmd")).stdout
    for name in EXPECTED:
        row = next(line for line in table.splitlines() if line.startswith(name + " "))
        assert " True " in row, table
    assert "5/5" in next(line for line in table.splitlines() if line.startswith("mix "))

    for name, (workloads, services, node_prefix) in EXPECTED.items():
        found = {f"{kind}/{n}" for kind in ("Deployment", "StatefulSet") for n in await names(cluster, kind.lower() + "s")}
        assert workloads <= found and services <= await names(cluster, "services"), name
        uid = llmd(cluster, name)["metadata"]["uid"]
        for kind_name in workloads:
            kind, child = kind_name.split("/")
            assert cluster.get("apps/v1", kind, child)["metadata"]["ownerReferences"][0]["uid"] == uid
        engines = f"app.kubernetes.io/name=fleetserve-engine,app.kubernetes.io/instance={name}"
        pods = json.loads((await cluster.kubectl("get", "pods", "-l", engines, "-o", "json")).stdout)["items"]
        assert pods and all(p["spec"]["nodeName"].startswith(node_prefix) for p in pods), name

    spot_nodes = {p["spec"]["nodeName"] for p in json.loads((await cluster.kubectl(
        "get", "pods", "-l", "app.kubernetes.io/instance=mix,fleetserve.io/capacity=spot", "-o", "json")).stdout)["items"]}
    assert spot_nodes and all("-spot-" in n for n in spot_nodes)

    described = (await cluster.kubectl("describe", "llmd", "tiny")).stdout
    assert "Ready" in described and "Applied" in described and "Endpoint" in described

    # Re-applying changes nothing the operator owns.
    assert "unchanged" in (await cluster.kubectl("apply", "-f", str(EXAMPLES / "cpu-tiny.yaml"))).stdout

    await cluster.kubectl("scale", "llmd/tiny", "--replicas=2")
    await cluster.wait_for("tiny at two ready replicas", lambda: (
        llmd(cluster, "tiny").get("status") or {}).get("replicas", {}).get("ready") == 2)
    assert condition(llmd(cluster, "tiny"), "Ready")["status"] == "True"

    await cluster.kubectl("delete", "-f", str(EXAMPLES), "--wait", "--timeout=60s")
    await cluster.wait_for("every child gone", lambda: not any(
        cluster.objects(api_version, kind) for api_version, kind in (
            ("apps/v1", "Deployment"), ("apps/v1", "StatefulSet"), ("v1", "Pod"),
            ("policy/v1", "PodDisruptionBudget"), ("networking.k8s.io/v1", "NetworkPolicy"))), timeout=60)
    assert await names(cluster, "services") == set() and not cluster.objects(*LLMD)
    assert operator.alive()
