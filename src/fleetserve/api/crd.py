"""`fleetserve crd`: the LLMDeployment CustomResourceDefinition, generated from the pydantic models in spec.py.

Pydantic emits JSON Schema 2020-12; the apiserver wants a structural OpenAPI v3.0 schema, so this module inlines
references, turns optional fields into plain optional properties and attaches each model's CEL rules.
"""

import argparse
import copy
from pathlib import Path

import yaml

from fleetserve.api import spec as api
from fleetserve.api.labels import PART_OF, PART_OF_LABEL

CRD_FILE_NAME = f"{api.PLURAL}.{api.GROUP}.yaml"
# Both copies must match the models; tests/operator/test_crd_and_spec.py fails CI when either is stale.
DEFAULT_OUTPUT_DIRS = ("crds", "helm/crds")


def openapi_schema(model: type[api.BaseModel]) -> dict:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    definitions = raw.pop("$defs", {})
    return _structural(raw, definitions, model)


def _structural(node: dict, definitions: dict, model: type | None = None) -> dict:
    """One JSON Schema node as a structural OpenAPI v3.0 node; `model` is the pydantic class it describes."""
    if "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[-1]  # pydantic names definitions after their classes in spec.py
        resolved = _structural(copy.deepcopy(definitions[name]), definitions, getattr(api, name))
        siblings = _structural({k: v for k, v in node.items() if k != "$ref"}, definitions)
        return {**resolved, **siblings}
    if "anyOf" in node:
        # Optional[X] is `anyOf: [X, null]`; in a CRD an absent field already means "not set".
        variants = [v for v in node["anyOf"] if v.get("type") != "null"]
        assert len(variants) == 1, f"only Optional unions are supported, got {node}"
        siblings = _structural({k: v for k, v in node.items() if k != "anyOf"}, definitions)
        return {**_structural(variants[0], definitions), **siblings}

    out: dict = {}
    for key, value in node.items():
        if key == "title" or (key == "additionalProperties" and "properties" in node):
            continue  # structural schemas forbid properties next to additionalProperties
        if key == "properties":
            out[key] = {name: _structural(prop, definitions) for name, prop in value.items()}
        elif key in ("items", "additionalProperties"):
            out[key] = _structural(value, definitions) if isinstance(value, dict) else value
        elif key in ("exclusiveMinimum", "exclusiveMaximum"):  # a number in 2020-12, a flag in OpenAPI 3.0
            out["minimum" if key == "exclusiveMinimum" else "maximum"] = value
            out[key] = True
        elif key == "default":
            if value is not None:
                out[key] = _without_nulls(value)
        elif key == "const":
            out["enum"] = [value]
        else:
            out[key] = value
    if model is not None and model.cel_rules:
        out["x-kubernetes-validations"] = validations(model.cel_rules)
    return out


def validations(rules: tuple[api.CelRule, ...]) -> list[dict]:
    return [{"rule": cel.rule, "message": cel.message, **({"fieldPath": cel.field_path} if cel.field_path else {})}
            for cel in rules]


def _without_nulls(value):
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


def custom_resource_schema() -> dict:
    """The full openAPIV3Schema of the CRD's one version."""
    return {
        "type": "object",
        "description": "An LLM served by the FleetServe engine behind an in-cluster OpenAI-compatible endpoint.",
        "required": ["spec"],
        "x-kubernetes-validations": validations(api.NAME_RULES),
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": openapi_schema(api.LLMDeploymentSpec),
            "status": openapi_schema(api.LLMDeploymentStatus),
        },
    }


def build_crd() -> dict:
    ready = '.status.conditions[?(@.type=="Ready")]'
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{api.PLURAL}.{api.GROUP}", "labels": {PART_OF_LABEL: PART_OF}},
        "spec": {
            "group": api.GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": api.KIND,
                "plural": api.PLURAL,
                "singular": api.SINGULAR,
                "shortNames": [api.SHORT_NAME],
                "categories": ["fleetserve"],
            },
            "versions": [{
                "name": api.VERSION,
                "served": True,
                "storage": True,
                "schema": {"openAPIV3Schema": custom_resource_schema()},
                "subresources": {
                    "status": {},
                    "scale": {
                        "specReplicasPath": ".spec.replicas.min",
                        # All replicas the workloads run, ready or not, as a Deployment's status.replicas:
                        # HPA and KEDA take it as the current count.
                        "statusReplicasPath": ".status.replicas.desired",
                        "labelSelectorPath": ".status.selector",
                    },
                },
                "additionalPrinterColumns": [
                    {"name": "Ready", "type": "string", "jsonPath": f"{ready}.status"},
                    {"name": "Replicas", "type": "string", "jsonPath": ".status.replicas.summary",
                     "description": "ready/desired replicas"},
                    {"name": "Spot", "type": "integer", "jsonPath": ".status.replicas.spot.ready",
                     "description": "ready replicas on spot nodes"},
                    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                    {"name": "Reason", "type": "string", "jsonPath": f"{ready}.reason", "priority": 1},
                    {"name": "Endpoint", "type": "string", "jsonPath": ".status.endpoint", "priority": 1},
                ],
            }],
        },
    }


def render_crd_yaml() -> str:
    header = "# Generated by `fleetserve crd` from src/fleetserve/api/spec.py. Do not edit by hand.\n"
    return header + yaml.safe_dump(build_crd(), sort_keys=False, width=120)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output-dir", action="append", type=Path,
                        help=f"write {CRD_FILE_NAME} into this folder (repeatable); default: print to stdout")


def run(args: argparse.Namespace) -> int:
    text = render_crd_yaml()
    if not args.output_dir:
        print(text, end="")
        return 0
    for folder in args.output_dir:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / CRD_FILE_NAME).write_text(text)
    return 0
