"""The CRD is generated from the pydantic spec, checked in fresh, and rejects what the models reject."""

import copy
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

from fleetserve.api import crd
from fleetserve.api.spec import InvalidSpec, all_cel_rules, parse_resource

REPO = Path(__file__).parents[2]
EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))


def crd_schema() -> dict:
    return crd.build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


@pytest.mark.parametrize("folder", crd.DEFAULT_OUTPUT_DIRS)
def test_checked_in_crd_is_fresh(folder):
    checked_in = (REPO / folder / crd.CRD_FILE_NAME).read_text()
    assert checked_in == crd.render_crd_yaml(), f"{folder} is stale: run `fleetserve crd --output-dir crds --output-dir helm/crds`"


def test_crd_command_prints_the_same_yaml():
    result = subprocess.run([sys.executable, "-c", "from fleetserve.cli import main; raise SystemExit(main())", "crd"],
                            capture_output=True, text=True, timeout=60, cwd="/")
    assert result.returncode == 0, result.stderr
    assert result.stdout == crd.render_crd_yaml()


def test_crd_has_subresources_printer_columns_and_short_name():
    version = crd.build_crd()["spec"]["versions"][0]
    assert version["subresources"]["status"] == {}
    assert version["subresources"]["scale"]["specReplicasPath"] == ".spec.replicas.min"
    assert [c["name"] for c in version["additionalPrinterColumns"]][:4] == ["Ready", "Replicas", "Spot", "Age"]
    assert crd.build_crd()["spec"]["names"]["shortNames"] == ["llmd"]


def _walk(schema: dict):
    yield schema
    for child in [*(schema.get("properties") or {}).values(), schema.get("items"), schema.get("additionalProperties")]:
        if isinstance(child, dict) and child:
            yield from _walk(child)


def test_schema_is_structural():
    for node in _walk(crd_schema()):
        assert "$ref" not in node and "anyOf" not in node and "title" not in node
        assert not ("properties" in node and "additionalProperties" in node)
        if node is not crd_schema():
            assert "type" in node, node


def test_every_cel_rule_is_in_the_crd_and_mirrored_in_python():
    rules_in_crd = {v["rule"] for node in _walk(crd_schema()) for v in node.get("x-kubernetes-validations", [])}
    pairs = all_cel_rules()
    assert pairs
    for _, rule in pairs:
        assert rule.rule in rules_in_crd
        assert callable(rule.holds)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_are_valid(path):
    body = yaml.safe_load(path.read_text())
    jsonschema.Draft4Validator(crd_schema()).validate(body)
    parse_resource(body)


def valid_body() -> dict:
    return yaml.safe_load((REPO / "examples" / "tp4.yaml").read_text())


def with_change(path: str, value) -> dict:
    body = valid_body()
    node = body
    *parents, leaf = path.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value
    return body


# (field changed, bad value, field the error must name, rejected by the OpenAPI schema too (False: a CEL rule))
INVALID = [
    ("spec.model.source", "s3://bucket/model", "spec.model.source", True),
    ("spec.model.source", "hf://just-a-name", "spec.model.source", True),
    ("spec.engine.maxNumSeqs", 0, "spec.engine.maxNumSeqs", True),
    ("spec.engine.gpuMemoryUtilization", 0, "spec.engine.gpuMemoryUtilization", True),
    ("spec.engine.gpuMemoryUtilization", 1.5, "spec.engine.gpuMemoryUtilization", True),
    ("spec.resources.memory", "lots", "spec.resources.memory", True),
    ("spec.resources.cpu", 8, "spec.resources.cpu", True),
    ("spec.parallelism.tensor", 0, "spec.parallelism.tensor", True),
    ("spec.replicas.min", -1, "spec.replicas.min", True),
    ("spec.capacity.spot.maxShare", 1.2, "spec.capacity.spot.maxShare", True),
    ("spec.capacity.spot.tolerations", [{"key": "a", "operator": "Maybe"}], "spec.capacity.spot.tolerations.0.operator", True),
    ("spec.serving.port", 80, "spec.serving.port", True),
    ("spec.autoscaling.slo.percentile", 100, "spec.autoscaling.slo.percentile", True),
    ("spec.serving.apiKeySecretRef", {"name": "k"}, "spec.serving.apiKeySecretRef.key", True),
    ("spec.replicas", {"min": 3, "max": 2}, "spec.replicas", False),
    ("spec.parallelism.tensor", 3, "spec.resources.gpu.countPerReplica", False),  # 3 doesn't divide 4 GPUs
    ("spec.resources.gpu", None, "spec.parallelism.tensor", False),  # TP without GPUs
    ("metadata.name", "a" * 40, "metadata.name", False),
    ("spec.model", {"source": "pvc://weights/llama", "revision": "main"}, "spec.model.revision", False),
]


@pytest.mark.parametrize("path,value,field,by_schema", INVALID, ids=[f"{p}={v!r}"[:60] for p, v, _, _ in INVALID])
def test_invalid_specs_are_rejected_naming_the_field(path, value, field, by_schema):
    body = with_change(path, value)
    if value is None:
        body["spec"]["resources"].pop("gpu")
    with pytest.raises(InvalidSpec) as error:
        parse_resource(body)
    assert field in str(error.value)
    if by_schema:
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.Draft4Validator(crd_schema()).validate(body)


def test_unknown_fields_are_refused():
    body = valid_body()
    body["spec"]["engine"]["maxBatch"] = 3
    with pytest.raises(InvalidSpec, match="spec.engine.maxBatch"):
        parse_resource(body)


def test_defaults_fill_an_almost_empty_spec():
    spec = parse_resource({"apiVersion": "fleetserve.io/v1alpha1", "kind": "LLMDeployment", "metadata": {"name": "x"},
                           "spec": {"model": {"source": "builtin://smollm2-135m-instruct"}}})
    assert spec.engine.image.startswith("ghcr.io/fleetserve/engine:")
    assert (spec.replicas.min, spec.replicas.max, spec.parallelism.tensor, spec.gpus_per_replica) == (1, 1, 1, 0)
    body = copy.deepcopy(valid_body())
    assert parse_resource(body).gpus_per_replica == 4
