"""LLMDeployment helpers for tests: the examples as a user applies them, and status lookups."""

import yaml

from harness.kube import REPO, Cluster

LLMD = ("fleetserve.io/v1alpha1", "LLMDeployment")
EXAMPLES = REPO / "examples"


def example(file_name: str) -> dict:
    """The LLMDeployment of an example file, without a namespace (each test has its own)."""
    body = next(doc for doc in yaml.safe_load_all((EXAMPLES / file_name).read_text()) if doc and doc["kind"] == "LLMDeployment")
    body["metadata"].pop("namespace", None)
    return body


def llmd(cluster: Cluster, name: str) -> dict:
    return cluster.get(*LLMD, name) or {}


def condition(body: dict | None, kind: str) -> dict:
    return next((c for c in ((body or {}).get("status") or {}).get("conditions", []) if c["type"] == kind), {})


def workload(cluster: Cluster, name: str, kind: str = "Deployment") -> dict | None:
    return cluster.get("apps/v1", kind, name)


def engine_pods(cluster: Cluster, name: str, capacity: str | None = None) -> list[dict]:
    labels = f"app.kubernetes.io/name=fleetserve-engine,app.kubernetes.io/instance={name}"
    return cluster.objects("v1", "Pod", labels=labels + (f",fleetserve.io/capacity={capacity}" if capacity else ""))
