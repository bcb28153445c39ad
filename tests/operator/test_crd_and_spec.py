"""The CRD is generated from the pydantic spec, checked in fresh, and rejects what the models reject."""

import copy
import subprocess
import sys

import jsonschema
import pytest

from fleetserve.api import crd
from fleetserve.api.spec import InvalidSpec, all_cel_rules, parse_resource
from fleetserve.operator.render_cli import llm_deployments
from llmd_cases import EXAMPLES, INVALID, REPO, valid_body, with_change


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
    # HPA and KEDA read the current count here: all replicas, as a Deployment's status.replicas, not only ready ones.
    assert version["subresources"]["scale"]["statusReplicasPath"] == ".status.replicas.desired"
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
    (body,) = llm_deployments(path.read_text())
    assert "namespace" not in body["metadata"]  # tests and users apply them with `kubectl apply -n`
    jsonschema.Draft4Validator(crd_schema()).validate(body)
    parse_resource(body)


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
    assert spec.resources.gpu is None and spec.capacity.spot.drain_seconds == 10
    assert (spec.replicas.min, spec.replicas.max, spec.parallelism.tensor, spec.gpus_per_replica) == (1, 1, 1, 0)
    body = copy.deepcopy(valid_body())
    assert parse_resource(body).gpus_per_replica == 4


def test_operator_version_tunables_have_no_schema_default():
    """A schema default is stored in every object at admission, so an operator upgrade would never change it (W15):
    the operator resolves the image, and the engine its own tunables."""
    engine = crd_schema()["properties"]["spec"]["properties"]["engine"]["properties"]
    for field in ("image", "maxNumSeqs", "gpuMemoryUtilization"):
        assert "default" not in engine[field], field


def test_lists_and_strings_a_cel_rule_iterates_are_bounded():
    """The apiserver refuses a CRD whose rules may cost too much; bounds on what they iterate keep the estimate low."""
    iterated = []
    for node in _walk(crd_schema()):
        for rule in node.get("x-kubernetes-validations", []):
            for field, child in (node.get("properties") or {}).items():
                if f"self.{field}.all(" in rule["rule"]:
                    iterated.append(field)
                    assert "maxItems" in child or "maxProperties" in child, field
                    if child["type"] == "array":
                        assert "maxLength" in child["items"], field
    assert {"extraArgs", "nodeSelector", "podMonitorLabels", "podAnnotations"} <= set(iterated)


def test_model_auth_secret_key_defaults_to_token():
    body = valid_body()
    body["spec"]["model"]["authSecretRef"] = {"name": "hf-token"}
    assert parse_resource(body).model.auth_secret_ref.key == "token"
