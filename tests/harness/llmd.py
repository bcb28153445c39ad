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


def ready(obj: dict) -> bool:
    """A pod (not being deleted) or node whose Ready condition is True."""
    return not obj["metadata"].get("deletionTimestamp") and any(
        c["type"] == "Ready" and c["status"] == "True" for c in (obj.get("status") or {}).get("conditions") or [])


def serving(pod: dict) -> bool:
    """In its Service: the autoscaler removes this label from pods on reclaimed nodes."""
    return (pod["metadata"].get("labels") or {}).get("fleetserve.io/serving") == "true"


def four_replicas_half_spot(name: str, spot_pool_spec: dict) -> dict:
    """Four replicas, two on spot (`spot_pool_spec`: its nodeSelector and tolerations) and two on-demand; min = max,
    so load never moves the count and every change of the split is the spot logic's. A 1-CPU spot node holds one
    600m replica."""
    return {
        "apiVersion": "fleetserve.io/v1alpha1", "kind": "LLMDeployment", "metadata": {"name": name},
        "spec": {"model": {"source": "builtin://smollm2-135m-instruct"}, "resources": {"cpu": "600m", "memory": "1Gi"},
                 "replicas": {"min": 4, "max": 4}, "autoscaling": {"enabled": True},
                 "capacity": {"onDemand": {"minReplicas": 2},
                              "spot": {"enabled": True, "maxShare": 0.5, **spot_pool_spec}}},
    }
