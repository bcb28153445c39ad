"""Spot capacity is reclaimed and comes back, on the local control plane: the real operator with the autoscaler
(reading a real Prometheus that scrapes fake engine exporters) covers the spot replicas on a reclaimed node with
on-demand ones, keeps them while the spot replacement has no node, and moves back to spot once a new spot node
takes it. Pods are the operator's Deployments' own, placed by the scheduler on CPU nodes and on the test's spot
KWOK nodes."""

from harness.llmd import condition, engine_pods, four_replicas_half_spot, llmd, ready, serving, workload

from fleetserve.autoscaler.metrics import deployment_selector

NAME = "fake-llm"  # the fake exporters label their series model_name="fake-llm"
GKE_RECLAIM_TAINT = {"key": "cloud.google.com/impending-node-termination", "value": "true", "effect": "NoSchedule"}


def plan(cluster) -> dict:
    return (llmd(cluster, NAME).get("status") or {}).get("autoscaler") or {}


def serving_nodes(cluster, capacity: str) -> list[str]:
    return sorted(p["spec"]["nodeName"] for p in engine_pods(cluster, NAME, capacity) if ready(p) and serving(p))


def on_demand_replicas(cluster) -> int:
    return workload(cluster, f"{NAME}-on-demand")["spec"]["replicas"]


async def test_reclaimed_spot_falls_back_to_on_demand_and_returns(cluster, start_operator, spot_pool, fake_exporters,
                                                                   prometheus_factory):
    exporters = fake_exporters(2)
    for exporter in exporters:
        exporter.set_load(rate=0.5, running=3, waiting=0, kv_usage=0.1)
    prometheus = prometheus_factory([e.target for e in exporters], scrape_interval="1s",
                                    target_labels={"namespace": cluster.namespace, "app_kubernetes_io_instance": NAME})
    prometheus.wait_for(f"vllm:num_requests_running{{{deployment_selector(cluster.namespace, NAME, NAME)}}}")
    node_a, node_b = await spot_pool.add_node("spot-a"), await spot_pool.add_node("spot-b")
    # Metrics must be available: without them the autoscaler holds the counts and plans no fallback.
    await start_operator(autoscaler=True, env={"FLEETSERVE_PROMETHEUS_URL": prometheus.url,
                                               "FLEETSERVE_AUTOSCALER_INTERVAL": "1", "FLEETSERVE_METRICS_WINDOW_S": "10"})
    await cluster.create(four_replicas_half_spot(NAME, spot_pool.spec))
    await cluster.wait_for("a plan of 2 on-demand + 2 spot", lambda: (
        (p := plan(cluster)).get("desiredOnDemand"), p.get("desiredSpot")) == (2, 2))
    await cluster.wait_for("a serving spot replica on each spot node",
                           lambda: serving_nodes(cluster, "spot") == sorted([node_a, node_b]))

    # GKE announces the reclaim with a taint: the replica there leaves the Service and an on-demand one covers it.
    await cluster.patch("v1", "Node", node_a, {"spec": {"taints": [spot_pool.taint, GKE_RECLAIM_TAINT]}})
    await cluster.wait_for("SpotPreempted", lambda: condition(llmd(cluster, NAME), "SpotPreempted").get("status") == "True")
    fallback = await cluster.wait_for("an on-demand replica covering the reclaimed one", lambda: (
        p := plan(cluster)).get("desiredOnDemand") == 3 and p, timeout=20)
    assert "covering spot not serving" in fallback["reason"]
    await cluster.wait_for("three on-demand replicas serving", lambda: len(serving_nodes(cluster, "on-demand")) == 3)
    assert not {node_a, node_b} & set(serving_nodes(cluster, "on-demand"))

    # The node goes: drained (as the termination handler does), then deleted. The Deployment's replacement pod
    # finds no spot node with room, so the on-demand cover stays.
    await cluster.kubectl("drain", node_a, "--ignore-daemonsets", "--delete-emptydir-data", "--timeout=30s")
    await cluster.delete("v1", "Node", node_a)
    await cluster.wait_for("the spot replacement unschedulable", lambda: (
        llmd(cluster, NAME)["status"]["replicas"]["spot"].get("pending") == 1))
    assert plan(cluster)["desiredOnDemand"] == 3 and on_demand_replicas(cluster) == 3

    # Spot capacity comes back: the scheduler places the replacement, and the cover goes.
    node_c = await spot_pool.add_node("spot-c")
    await cluster.wait_for("the replacement serving on the new node",
                           lambda: serving_nodes(cluster, "spot") == sorted([node_b, node_c]))
    await cluster.wait_for("back to 2 on-demand replicas", lambda: (
        plan(cluster)["desiredOnDemand"] == 2 and on_demand_replicas(cluster) == 2))
    assert plan(cluster)["desiredSpot"] >= 2
