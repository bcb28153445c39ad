"""The operator renders a 2-pod tensor-parallel group; the engine must run as one replica from exactly that pod spec.

The test plays the kubelet: it takes each pod's rendered command line and environment from the operator's own
StatefulSet, resolves the downward-API fields, and starts one `fleetserve serve` per pod. Only what a cluster
provides differs: the PVC mount is a local folder, the device is the CPU, the leader's DNS name is 127.0.0.1, and since both "pods" share
one host, each gets its own ports.
"""

import signal
import time

import pytest

from fleetserve.engine import distributed
from fleetserve.engine.group_layout import group_layout
from fleetserve.api import group_env
from fleetserve.api.placement import spec_split
from fleetserve.operator.render import ClusterFeatures, render_children
from fleetserve.api.spec import LLMDeploymentSpec

PVC_SOURCE = "pvc://weights/tiny-llama"
EXTRA_ARGS = ["--num-kv-blocks", "128", "--max-num-batched-tokens", "64"]


def rendered_group_pod() -> dict:
    """The pod template of the one group StatefulSet the operator renders for TP=2 over nodes of 1 GPU."""
    body = {
        "apiVersion": "fleetserve.io/v1alpha1", "kind": "LLMDeployment",
        "metadata": {"name": "tiny-llama", "namespace": "default", "uid": "0000"},
        "spec": {
            "model": {"source": PVC_SOURCE},
            "engine": {"maxModelLen": 256, "maxNumSeqs": 8, "extraArgs": EXTRA_ARGS},
            "resources": {"gpu": {}},
            "parallelism": {"tensor": 2},
            "capacity": {"gpusPerNode": 1},
            "replicas": {"min": 1, "max": 1},
        },
    }
    spec = LLMDeploymentSpec.model_validate(body["spec"])
    children = render_children(body, spec, spec_split(spec), ClusterFeatures())
    (statefulset,) = [c for c in children if c["kind"] == "StatefulSet"]
    assert statefulset["spec"]["replicas"] == 2
    return statefulset["spec"]["template"]


def kubelet_env(container: dict, pod_name: str, pod_index: int) -> dict:
    """The container's environment as the kubelet resolves it for the pod with this StatefulSet ordinal."""
    fields = {"metadata.name": pod_name, f"metadata.labels['{group_env.POD_INDEX_LABEL}']": str(pod_index)}
    env = {}
    for item in container["env"]:
        env[item["name"]] = item["value"] if "value" in item else fields[item["valueFrom"]["fieldRef"]["fieldPath"]]
    return env


def replace_flag(args: list[str], flag: str, value: str) -> list[str]:
    i = args.index(flag)
    return [*args[:i + 1], value, *args[i + 2:]]


def test_group_env_gives_each_pod_its_rank():
    container = rendered_group_pod()["spec"]["containers"][0]
    tp = int(container["args"][container["args"].index("--tensor-parallel-size") + 1])
    layouts = [group_layout(tp, kubelet_env(container, f"tiny-llama-on-demand-0-{i}", i)) for i in range(2)]
    assert [(lay.node_rank, lay.first_rank, lay.world_size) for lay in layouts] == [(0, 0, 2), (1, 1, 2)]
    assert {lay.leader_addr for lay in layouts} == {"tiny-llama-on-demand-0-0.tiny-llama-on-demand-group.default.svc"}
    assert {lay.leader_port for lay in layouts} == {group_env.RENDEZVOUS_PORT}


@pytest.mark.parametrize("change, message", [
    ({group_env.NODE_RANK: "2"}, "FLEETSERVE_NODE_RANK=2 must be below FLEETSERVE_NNODES=2"),
    ({group_env.GPUS_PER_NODE: "two"}, "FLEETSERVE_GPUS_PER_NODE='two' is not an integer"),
    ({group_env.LEADER_ADDR: ""}, "FLEETSERVE_LEADER_ADDR: missing"),
    ({group_env.GPUS_PER_NODE: "2"}, "--tensor-parallel-size 2 must equal FLEETSERVE_NNODES x FLEETSERVE_GPUS_PER_NODE"),
])
def test_bad_group_env_is_refused_naming_the_variable(change, message):
    container = rendered_group_pod()["spec"]["containers"][0]
    env = {**kubelet_env(container, "tiny-llama-on-demand-0-1", 1), **change}
    with pytest.raises(ValueError, match=message):
        group_layout(2, env)


def start_group(start_serve, model_path, rendezvous_port: int) -> tuple:
    """Both pods of the rendered group, started as the kubelet would; returns (leader, worker) once both are healthy."""
    container = rendered_group_pod()["spec"]["containers"][0]
    args = replace_flag(container["args"], "--model", str(model_path))  # the PVC mount
    args = replace_flag(args, "--host", "127.0.0.1")
    args = replace_flag(args, "--device", "cpu")  # the pods hold GPUs, so the operator asks for cuda; there is none here
    args = without_port(args[1:])  # the entrypoint is `fleetserve`; start_serve adds `serve` and a port per "pod"
    pods = []
    for index in range(2):
        env = kubelet_env(container, f"tiny-llama-on-demand-0-{index}", index)
        env.pop("HF_HOME")  # the model cache volume
        env |= {group_env.LEADER_ADDR: "127.0.0.1", group_env.LEADER_PORT: str(rendezvous_port)}
        pods.append(start_serve(args, env))
    for pod in pods:
        pod.wait_healthy()  # the worker pod answers its probes too
    return tuple(pods)


def test_rendered_group_serves_as_one_replica(start_serve, tiny, tp1_outputs, free_port):
    leader, worker = start_group(start_serve, tiny.path, free_port())
    assert tiny.complete_concurrently(leader.base_url, tiny.prompts) == tp1_outputs

    worker.process.send_signal(signal.SIGTERM)  # Kubernetes stops every pod at once; rank 0 still drains on it
    assert tiny.complete_concurrently(leader.base_url, tiny.prompts[:2]) == tp1_outputs[:2]
    assert leader.health() == 200

    worker.process.send_signal(signal.SIGKILL)  # while idle, so only the heartbeat can tell
    killed = time.monotonic()
    while leader.health() != 503:
        assert time.monotonic() - killed < distributed.HEARTBEAT_TIMEOUT_SECONDS + 5, leader.log()
        time.sleep(0.2)
    assert "rank 1 sent no heartbeat" in leader.log()


def test_worker_pod_exits_when_the_leader_dies(start_serve, tiny, free_port):
    leader, worker = start_group(start_serve, tiny.path, free_port())
    leader.process.send_signal(signal.SIGKILL)
    assert worker.process.wait(timeout=distributed.HEARTBEAT_TIMEOUT_SECONDS + 5) == 1, worker.log()


def without_port(args: list[str]) -> list[str]:
    i = args.index("--port")
    return args[:i] + args[i + 2:]
