"""The node agent (test infrastructure) does what kubelet would for a real engine pod: Ready only once its
readiness probe passes, reachable at its own pod IP, env and Secrets resolved, and on deletion preStop, SIGTERM
and the final delete."""

import time
import urllib.request

from harness.fixtures import PROCESS_NODE_TOLERATION
from harness.llmd import ready


def engine_pod(node: str) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "engine", "labels": {"app": "engine"}},
            "spec": {"nodeSelector": {"kubernetes.io/hostname": node}, "tolerations": [PROCESS_NODE_TOLERATION],
                     "terminationGracePeriodSeconds": 20, "automountServiceAccountToken": False,
                     "containers": [{
                         "name": "engine", "image": "ghcr.io/fleetserve/engine:0.1.0", "command": ["fleetserve"],
                         "args": ["serve", "--host", "0.0.0.0", "--port", "8000", "--max-model-len", "512",
                                  "--served-model-name", "$(MODEL_NAME)", "--api-key-file", "/var/run/key/token"],
                         "env": [{"name": "MODEL_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}}],
                         "ports": [{"name": "http", "containerPort": 8000}],
                         "readinessProbe": {"httpGet": {"path": "/readyz", "port": "http"}, "periodSeconds": 1},
                         "lifecycle": {"preStop": {"exec": {"command": ["sleep", "1"]}}},
                         "volumeMounts": [{"name": "key", "mountPath": "/var/run/key", "readOnly": True}]}],
                     "volumes": [{"name": "key", "secret": {"secretName": "engine-key"}}]}}


async def test_an_engine_pod_runs_as_a_process_at_its_own_address(cluster, process_node):
    agent = process_node()
    await cluster.create({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "engine-key"},
                          "stringData": {"token": "s3cret"}})
    await cluster.create(engine_pod(agent.name))
    pod = await cluster.wait_for("the pod Ready", lambda: (p := cluster.get("v1", "Pod", "engine")) and ready(p) and p,
                                 timeout=180)
    ip = pod["status"]["podIP"]
    assert ip.startswith(f"{agent.network.subnet}.{agent.index}.")
    request = urllib.request.Request(f"http://{ip}:8000/v1/models", headers={"Authorization": "Bearer s3cret"})
    with urllib.request.urlopen(request, timeout=5) as answer:
        assert b'"engine"' in answer.read()  # the served name came from the label through $(MODEL_NAME)

    process = agent.pods[pod["metadata"]["uid"]].containers["engine"].process
    started = time.monotonic()
    await cluster.delete("v1", "Pod", "engine")
    await cluster.wait_for("the pod gone", lambda: cluster.get("v1", "Pod", "engine") is None, timeout=60)
    assert process.poll() is not None and time.monotonic() - started >= 1  # preStop ran before SIGTERM
