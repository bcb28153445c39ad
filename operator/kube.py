"""A thin, generic Kubernetes API client: paths by apiVersion and kind, JSON in and out, merge patches.

Built on the official client's ApiClient so kubeconfig and in-cluster credentials work as kopf's do.
"""

import json

import kubernetes
from kubernetes.client.exceptions import ApiException

# Every kind the operator reads or writes; RBAC in helm/templates/rbac.yaml must match this table.
PLURALS = {
    ("v1", "Service"): "services",
    ("v1", "Pod"): "pods",
    ("apps/v1", "Deployment"): "deployments",
    ("apps/v1", "StatefulSet"): "statefulsets",
    ("policy/v1", "PodDisruptionBudget"): "poddisruptionbudgets",
    ("networking.k8s.io/v1", "NetworkPolicy"): "networkpolicies",
    ("monitoring.coreos.com/v1", "PodMonitor"): "podmonitors",
    ("leaderworkerset.x-k8s.io/v1", "LeaderWorkerSet"): "leaderworkersets",
    ("fleetserve.io/v1alpha1", "LLMDeployment"): "llmdeployments",
    ("apiextensions.k8s.io/v1", "CustomResourceDefinition"): "customresourcedefinitions",
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

    def list(self, api_version: str, kind: str, namespace: str, labels: dict[str, str]) -> list[dict]:
        selector = ",".join(f"{k}={v}" for k, v in labels.items())
        answer = self._call("GET", resource_path(api_version, kind, namespace), query={"labelSelector": selector})
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
