"""The real operator (a `fleetserve operator` process) against the API emulator over HTTP."""

import copy
from pathlib import Path

import yaml

EXAMPLES = Path(__file__).parents[2] / "examples"
LLMD = ("fleetserve.io/v1alpha1", "LLMDeployment")


def example(name: str) -> dict:
    return yaml.safe_load((EXAMPLES / name).read_text())


def condition(body: dict | None, kind: str) -> dict:
    for item in ((body or {}).get("status") or {}).get("conditions", []):
        if item["type"] == kind:
            return item
    return {}


async def test_apply_creates_owned_children_and_becomes_ready(cluster, operator):
    cr = await cluster.create(example("cpu-tiny.yaml"))
    uid = cr["metadata"]["uid"]
    deployment = await cluster.wait_for("the on-demand Deployment",
                                        lambda: cluster.get("apps/v1", "Deployment", "default", "tiny-on-demand"))
    for api_version, kind, name in [("v1", "Service", "tiny"), ("policy/v1", "PodDisruptionBudget", "tiny"),
                                    ("networking.k8s.io/v1", "NetworkPolicy", "tiny")]:
        child = await cluster.wait_for(f"{kind}/{name}", lambda: cluster.get(api_version, kind, "default", name))
        assert child["metadata"]["ownerReferences"][0]["uid"] == uid
    assert deployment["metadata"]["ownerReferences"][0]["uid"] == uid
    assert not cluster.objects("apps/v1", "StatefulSet")

    status = (await cluster.wait_for("a first status", lambda: (cluster.get(*LLMD, "default", "tiny") or {}).get("status")))
    assert status["replicas"]["desired"] == 1 and status["replicas"]["ready"] == 0
    assert condition(cluster.get(*LLMD, "default", "tiny"), "Ready")["status"] == "False"

    await cluster.report_ready(deployment)
    ready = await cluster.wait_for("Ready=True", lambda: condition(cluster.get(*LLMD, "default", "tiny"), "Ready").get("status") == "True")
    assert ready
    body = cluster.get(*LLMD, "default", "tiny")
    assert body["status"]["endpoint"] == "http://tiny.default.svc.cluster.local:8000/v1"
    assert body["status"]["observedGeneration"] == body["metadata"]["generation"]
    assert body["status"]["replicas"]["summary"] == "1/1"
    assert operator.alive()
