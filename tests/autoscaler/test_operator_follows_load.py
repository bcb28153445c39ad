"""A user's autoscaled LLMDeployment follows its load on the local control plane: the real `fleetserve operator`
(with the autoscaler's handlers) reads a real Prometheus scraping engine exporters, writes its plan into the status
with an Event, and the operator resizes the on-demand and spot Deployments, whose pods the scheduler places on
on-demand CPU nodes and on the test's spot nodes; when the load goes, it scales back down."""

from harness.llmd import condition, engine_pods, llmd, ready, workload

from fleetserve.autoscaler.metrics import deployment_selector

NAME = "fake-llm"  # the fake exporters label their series model_name="fake-llm", as the engine labels its own


def manifest(spot_pool) -> dict:
    return {
        "apiVersion": "fleetserve.io/v1alpha1", "kind": "LLMDeployment", "metadata": {"name": NAME},
        "spec": {
            "model": {"source": "builtin://smollm2-135m-instruct"},
            "resources": {"cpu": "500m", "memory": "1Gi"},
            "replicas": {"min": 1, "max": 8},
            "autoscaling": {"enabled": True, "slo": {"ttftSeconds": 1, "itlSeconds": 0.1, "percentile": 95},
                            "scaleDownDelaySeconds": 5},
            "capacity": {"onDemand": {"minReplicas": 1}, "spot": {"enabled": True, "maxShare": 0.5, **spot_pool.spec}},
        },
    }


def plan(cluster) -> dict:
    return (llmd(cluster, NAME).get("status") or {}).get("autoscaler") or {}


def deployment_replicas(cluster, suffix: str) -> int:
    return ((workload(cluster, f"{NAME}-{suffix}") or {}).get("spec") or {}).get("replicas", 0)


def ready_pods(cluster, capacity: str) -> list[dict]:
    return [p for p in engine_pods(cluster, NAME, capacity) if ready(p)]


async def test_autoscaled_deployment_follows_load_up_and_down(cluster, start_operator, spot_pool, fake_exporters,
                                                            prometheus_factory):
    exporters = fake_exporters(2)
    for exporter in exporters:
        exporter.set_load(rate=0.5, running=3, waiting=0, kv_usage=0.1)
    # The labels a PodMonitor's scrape puts on the engines' series: their namespace and LLMDeployment.
    prometheus = prometheus_factory([e.target for e in exporters], scrape_interval="1s",
                                    target_labels={"namespace": cluster.namespace, "app_kubernetes_io_instance": NAME})
    selector = deployment_selector(cluster.namespace, NAME, NAME)
    prometheus.wait_for(f"sum(rate(vllm:e2e_request_latency_seconds_count{{{selector}}}[10s])) > 0")
    spot_nodes = {await spot_pool.add_node(f"spot-{i}", cpu="4") for i in range(2)}
    await start_operator(autoscaler=True, env={"FLEETSERVE_PROMETHEUS_URL": prometheus.url,
                                               "FLEETSERVE_AUTOSCALER_INTERVAL": "1", "FLEETSERVE_METRICS_WINDOW_S": "10"})
    await cluster.create(manifest(spot_pool))
    calm = await cluster.wait_for("a first plan", lambda: plan(cluster).get("time") and plan(cluster))
    calm_total = calm["desiredOnDemand"] + calm["desiredSpot"]

    for exporter in exporters:  # a burst: 8 req/s per replica and a queue
        exporter.set_load(rate=8.0, running=40, waiting=30, kv_usage=0.6, queue_s=2.0)
    busy = await cluster.wait_for("a larger plan", lambda: (
        p := plan(cluster)) and p["desiredOnDemand"] + p["desiredSpot"] > calm_total and p)
    assert busy["desiredSpot"] >= 1 and busy["desiredOnDemand"] >= 1  # the floor stays on on-demand
    await cluster.wait_for("the operator to resize", lambda: (
        deployment_replicas(cluster, "on-demand") + deployment_replicas(cluster, "spot")
        == busy["desiredOnDemand"] + busy["desiredSpot"]))
    # The real scheduler places them: spot replicas only on the spot pool, on-demand ones never there.
    await cluster.wait_for("the spot replicas running", lambda: len(ready_pods(cluster, "spot")) == busy["desiredSpot"])
    assert {p["spec"]["nodeName"] for p in ready_pods(cluster, "spot")} <= spot_nodes
    assert all(p["spec"]["nodeName"] not in spot_nodes for p in engine_pods(cluster, NAME, "on-demand"))
    body = llmd(cluster, NAME)
    decisions = body["status"]["scalingDecisions"]
    assert 1 <= len(decisions) <= 5 and decisions[-1]["to"] > decisions[-1]["from"]
    await cluster.wait_for("a Scaled event", lambda: cluster.events("Scaled"))
    assert condition(body, "ScalingActive")["status"] == "True"

    for exporter in exporters:
        exporter.set_load(rate=0.3, running=2, waiting=0, kv_usage=0.05)
    peak = busy["desiredOnDemand"] + busy["desiredSpot"]
    await cluster.wait_for("a smaller plan", lambda: (
        p := plan(cluster)) and p["desiredOnDemand"] + p["desiredSpot"] < peak, timeout=40)
    await cluster.wait_for("the operator to scale down", lambda: (
        deployment_replicas(cluster, "on-demand") + deployment_replicas(cluster, "spot") < peak))
