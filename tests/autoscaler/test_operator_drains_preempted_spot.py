"""A spot node is being reclaimed, on the local control plane: the real operator's autoscaler handlers take the
replicas on it out of the Service at once (the serving label goes), count the preemption in the LLMDeployment's
status, and leave replicas elsewhere alone. The replicas are the operator's own Deployments' pods, placed by the
scheduler on spot KWOK nodes the test owns."""

from harness.llmd import condition, engine_pods, four_replicas_half_spot, llmd, ready, serving

NAME = "mix"


def pod_on(cluster, node: str) -> dict:
    return next(p for p in engine_pods(cluster, NAME, "spot") if p["spec"].get("nodeName") == node)


async def test_reclaimed_spot_node_stops_receiving_requests(cluster, start_operator, spot_pool):
    node_a, node_b = await spot_pool.add_node("spot-a"), await spot_pool.add_node("spot-b")
    # No Prometheus: the autoscaler holds spec.replicas.min, but its pod and node handlers run all the same.
    await start_operator(autoscaler=True, env={"FLEETSERVE_PROMETHEUS_URL": "", "FLEETSERVE_AUTOSCALER_INTERVAL": "1"})
    await cluster.create(four_replicas_half_spot(NAME, spot_pool.spec))  # one spot replica per spot node
    await cluster.wait_for("a ready, serving spot replica on each spot node", lambda: sorted(
        p["spec"].get("nodeName") for p in engine_pods(cluster, NAME, "spot") if ready(p) and serving(p))
        == sorted([node_a, node_b]))
    await cluster.wait_for("both on-demand replicas ready", lambda: len(
        [p for p in engine_pods(cluster, NAME, "on-demand") if ready(p)]) == 2)

    # AWS's node termination handler taints the node two minutes before the instance goes.
    await cluster.patch("v1", "Node", node_a, {"spec": {"taints": [
        spot_pool.taint, {"key": "aws-node-termination-handler/spot-itn", "value": "true", "effect": "NoSchedule"}]}})
    await cluster.wait_for("pod a out of the Service", lambda: not serving(pod_on(cluster, node_a)))
    assert serving(pod_on(cluster, node_b))

    # Kubelet's graceful node shutdown on node b marks its pod, through the pod's status as kubelet writes it.
    pod_b = pod_on(cluster, node_b)
    conditions = [*pod_b["status"]["conditions"], {"type": "DisruptionTarget", "status": "True",
                                                   "reason": "TerminationByKubelet", "message": "node shutdown"}]
    await cluster.patch("v1", "Pod", pod_b["metadata"]["name"], {"status": {"conditions": conditions}},
                        subresource="status")
    await cluster.wait_for("pod b out of the Service", lambda: not serving(pod_on(cluster, node_b)))

    body = await cluster.wait_for("two preemptions in the status", lambda: (
        b := llmd(cluster, NAME)) and (b.get("status") or {}).get("spotPreemptions", {}).get("observed") == 2 and b)
    # The operator's status refresh names the leaving pods.
    preempted = await cluster.wait_for("SpotPreempted", lambda: (
        c := condition(llmd(cluster, NAME), "SpotPreempted")).get("status") == "True" and c)
    assert pod_b["metadata"]["name"] in preempted["message"]
    assert body["status"]["spotPreemptions"]["ratePerReplicaHour"] > 0
    assert all(serving(p) for p in engine_pods(cluster, NAME, "on-demand"))  # replicas elsewhere keep serving
    told = await cluster.wait_for("an Event per reclaimed replica", lambda: len(e := cluster.events("SpotPreempted")) == 2 and e)
    assert all(e["type"] == "Warning" and e["involvedObject"]["kind"] == "LLMDeployment" for e in told)
