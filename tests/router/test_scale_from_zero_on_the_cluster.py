"""Scale from zero on the real control plane: a request to an LLMDeployment at zero replicas is held by its router,
the router asks for a replica (the wake annotation), the autoscaler plans one, the operator scales the Deployment,
the scheduler places the pod, and the request is served once the engine is Ready.

The router and the engine run as real processes on a process node (tests/harness/node_agent.py): no container
runtime exists here. Clients reach the router at its pod IP, as kube-proxy would route the Service's ClusterIP.
"""

import time

import httpx

from harness.fixtures import PROCESS_NODE_TOLERATION
from harness.llmd import LLMD, condition, engine_pods, example, llmd, ready

ON_PROCESS_NODES = {"nodeSelector": {"fleetserve.test/process-node": "true"}, "tolerations": [PROCESS_NODE_TOLERATION]}


def at_zero() -> dict:
    body = example("cpu-tiny.yaml")
    body["spec"]["resources"] = {"cpu": "1", "memory": "2Gi"}
    body["spec"]["replicas"] = {"min": 0, "max": 1}
    body["spec"]["autoscaling"] = {"enabled": True}
    body["spec"]["capacity"] = {"onDemand": {"minReplicas": 0, **ON_PROCESS_NODES}}
    return body


def ready_pod(cluster, labels: str) -> dict | None:
    return next((p for p in cluster.objects("v1", "Pod", labels=labels) if ready(p)), None)


def diagnosis(cluster, agent, operator) -> str:
    body = llmd(cluster, "tiny")
    logs = "\n".join(f"--- {path.relative_to(agent.workdir)}\n{path.read_text()[-1500:]}"
                     for path in sorted(agent.workdir.rglob("*.log")))
    pods = [(p["metadata"]["name"], p["spec"].get("nodeName"), p["status"].get("phase")) for p in cluster.objects("v1", "Pod")]
    return (f"annotations {body['metadata'].get('annotations')}\nstatus {body.get('status')}\npods {pods}\n{logs}\n"
            f"--- operator\n{operator.log()[-3000:]}")


async def test_a_request_at_zero_replicas_is_held_and_served(cluster, process_node, start_operator):
    agent = process_node(cpu="16", memory="64Gi")
    operator = await start_operator("operator", autoscaler=True, env={"FLEETSERVE_AUTOSCALER_INTERVAL": "1",
                                                                      "FLEETSERVE_PROMETHEUS_URL": ""})
    await cluster.create(at_zero())
    router = await cluster.wait_for("the router Ready", lambda: ready_pod(
        cluster, "app.kubernetes.io/name=fleetserve-router,app.kubernetes.io/instance=tiny"), timeout=120)
    assert not engine_pods(cluster, "tiny")  # at zero

    started = time.monotonic()
    async with httpx.AsyncClient(timeout=300) as client:
        answer = await client.post(f"http://{router['status']['podIP']}:8080/v1/completions", json={
            "model": "tiny", "prompt": "Once upon a time", "max_tokens": 8})
    held_for = time.monotonic() - started
    assert answer.status_code == 200, f"{answer.text}\n{diagnosis(cluster, agent, operator)}"
    assert answer.json()["choices"][0]["text"]

    body = llmd(cluster, "tiny")
    assert body["metadata"]["annotations"].get("fleetserve.io/wake")
    assert any("woken from zero" in d["reason"] for d in body["status"]["scalingDecisions"])
    assert condition(body, "Ready")["status"] == "True" and engine_pods(cluster, "tiny")
    print(f"held for {held_for:.1f} s while a replica started")
    assert cluster.get(*LLMD, "tiny")["status"]["replicas"]["ready"] == 1
