"""Two operator replicas with kopf peering (as the chart runs them with replicaCount > 1): one acts, one waits."""

import asyncio
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).parent))
from operator_harness import running_operator  # noqa: E402

EXAMPLES = Path(__file__).parents[2] / "examples"


async def test_only_one_replica_is_active(cluster, tmp_path):
    cluster.emulator.resources["kopf.dev/v1/clusterkopfpeerings"] = cluster.emulator.ResourceInfo(
        kind="ClusterKopfPeering", namespaced=False, verbs={"get", "list", "watch", "patch"})
    await cluster.request("POST", "/apis/kopf.dev/v1/clusterkopfpeerings",
                          {"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering", "metadata": {"name": "fleetserve"}})
    async with (running_operator(cluster, tmp_path / "a.log", args=("--peering", "--priority", "200")) as high,
                running_operator(cluster, tmp_path / "b.log", args=("--peering", "--priority", "100")) as low):
        # Replicas start paused; only the one that sees no peer of higher (or equal) priority resumes.
        await cluster.wait_for("the high-priority replica to resume", lambda: "Resuming operations" in high.log())
        await cluster.create(yaml.safe_load((EXAMPLES / "cpu-tiny.yaml").read_text()))
        await cluster.wait_for("the Deployment", lambda: cluster.get("apps/v1", "Deployment", "default", "tiny-on-demand"))
        await asyncio.sleep(1)  # give a wrongly active second replica the time to act
        assert "create Deployment/tiny-on-demand" in high.log()
        assert "create Deployment" not in low.log() and "Resuming operations" not in low.log()
        assert high.alive() and low.alive()
