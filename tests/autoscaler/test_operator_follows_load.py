"""A user's autoscaled LLMDeployment follows its load: the real `fleetserve operator` (with the autoscaler's
handlers) reads a real Prometheus scraping engine exporters, writes its plan into the status with an Event, and
the operator resizes the on-demand and spot Deployments; when the load goes, it scales back down."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1] / "operator"))  # the operator tests' emulator harness
from operator_harness import running_cluster, running_operator  # noqa: E402

LLMD = ("fleetserve.io/v1alpha1", "LLMDeployment")
NAME = "fake-llm"  # the fake exporters label their series model_name="fake-llm", as the engine labels its own


def manifest() -> dict:
    return {
        "apiVersion": "fleetserve.io/v1alpha1", "kind": "LLMDeployment",
        "metadata": {"name": NAME, "namespace": "default"},
        "spec": {
            "model": {"source": "builtin://smollm2-135m-instruct"},
            "replicas": {"min": 1, "max": 8},
            "autoscaling": {"enabled": True, "slo": {"ttftSeconds": 1, "itlSeconds": 0.1, "percentile": 95},
                            "scaleDownDelaySeconds": 5},
            "capacity": {"onDemand": {"minReplicas": 1}, "spot": {"enabled": True, "maxShare": 0.5}},
        },
    }


def plan(cluster) -> dict:
    return ((cluster.get(*LLMD, "default", NAME) or {}).get("status") or {}).get("autoscaler") or {}


def deployment_replicas(cluster, suffix: str) -> int:
    workload = cluster.get("apps/v1", "Deployment", "default", f"{NAME}-{suffix}") or {}
    return (workload.get("spec") or {}).get("replicas", 0)


async def test_autoscaled_deployment_follows_load_up_and_down(fake_exporters, prometheus_factory, tmp_path):
    exporters = fake_exporters(2)
    for exporter in exporters:
        exporter.set_load(rate=0.5, running=3, waiting=0, kv_usage=0.1)
    prometheus = prometheus_factory([e.target for e in exporters], scrape_interval="1s")
    prometheus.wait_for(f'sum(rate(vllm:e2e_request_latency_seconds_count{{model_name="{NAME}"}}[10s])) > 0')
    env = {"FLEETSERVE_PROMETHEUS_URL": prometheus.url, "FLEETSERVE_AUTOSCALER_INTERVAL": "1",
           "FLEETSERVE_METRICS_WINDOW_S": "10"}
    async with running_cluster(tmp_path) as cluster, running_operator(cluster, tmp_path / "op.log", autoscaler=True, env=env):
        await cluster.create(manifest())
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
        body = cluster.get(*LLMD, "default", NAME)
        decisions = body["status"]["scalingDecisions"]
        assert 1 <= len(decisions) <= 5 and decisions[-1]["to"] > decisions[-1]["from"]
        await cluster.wait_for("a Scaled event", lambda: cluster.events("Scaled"))
        scaling = next(c for c in body["status"]["conditions"] if c["type"] == "ScalingActive")
        assert scaling["status"] == "True"

        for exporter in exporters:
            exporter.set_load(rate=0.3, running=2, waiting=0, kv_usage=0.05)
        peak = busy["desiredOnDemand"] + busy["desiredSpot"]
        await cluster.wait_for("a smaller plan", lambda: (
            p := plan(cluster)) and p["desiredOnDemand"] + p["desiredSpot"] < peak, timeout=60)
