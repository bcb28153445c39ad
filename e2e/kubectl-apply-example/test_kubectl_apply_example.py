"""A user runs `kubectl apply -f examples/` and gets engine workloads, a Service, a PDB and a NetworkPolicy each.

Real kubectl and the real operator process against the API emulator (no schema validation there, so kubectl runs
with --validate=false; the CRD's own checks are covered by tests/operator/test_crd_and_spec.py).
"""

import asyncio
import json
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).parents[2]
EXAMPLES = REPO / "examples"
KUBECTL_TIMEOUT = 30

# What each example must produce: (namespace, workloads, Services).
EXPECTED = {
    "tiny": ("default", {"Deployment/tiny-on-demand"}, {"tiny"}),
    "qwen-7b": ("default", {"Deployment/qwen-7b-on-demand"}, {"qwen-7b"}),
    "chat": ("team-a", {"Deployment/chat-on-demand"}, {"chat"}),
    "big": ("default", {"StatefulSet/big-on-demand-0"}, {"big", "big-on-demand-group"}),
    "mix": ("default", {"Deployment/mix-on-demand", "Deployment/mix-spot"}, {"mix"}),
}


@pytest.fixture
def kubectl(cluster):
    binary = shutil.which("kubectl") or shutil.which("kubectl", path=str(REPO / ".tools"))
    if binary is None:
        pytest.fail("kubectl not found on PATH or in .tools/ (scripts/setup.sh --test should provide it)")

    async def run(*args: str) -> str:
        process = await asyncio.create_subprocess_exec(
            binary, "--kubeconfig", str(cluster.kubeconfig), *args,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(process.communicate(), KUBECTL_TIMEOUT)
        assert process.returncode == 0, f"kubectl {' '.join(args)}: {err.decode()}"
        return out.decode()
    return run


async def get(kubectl, kind: str, namespace: str) -> dict[str, dict]:
    items = json.loads(await kubectl("get", kind, "-n", namespace, "-o", "json"))["items"]
    return {item["metadata"]["name"]: item for item in items}


async def test_kubectl_apply_examples_produces_the_expected_objects(cluster, operator, kubectl):
    out = await kubectl("apply", "--validate=false", "-f", str(EXAMPLES))
    assert out.count("created") == len(EXPECTED)

    async def all_children_exist() -> bool:
        for name, (namespace, workloads, services) in EXPECTED.items():
            found = {f"{kind}/{n}" for kind in ("Deployment", "StatefulSet")
                     for n in await get(kubectl, kind.lower() + "s", namespace)}
            if not workloads <= found or not services <= set(await get(kubectl, "services", namespace)):
                return False
        return True

    for _ in range(100):
        if await all_children_exist():
            break
        await asyncio.sleep(0.3)
    else:
        pytest.fail("the operator did not create every example's workloads and Services")

    for name, (namespace, workloads, _) in EXPECTED.items():
        assert name in await get(kubectl, "poddisruptionbudgets", namespace)
        assert name in await get(kubectl, "networkpolicies", namespace)
        llmd = (await get(kubectl, "llmd", namespace))[name]
        for kind_name in workloads:
            kind, child = kind_name.split("/")
            owner = (await get(kubectl, kind.lower() + "s", namespace))[child]["metadata"]["ownerReferences"][0]
            assert owner["uid"] == llmd["metadata"]["uid"] and owner["kind"] == "LLMDeployment"

    # Re-applying changes nothing; the operator keeps its children as they are.
    assert "unchanged" in await kubectl("apply", "--validate=false", "-f", str(EXAMPLES / "cpu-tiny.yaml"))


async def test_kubectl_wait_for_ready_then_delete(cluster, operator, kubectl):
    await kubectl("apply", "--validate=false", "-f", str(EXAMPLES / "cpu-tiny.yaml"))
    deployment = await cluster.wait_for("the Deployment", lambda: cluster.get("apps/v1", "Deployment", "default", "tiny-on-demand"))
    await cluster.report_ready(deployment)  # the test plays the Deployment controller and kubelet
    await kubectl("wait", "--for=condition=Ready", "llmd/tiny", "--timeout=20s")
    status = json.loads(await kubectl("get", "llmd", "tiny", "-o", "json"))["status"]
    assert status["replicas"]["summary"] == "1/1" and status["endpoint"].startswith("http://tiny.default.svc")

    await kubectl("delete", "--wait=false", "-f", str(EXAMPLES / "cpu-tiny.yaml"))
    await cluster.wait_for("children gone", lambda: not cluster.objects("apps/v1", "Deployment") and not cluster.objects("v1", "Service"))
    assert await get(kubectl, "deployments", "default") == {}
