"""The real kube-scheduler places engine pods on KWOK GPU nodes that each test adds for itself (a GPU product
of its own, so no other test's nodes match): too few GPUs means Pending and InsufficientCapacity; a
tensor-parallel group lands whole, in one zone, and serves only once whole."""

from harness.llmd import LLMD, condition, engine_pods, llmd

GPU_TAINT = [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}]


def gpu_llmd(name: str, product: str, tensor: int, replicas: int) -> dict:
    return {"apiVersion": "fleetserve.io/v1alpha1", "kind": "LLMDeployment", "metadata": {"name": name},
            "spec": {"model": {"source": "hf://Qwen/Qwen2.5-72B-Instruct"},
                     "resources": {"gpu": {"type": product}, "cpu": "8", "memory": "64Gi"},
                     "parallelism": {"tensor": tensor}, "replicas": {"min": replicas, "max": replicas},
                     "capacity": {"gpusPerNode": 8}}}


async def add_gpu_node(cluster, name: str, product: str, zone: str, gpus: int = 8) -> None:
    await cluster.add_node(f"{cluster.namespace}-{name}", gpus=gpus, taints=GPU_TAINT, labels={
        "nvidia.com/gpu.product": product, "topology.kubernetes.io/zone": zone})


def status_of(cluster, name: str) -> dict:
    return llmd(cluster, name).get("status") or {}


async def test_too_few_gpus_is_pending_then_insufficient_capacity_until_a_node_comes(cluster, operator):
    product = f"TEST-GPU-{cluster.namespace}"
    await add_gpu_node(cluster, "n0", product, "zone-a", gpus=1)
    await cluster.create(gpu_llmd("two", product, tensor=1, replicas=2))

    short = await cluster.wait_for("InsufficientCapacity", lambda: (
        c := condition(llmd(cluster, "two"), "InsufficientCapacity")).get("status") == "True" and c)
    assert "Insufficient nvidia.com/gpu" in short["message"] or "didn't match" in short["message"]
    await cluster.wait_for("one replica up, one waiting for a node", lambda: (
        r := status_of(cluster, "two").get("replicas") or {}).get("ready") == 1 and r["onDemand"]["pending"] == 1)
    assert condition(llmd(cluster, "two"), "Degraded").get("status") == "True"

    await add_gpu_node(cluster, "n1", product, "zone-a", gpus=1)
    await cluster.wait_for("both ready", lambda: (status_of(cluster, "two").get("replicas") or {}).get("ready") == 2)
    await cluster.wait_for("capacity back", lambda: condition(llmd(cluster, "two"), "InsufficientCapacity").get("status") == "False")
    assert condition(llmd(cluster, "two"), "Ready")["status"] == "True"


async def test_a_tensor_parallel_group_lands_whole_in_one_zone(cluster, operator):
    product = f"TEST-H100-{cluster.namespace}"
    # One free 8-GPU node in each of two zones: the group's second pod may not take the other zone's node.
    await add_gpu_node(cluster, "x0", product, "zone-x")
    await add_gpu_node(cluster, "y0", product, "zone-y")
    await cluster.create(gpu_llmd("big", product, tensor=16, replicas=1))

    def placed() -> dict[str, str]:
        return {p["metadata"]["name"]: p["spec"].get("nodeName") for p in engine_pods(cluster, "big")}

    await cluster.wait_for("the group's two pods", lambda: len(placed()) == 2)
    first_node = await cluster.wait_for("one pod placed", lambda: next((n for n in placed().values() if n), None))
    await cluster.wait_for("the other one unschedulable", lambda: (
        status_of(cluster, "big").get("replicas") or {}).get("onDemand", {}).get("pending") == 1)
    assert sum(1 for n in placed().values() if n) == 1
    assert status_of(cluster, "big")["replicas"]["ready"] == 0  # half a group serves nothing
    assert condition(llmd(cluster, "big"), "Ready")["status"] == "False"

    zone = "zone-x" if first_node.endswith("-x0") else "zone-y"
    await add_gpu_node(cluster, f"{zone[-1]}1", product, zone)
    await cluster.wait_for("the group ready", lambda: condition(llmd(cluster, "big"), "Ready").get("status") == "True")
    nodes = {p["spec"]["nodeName"] for p in engine_pods(cluster, "big")}
    zones = {cluster.get("v1", "Node", n)["metadata"]["labels"]["topology.kubernetes.io/zone"] for n in nodes}
    assert len(nodes) == 2 and zones == {zone}
