"""KWOK's fake nodes heartbeat as kubelet does, through node Leases renewed every few seconds. Without them KWOK
patched node status only every ~2 minutes, the controller-manager's grace (120 s) ran out between two patches, every
fake node went NotReady for a moment, and the pods on them were marked unready for good (KWOK never readies a pod
twice): Deployments that never became ready again."""

import datetime


def test_every_kwok_node_holds_a_fresh_lease(cluster):
    nodes = [n["metadata"]["name"] for n in cluster.objects("v1", "Node", labels="type=kwok")]
    assert nodes
    now = datetime.datetime.now(datetime.timezone.utc)
    for name in nodes:
        lease = cluster.get("coordination.k8s.io/v1", "Lease", name, namespace="kube-node-lease")
        assert lease is not None, f"node {name} has no Lease"
        renewed = datetime.datetime.fromisoformat(lease["spec"]["renewTime"].replace("Z", "+00:00"))
        assert (now - renewed).total_seconds() < lease["spec"]["leaseDurationSeconds"], (name, lease["spec"])
