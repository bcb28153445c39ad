"""A spot node is being reclaimed: the real operator's autoscaler handlers take the replicas on it out of the
Service at once (the serving label goes), count the preemption in the LLMDeployment's status, and leave replicas
elsewhere alone."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1] / "operator"))  # the operator tests' emulator harness
from operator_harness import running_cluster, running_operator  # noqa: E402

LLMD = ("fleetserve.io/v1alpha1", "LLMDeployment")


def llmd() -> dict:
    return {
        "apiVersion": "fleetserve.io/v1alpha1", "kind": "LLMDeployment",
        "metadata": {"name": "mix", "namespace": "default"},
        "spec": {"model": {"source": "builtin://smollm2-135m-instruct"}, "replicas": {"min": 2, "max": 4},
                 "autoscaling": {"enabled": True},
                 "capacity": {"onDemand": {"minReplicas": 1}, "spot": {"enabled": True, "maxShare": 0.5}}},
    }


def pod(name: str, node: str, capacity: str = "spot") -> dict:
    labels = {"app.kubernetes.io/name": "fleetserve-engine", "app.kubernetes.io/instance": "mix",
              "fleetserve.io/capacity": capacity, "fleetserve.io/serving": "true"}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default", "labels": labels},
            "spec": {"nodeName": node, "containers": [{"name": "engine", "image": "x"}]}, "status": {"phase": "Running"}}


def serving(cluster, name: str) -> bool:
    return (cluster.get("v1", "Pod", "default", name) or {})["metadata"].get("labels", {}).get("fleetserve.io/serving") == "true"


async def test_reclaimed_spot_node_stops_receiving_requests(tmp_path):
    env = {"FLEETSERVE_PROMETHEUS_URL": "", "FLEETSERVE_AUTOSCALER_INTERVAL": "1"}
    async with running_cluster(tmp_path) as cluster, running_operator(cluster, tmp_path / "op.log", autoscaler=True, env=env):
        await cluster.create(llmd())
        for name in ("spot-node-a", "spot-node-b"):  # nodes by path: the harness's kind table has none
            await cluster.request("POST", "/api/v1/nodes", {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}})
        await cluster.create(pod("mix-spot-a", "spot-node-a"))
        await cluster.create(pod("mix-spot-b", "spot-node-b"))

        # AWS's node termination handler taints the node two minutes before the instance goes.
        await cluster.request("PATCH", "/api/v1/nodes/spot-node-a", {"spec": {"taints": [
            {"key": "aws-node-termination-handler/spot-itn", "value": "true", "effect": "NoSchedule"}]}},
            "application/merge-patch+json")
        await cluster.wait_for("pod a out of the Service", lambda: not serving(cluster, "mix-spot-a"))
        assert serving(cluster, "mix-spot-b")

        # Kubelet's graceful shutdown marks the pod itself on node b.
        await cluster.patch("v1", "Pod", "default", "mix-spot-b", {"status": {"conditions": [
            {"type": "DisruptionTarget", "status": "True", "reason": "TerminationByKubelet"}]}}, subresource="status")
        await cluster.wait_for("pod b out of the Service", lambda: not serving(cluster, "mix-spot-b"))

        counted = await cluster.wait_for("two preemptions in the status", lambda: (
            ((cluster.get(*LLMD, "default", "mix") or {}).get("status") or {}).get("spotPreemptions", {}).get("observed") == 2))
        assert counted
