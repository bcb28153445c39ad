"""APIs a cluster may or may not have: prometheus-operator's PodMonitor and LeaderWorkerSet.

These tests install cluster-wide CRDs, so each removes its CRD at the end (cluster.create_cluster_scoped). The
PodMonitor CRD is prometheus-operator's own (from its Go module). The LeaderWorkerSet module is not served by
the Go module proxy here, so its CRD is a stand-in with the real group, kind and an open schema, and nothing
runs the LWS controller: the test writes the LWS status as that controller would.
"""

import yaml

from harness.kube import control_plane_bin
from harness.llmd import condition, example, llmd, workload

LWS = ("leaderworkerset.x-k8s.io/v1", "LeaderWorkerSet")


def lws_crd() -> dict:
    return {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": "leaderworkersets.leaderworkerset.x-k8s.io"},
            "spec": {"group": "leaderworkerset.x-k8s.io", "scope": "Namespaced",
                     "names": {"kind": "LeaderWorkerSet", "plural": "leaderworkersets", "singular": "leaderworkerset"},
                     "versions": [{"name": "v1", "served": True, "storage": True, "subresources": {"status": {}},
                                   "schema": {"openAPIV3Schema": {"type": "object",
                                                                  "x-kubernetes-preserve-unknown-fields": True}}}]}}


async def install_crd(cluster, crd: dict) -> None:
    await cluster.create_cluster_scoped(crd)
    await cluster.wait_for(f"CRD {crd['metadata']['name']} established", lambda: any(
        c["type"] == "Established" and c["status"] == "True" for c in
        ((cluster.get("apiextensions.k8s.io/v1", "CustomResourceDefinition", crd["metadata"]["name"]) or {})
         .get("status") or {}).get("conditions") or []))


def big(name: str = "big") -> dict:
    """The tp16 example with a model it can download instead of a PVC the test would have to make."""
    body = example("tp16-multinode.yaml")
    body["metadata"]["name"] = name
    body["spec"]["model"] = {"source": "hf://meta-llama/Llama-3.1-405B-Instruct"}
    return body


async def test_pod_monitor_follows_its_crd_with_the_users_labels(cluster, operator):
    crd = yaml.safe_load((control_plane_bin() / "crds" / "podmonitors.yaml").read_text())
    await install_crd(cluster, crd)
    body = example("cpu-tiny.yaml")
    body["spec"]["monitoring"] = {"podMonitorLabels": {"release": "kube-prometheus-stack"}}
    await cluster.create(body)
    monitor = await cluster.wait_for("the PodMonitor", lambda: cluster.get("monitoring.coreos.com/v1", "PodMonitor", "tiny"))
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert monitor["spec"]["podTargetLabels"] == ["app.kubernetes.io/instance"]
    assert monitor["metadata"]["ownerReferences"][0]["kind"] == "LLMDeployment"
    router = await cluster.wait_for("the router's PodMonitor", lambda: cluster.get(
        "monitoring.coreos.com/v1", "PodMonitor", "tiny-router"))
    assert router["metadata"]["labels"]["release"] == "kube-prometheus-stack"


async def test_installing_leader_worker_set_later_keeps_running_statefulset_groups(cluster, operator):
    await cluster.create(big())
    group = await cluster.wait_for("the StatefulSet group", lambda: workload(cluster, "big-on-demand-0", "StatefulSet"))
    await cluster.wait_for("the group ready", lambda: condition(llmd(cluster, "big"), "Ready").get("status") == "True")

    await install_crd(cluster, lws_crd())
    await operator.stop()  # a helm upgrade restarts the operator: kopf resumes every LLMDeployment
    await operator.start()
    await cluster.create(big("fresh"))  # new objects do get LeaderWorkerSets
    fresh = await cluster.wait_for("the new deployment's LWS", lambda: cluster.get(*LWS, "fresh-on-demand"))
    assert fresh["spec"]["leaderWorkerTemplate"]["size"] == 2
    await cluster.patch(*LWS, "fresh-on-demand", {"status": {"replicas": 1, "readyReplicas": 1}}, subresource="status")
    await cluster.wait_for("Ready from the LWS", lambda: condition(llmd(cluster, "fresh"), "Ready").get("status") == "True")

    still = workload(cluster, "big-on-demand-0", "StatefulSet")
    assert still["metadata"]["uid"] == group["metadata"]["uid"] and cluster.get(*LWS, "big-on-demand") is None
    assert condition(llmd(cluster, "big"), "Ready")["status"] == "True"
