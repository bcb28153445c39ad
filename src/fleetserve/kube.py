"""The one Kubernetes client of the operator process, shared by the operator's and the autoscaler's handlers.

A thin, generic API client (paths by apiVersion and kind, JSON in and out, merge patches) and the one guarded
way to write an LLMDeployment's status. Built on the official client's ApiClient so kubeconfig and in-cluster
credentials work as kopf's do.
"""

import functools
import json

import kubernetes
from kubernetes.client.exceptions import ApiException

from fleetserve.api.spec import API_VERSION, KIND

# Every kind the operator and the autoscaler read or write; RBAC in helm/templates/rbac.yaml must match this table.
PLURALS = {
    ("v1", "Service"): "services",
    ("v1", "Pod"): "pods",
    ("apps/v1", "Deployment"): "deployments",
    ("apps/v1", "StatefulSet"): "statefulsets",
    ("policy/v1", "PodDisruptionBudget"): "poddisruptionbudgets",
    ("networking.k8s.io/v1", "NetworkPolicy"): "networkpolicies",
    ("v1", "ServiceAccount"): "serviceaccounts",
    ("rbac.authorization.k8s.io/v1", "Role"): "roles",
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): "rolebindings",
    ("monitoring.coreos.com/v1", "PodMonitor"): "podmonitors",
    ("leaderworkerset.x-k8s.io/v1", "LeaderWorkerSet"): "leaderworkersets",
    ("fleetserve.io/v1alpha1", "LLMDeployment"): "llmdeployments",
    ("apiextensions.k8s.io/v1", "CustomResourceDefinition"): "customresourcedefinitions",
    ("v1", "Event"): "events",
    ("kopf.dev/v1", "ClusterKopfPeering"): "clusterkopfpeerings",
}
REQUEST_TIMEOUT_SECONDS = 30


class Conflict(Exception):
    """The object changed since the resourceVersion a write was based on (HTTP 409)."""


def resource_path(api_version: str, kind: str, namespace: str | None, name: str | None = None,
                  subresource: str | None = None) -> str:
    prefix = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    parts = [prefix]
    if namespace:
        parts.append(f"namespaces/{namespace}")
    parts.append(PLURALS[(api_version, kind)])
    parts += [p for p in (name, subresource) if p]
    return "/".join(parts)


class Kube:
    def __init__(self) -> None:
        kubernetes.config.load_config()
        self._api = kubernetes.client.ApiClient()

    def _call(self, method: str, path: str, body=None, query: dict | None = None,
              content_type: str = "application/json"):
        method, url, headers, body, _ = self._api.param_serialize(
            method, path, query_params=list((query or {}).items()),
            header_params={"Accept": "application/json", "Content-Type": content_type},
            body=body, auth_settings=["BearerToken"],
        )
        response = self._api.call_api(method, url, header_params=headers, body=body,
                                      _request_timeout=REQUEST_TIMEOUT_SECONDS)
        response.read()
        text = response.data.decode() if response.data else ""
        if not 200 <= response.status <= 299:
            ApiException.from_response(http_resp=response, body=text, data=None)  # raises the typed error
        return json.loads(text) if text else {}

    def get(self, api_version: str, kind: str, namespace: str | None, name: str) -> dict | None:
        try:
            return self._call("GET", resource_path(api_version, kind, namespace, name))
        except ApiException as error:
            if error.status == 404:
                return None
            raise

    def list(self, api_version: str, kind: str, namespace: str | None, labels: dict[str, str],
             field_selector: str | None = None) -> list[dict]:
        """Objects carrying all `labels`, in `namespace` or (None) in every namespace."""
        query = {"labelSelector": ",".join(f"{k}={v}" for k, v in labels.items())}
        if field_selector:
            query["fieldSelector"] = field_selector
        answer = self._call("GET", resource_path(api_version, kind, namespace), query=query)
        items = answer.get("items", []) if isinstance(answer, dict) else []
        # Filter here too: a selector is a request, and cheap to enforce twice.
        return [item for item in items if labels.items() <= (item.get("metadata", {}).get("labels") or {}).items()]

    def create(self, manifest: dict) -> dict:
        meta = manifest["metadata"]
        path = resource_path(manifest["apiVersion"], manifest["kind"], meta.get("namespace"))
        return self._call("POST", path, body=manifest)

    def merge_patch(self, api_version: str, kind: str, namespace: str | None, name: str, patch: dict,
                    subresource: str | None = None) -> dict:
        path = resource_path(api_version, kind, namespace, name, subresource)
        try:
            return self._call("PATCH", path, body=patch, content_type="application/merge-patch+json")
        except ApiException as error:
            if error.status == 409:
                raise Conflict(str(error.reason)) from None
            raise

    def delete(self, api_version: str, kind: str, namespace: str | None, name: str) -> None:
        try:
            self._call("DELETE", resource_path(api_version, kind, namespace, name),
                       body={"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"})
        except ApiException as error:
            if error.status != 404:
                raise


@functools.cache
def shared() -> Kube:
    """The process's one client (created on first use, when the kubeconfig is in place)."""
    return Kube()


def covers(live, desired) -> bool:
    """Whether `live` already holds everything `desired` says (the apiserver may add defaults around it)."""
    if isinstance(desired, dict):
        return isinstance(live, dict) and all(covers(live.get(k), v) for k, v in desired.items())
    if isinstance(desired, list):
        return isinstance(live, list) and len(live) == len(desired) and all(map(covers, live, desired))
    return live == desired


STATUS_WRITE_ATTEMPTS = 5


class StatusConflict(RuntimeError):
    """The status kept changing under us; the handler's retry will try again."""


def update_status(kube: Kube, body: dict, compute) -> dict | None:
    """Write `compute(fresh_body)` into the LLMDeployment's status, guarded by the fresh resourceVersion.

    The operator and the autoscaler both write the status, and a merge patch replaces a list (conditions) whole:
    a write computed from a stale read would drop the other writer's fields. So every writer goes through here:
    read, compute and write with a precondition, and retry on conflicts. `compute` returns the status fields to
    merge, or None when there is nothing to write. Returns the fields written, or None when nothing was.
    """
    meta = body["metadata"]
    for _ in range(STATUS_WRITE_ATTEMPTS):
        fresh = kube.get(API_VERSION, KIND, meta["namespace"], meta["name"])
        if fresh is None or fresh["metadata"].get("uid") != meta.get("uid"):
            return None  # deleted meanwhile
        fields = compute(fresh)
        if fields is None or covers(fresh.get("status") or {}, fields):
            return None  # unchanged status writes would only wake every watcher
        patch = {"metadata": {"resourceVersion": fresh["metadata"]["resourceVersion"]}, "status": fields}
        try:
            kube.merge_patch(API_VERSION, KIND, meta["namespace"], meta["name"], patch, subresource="status")
            return fields
        except Conflict:
            continue
        except ApiException as error:
            if error.status == 404:
                return None  # deleted between the read and the write
            raise
    raise StatusConflict(f"status of {meta['namespace']}/{meta['name']} changed {STATUS_WRITE_ATTEMPTS} times while writing it")
