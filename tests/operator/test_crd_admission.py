"""The generated CRD in a real kube-apiserver: it is accepted (CEL cost budget included), it refuses every invalid
spec that `render` refuses, naming the same field, and what the operator renders from the examples is admitted too.

`test_crd_and_spec.py` checks the Python mirror of each rule; this file checks the apiserver's half.
"""

import json
import re

import pytest
import yaml

from fleetserve.operator.render import ClusterFeatures
from fleetserve.operator.render_cli import render_manifests

from llmd_cases import EXAMPLES, INVALID, REPO, with_change

CRD_KINDS = ("LeaderWorkerSet", "PodMonitor")  # their CRDs aren't installed here


@pytest.fixture
async def crd(cluster, operator_kubeconfig):
    """This checkout's CRD: `helm upgrade` leaves the CRD of the chart's first install in place."""
    await cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
    await cluster.kubectl("wait", "--for", "condition=Established", "crd/llmdeployments.fleetserve.io")


async def dry_run(cluster, *manifests: dict):
    path = cluster.workdir / "manifests.yaml"
    path.write_text(yaml.safe_dump_all(manifests))
    return await cluster.kubectl("create", "--dry-run=server", "-f", str(path), check=False)


def apiserver_path(field: str) -> str:
    """spec.env.0.name (pydantic's location) as the apiserver writes it: spec.env[0].name."""
    return re.sub(r"\.(\d+)", r"[\1]", field)


@pytest.mark.parametrize("path,value,field", [(p, v, f) for p, v, f, _ in INVALID],
                         ids=[f"{p}={v!r}"[:60] for p, v, _, _ in INVALID])
async def test_apiserver_refuses_what_render_refuses_naming_the_field(cluster, crd, path, value, field):
    body = with_change(path, value)
    if value is None:
        body["spec"]["resources"].pop("gpu")
    result = await dry_run(cluster, body)
    assert result.returncode != 0 and apiserver_path(field) in result.stderr, result.stderr


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
async def test_examples_and_their_children_are_admitted(cluster, crd, example):
    applied = await cluster.kubectl("create", "--dry-run=server", "-f", str(example), check=False)
    assert applied.returncode == 0, applied.stderr
    for lws in (False, True):
        (body,) = [d for d in yaml.safe_load_all(example.read_text()) if d["kind"] == "LLMDeployment"]
        body["metadata"] |= {"namespace": cluster.namespace}
        children = [json.loads(json.dumps(m)) for m in render_manifests(body, ClusterFeatures(leader_worker_set=lws))
                    if m["kind"] not in CRD_KINDS]
        result = await dry_run(cluster, *children)
        assert result.returncode == 0, result.stderr
