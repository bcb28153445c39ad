"""The operator with the autoscaler's handlers loaded, as `helm install` runs it: both share one status."""

import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).parent))
from operator_harness import running_operator  # noqa: E402

EXAMPLES = Path(__file__).parents[2] / "examples"
LLMD = ("fleetserve.io/v1alpha1", "LLMDeployment")


def scaling_active(cluster) -> dict:
    body = cluster.get(*LLMD, "default", "mix") or {}
    return next((c for c in (body.get("status") or {}).get("conditions", []) if c["type"] == "ScalingActive"), {})


async def test_autoscaler_owns_scaling_active_and_delete_still_cleans_up(cluster, tmp_path):
    # No Prometheus is configured, so the autoscaler holds the replica counts and says why.
    options = {"autoscaler": True, "env": {"FLEETSERVE_AUTOSCALER_INTERVAL": "1", "FLEETSERVE_PROMETHEUS_URL": ""}}
    async with running_operator(cluster, tmp_path / "operator.log", **options) as operator:
        await cluster.create(yaml.safe_load((EXAMPLES / "spot-mix.yaml").read_text()))
        await cluster.wait_for("the spot Deployment", lambda: cluster.get("apps/v1", "Deployment", "default", "mix-spot"))
        held = await cluster.wait_for("the autoscaler's condition", lambda: (
            c := scaling_active(cluster)).get("reason") == "MetricsUnavailable" and c)
        assert held["status"] == "False" and "Prometheus" in held["message"]
        # A status refresh by the operator (here: a workload turning ready) keeps the autoscaler's condition.
        await cluster.report_ready(cluster.get("apps/v1", "Deployment", "default", "mix-on-demand"))
        await cluster.wait_for("on-demand ready", lambda: (
            (cluster.get(*LLMD, "default", "mix").get("status") or {}).get("replicas", {}).get("onDemand", {}).get("ready") == 1))
        assert scaling_active(cluster)["reason"] == "MetricsUnavailable"

        await cluster.delete(*LLMD, "default", "mix")  # the autoscaler's timer adds a finalizer; kopf releases it
        await cluster.wait_for("the LLMDeployment gone", lambda: cluster.get(*LLMD, "default", "mix") is None)
        await cluster.wait_for("children gone", lambda: not cluster.objects("apps/v1", "Deployment"))
        assert operator.alive()
