"""LLMDeployments shared by the tests of both halves of validation: the Python mirror (tests/operator/
test_crd_and_spec.py) and the apiserver with the generated CRD (tests/operator/test_crd_admission.py)."""

from pathlib import Path

from fleetserve.operator.render_cli import llm_deployments

REPO = Path(__file__).parents[1]
EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))


def valid_body() -> dict:
    (body,) = llm_deployments((REPO / "examples" / "tp4.yaml").read_text())
    return body


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
    # B5: what the CRD used to admit and child creation then refused.
    ("metadata.name", "qwen2.5-7b", "metadata.name", False),  # the Service needs a DNS-1035 label
    ("metadata.name", "7b", "metadata.name", False),
    ("spec.capacity.spot.tolerations", [{"operator": "Exists", "value": "x"}], "spec.capacity.spot.tolerations.0.value", False),
    ("spec.capacity.spot.tolerations", [{"key": "", "operator": "Equal"}], "spec.capacity.spot.tolerations.0.key", False),
    ("spec.capacity.spot.tolerations", [{"key": "a", "effect": "NoSchedule", "tolerationSeconds": 5}],
     "spec.capacity.spot.tolerations.0.tolerationSeconds", False),
    ("spec.capacity.spot.tolerations", [{"key": "bad key!", "operator": "Exists"}], "spec.capacity.spot.tolerations.0.key", True),
    ("spec.capacity.onDemand.nodeSelector", {"bad key!": "x"}, "spec.capacity.onDemand.nodeSelector", False),
    ("spec.capacity.onDemand.nodeSelector", {"pool": "not a value"}, "spec.capacity.onDemand.nodeSelector.pool", True),
    ("spec.serving.apiKeySecretRef", {"name": "Not_A_Valid_Name", "key": "token"}, "spec.serving.apiKeySecretRef.name", True),
    ("spec.capacity.spot.tolerations", [{"key": "a", "operator": "Exists"}] * 65, "spec.capacity.spot.tolerations", True),
    # N4: the rendezvous port, and flags the operator renders.
    ("spec.serving.port", 29500, "spec.serving.port", False),
    ("spec.engine.extraArgs", ["--port", "9999"], "spec.engine.extraArgs", False),
    ("spec.engine.extraArgs", ["--tensor-parallel=8"], "spec.engine.extraArgs", False),  # argparse takes prefixes
    ("spec.engine.extraArgs", ["--device=cpu"], "spec.engine.extraArgs", False),
    # B2 and the model cache.
    ("spec.model.authSecretRef", {"name": "hf_token"}, "spec.model.authSecretRef.name", True),
    ("spec.model", {"source": "builtin://smollm2-135m-instruct", "authSecretRef": {"name": "hf"}}, "spec.model.authSecretRef", False),
    ("spec.model.cache", {"pvcName": "hf-cache", "sizeLimit": "10Gi"}, "spec.model.cache.sizeLimit", False),
    ("spec.model.cache", {"sizeLimit": "lots"}, "spec.model.cache.sizeLimit", True),
    ("spec.env", [{"name": "HF_HOME", "value": "/x"}], "spec.env.0.name", False),
    ("spec.env", [{"name": "FLEETSERVE_NNODES", "value": "3"}], "spec.env.0.name", False),
    ("spec.env", [{"name": "A", "value": "x", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}], "spec.env.0.valueFrom", False),
    ("spec.env", [{"name": "A", "valueFrom": {}}], "spec.env.0.valueFrom", False),
    ("spec.envFrom", [{"prefix": "X_"}], "spec.envFrom.0", False),
    ("spec.runtimeClassName", "Nvidia", "spec.runtimeClassName", True),
    # B4 and B7: label keys the user names.
    ("spec.resources.gpu.nodeLabel", "bad key!", "spec.resources.gpu.nodeLabel", True),
    ("spec.monitoring.podMonitorLabels", {"bad key!": "x"}, "spec.monitoring.podMonitorLabels", False),
    ("spec.podAnnotations", {"-bad": "x"}, "spec.podAnnotations", False),
    ("spec.capacity.spot.drainSeconds", -1, "spec.capacity.spot.drainSeconds", True),
    ("spec.model", {"source": "pvc://weights/llama", "revision": "main"}, "spec.model.revision", False),
    ("spec.router.policy", "random", "spec.router.policy", True),
    ("spec.router.replicas", 0, "spec.router.replicas", True),
    ("spec.router.resources.memory", "lots", "spec.router.resources.memory", True),
]
