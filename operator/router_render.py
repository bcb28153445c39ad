"""Pure rendering of the router in front of an LLMDeployment's engines (`fleetserve router`): its Deployment, the
ServiceAccount, Role and RoleBinding it watches EndpointSlices and asks for a replica with, and its NetworkPolicy.

The Services and PodMonitors, which select either engines or routers, are rendered with the others in render.py.
"""

from fleetserve.api.labels import (
    COMPONENT_LABEL, INSTANCE_LABEL, MANAGED_BY, MANAGED_BY_LABEL, NAME_LABEL, ON_DEMAND, ROUTER_COMPONENT, ROUTER_NAME,
)
from fleetserve.api.routing import ROUTER_PORT, router_name
from fleetserve.api.spec import GROUP, PLURAL, LLMDeploymentSpec
from fleetserve.operator import pod_template as pods
from fleetserve.operator.owned import child_labels, child_meta


def router_selector(name: str) -> dict:
    return {NAME_LABEL: ROUTER_NAME, INSTANCE_LABEL: name}


def _meta(body: dict) -> dict:
    name = body["metadata"]["name"]
    return child_meta(body, router_name(name), child_labels(name, ROUTER_NAME))


def router_args(name: str, namespace: str, spec: LLMDeploymentSpec) -> list[str]:
    args = ["router", "--llmdeployment", name, "--namespace", namespace,
            "--host", "0.0.0.0", "--port", str(ROUTER_PORT), "--policy", spec.router.policy]
    if spec.serving.api_key_secret_ref:
        # For the router's own reads of each replica's /v1/tokenizer and /metrics; clients' headers pass as-is.
        args += ["--api-key-file", pods.api_key_file(spec)]
    return args


def _placement(name: str, spec: LLMDeploymentSpec) -> dict:
    """Where on-demand engines may run (the pool's selectors and tolerations, off spot nodes, whose reclaim would
    cut every client off), without asking for their GPUs."""
    placement = pods.placement(spec, ON_DEMAND, name, 0, None)
    del placement["affinity"]["podAntiAffinity"]  # spreading is for engine replicas
    if not placement["affinity"]:
        del placement["affinity"]
    return placement


def _deployment(body: dict, spec: LLMDeploymentSpec) -> dict:
    name, namespace = body["metadata"]["name"], body["metadata"]["namespace"]
    volumes = [{"name": "tmp", "emptyDir": {}}]
    mounts = [{"name": "tmp", "mountPath": "/tmp"}]
    if spec.serving.api_key_secret_ref:
        volume, mount = pods.api_key_volume(spec)
        volumes.append(volume)
        mounts.append(mount)
    resources = spec.router.resources

    def probe(period: int, timeout: int) -> dict:
        return {"httpGet": {"path": "/health", "port": "http"}, "periodSeconds": period, "timeoutSeconds": timeout}
    container = {
        "name": "router",
        "image": pods.engine_image(spec),  # the engine image holds the whole fleetserve package
        "imagePullPolicy": "IfNotPresent",
        "command": ["fleetserve"],
        "args": router_args(name, namespace, spec),
        "ports": [{"name": "http", "containerPort": ROUTER_PORT, "protocol": "TCP"}],
        "env": [{"name": "HOME", "value": "/tmp"}],  # the root filesystem is read-only
        "resources": {"requests": {"cpu": resources.cpu, "memory": resources.memory},
                      "limits": {"memory": resources.memory}},
        # Liveness waits for the startup probe: a router starting on a node busy loading engines (seconds of
        # imports and its first EndpointSlice list) must not be killed before it first answers.
        "startupProbe": {**probe(2, 3), "failureThreshold": 90},
        "readinessProbe": probe(5, 3),
        "livenessProbe": {**probe(10, 5), "failureThreshold": 3},
        "securityContext": pods.container_security_context(),
        "volumeMounts": mounts,
    }
    pod: dict = {
        "serviceAccountName": router_name(name),
        "automountServiceAccountToken": True,  # it watches EndpointSlices and patches the LLMDeployment
        "enableServiceLinks": False,
        "securityContext": pods.pod_security_context(),
        "containers": [container],
        "volumes": volumes,
        **_placement(name, spec),
    }
    if spec.image_pull_secrets:  # the same image as the engines, from the same registry
        pod["imagePullSecrets"] = [s.model_dump() for s in spec.image_pull_secrets]
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": _meta(body),
        "spec": {
            "replicas": spec.router.replicas,
            "selector": {"matchLabels": router_selector(name)},
            "template": {"metadata": {"labels": {**router_selector(name), COMPONENT_LABEL: ROUTER_COMPONENT,
                                                 MANAGED_BY_LABEL: MANAGED_BY}},
                         "spec": pod},
        },
    }


def _service_account(body: dict) -> dict:
    return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(body)}


def _role(body: dict) -> dict:
    """What fleetserve.router.discovery does; the operator holds each of these grants itself (RBAC lets nobody
    grant more than it has)."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": _meta(body),
        "rules": [
            {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["get", "list", "watch"]},
            # The wake annotation on its own LLMDeployment only.
            {"apiGroups": [GROUP], "resources": [PLURAL], "resourceNames": [body["metadata"]["name"]],
             "verbs": ["get", "patch"]},
        ],
    }


def _role_binding(body: dict) -> dict:
    name = router_name(body["metadata"]["name"])
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": _meta(body),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": body["metadata"]["namespace"]}],
    }


def _network_policy(body: dict) -> dict:
    """Clients and Prometheus reach the router's HTTP port; the router reaches the engines through theirs, which
    the engines' own policy opens."""
    return {
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": _meta(body),
        "spec": {
            "podSelector": {"matchLabels": router_selector(body["metadata"]["name"])},
            "policyTypes": ["Ingress"],
            "ingress": [{"ports": [{"port": "http", "protocol": "TCP"}]}],
        },
    }


def router_children(body: dict, spec: LLMDeploymentSpec) -> list[dict]:
    """In apply order: the identity and its grants before the pods that use them."""
    return [_service_account(body), _role(body), _role_binding(body), _deployment(body, spec), _network_policy(body)]
