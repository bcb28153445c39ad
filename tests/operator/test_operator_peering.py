"""Two operator replicas with kopf peering, as the chart runs them with replicaCount > 1: one acts, one waits.

The chart is upgraded to two replicas first, so the ServiceAccount gets the peering RBAC and the
ClusterKopfPeering object exactly as a user's `helm upgrade --set replicaCount=2` would create them.
"""

import asyncio

import pytest

from harness.llmd import example
from harness.operator_process import install_chart


@pytest.fixture
def peering_chart(admin_kubeconfig):
    yield install_chart(admin_kubeconfig, "replicaCount=2")
    install_chart(admin_kubeconfig)  # back to one replica for the other tests


async def test_only_one_replica_is_active(cluster, peering_chart, start_operator):
    high = await start_operator("high", args=("--peering", "--priority", "200"))
    low = await start_operator("low", args=("--peering", "--priority", "100"))
    # Replicas start paused; only the one that sees no peer of higher (or equal) priority resumes.
    await cluster.wait_for("the high-priority replica to resume", lambda: "Resuming operations" in high.log())
    await cluster.create(example("cpu-tiny.yaml"))
    await cluster.wait_for("the Deployment", lambda: cluster.get("apps/v1", "Deployment", "tiny-on-demand"))
    await asyncio.sleep(1)  # give a wrongly active second replica the time to act
    assert f"create Deployment/tiny-on-demand in namespace {cluster.namespace}" in high.log()
    assert "create Deployment" not in low.log() and "Resuming operations" not in low.log()
    assert high.alive() and low.alive()
