"""Pure rendering of the router in front of each LLMDeployment's engines: on by default, opt-out in the spec."""

import argparse
import subprocess
import sys
import typing
from pathlib import Path

import yaml

from fleetserve.api.routing import ROUTER_PORT
from fleetserve.api.spec import MAX_NAME_LENGTH, RouterSpec, parse_resource
from fleetserve.operator.render import ClusterFeatures, endpoint_url
from fleetserve.operator.render_cli import llm_deployments, render_manifests
from fleetserve.router import cli as router_cli
from fleetserve.router.policy import POLICIES

REPO = Path(__file__).parents[2]
ROUTER_KINDS = ("ServiceAccount", "Role", "RoleBinding", "Deployment", "NetworkPolicy")
ENGINES = {"app.kubernetes.io/name": "fleetserve-engine", "app.kubernetes.io/instance": "tiny", "fleetserve.io/serving": "true"}
ROUTERS = {"app.kubernetes.io/name": "fleetserve-router", "app.kubernetes.io/instance": "tiny"}


def load(name: str, **spec) -> dict:
    (body,) = llm_deployments((REPO / "examples" / name).read_text())
    body["metadata"] |= {"namespace": "team-a", "uid": "0b5e-uid"}
    body["spec"] |= spec
    return body


def render(body: dict, pod_monitor: bool = False) -> dict[tuple[str, str], dict]:
    return {(m["kind"], m["metadata"]["name"]): m for m in render_manifests(body, ClusterFeatures(pod_monitor=pod_monitor))}


def router_container(children: dict, name: str = "tiny") -> dict:
    return children[("Deployment", f"{name}-router")]["spec"]["template"]["spec"]["containers"][0]


def test_the_router_is_on_by_default_and_the_client_service_selects_it():
    children = render(load("cpu-tiny.yaml"))
    assert {("Service", "tiny"), ("Service", "tiny-engines"), *((k, "tiny-router") for k in ROUTER_KINDS)} <= set(children)
    client, engines = children[("Service", "tiny")], children[("Service", "tiny-engines")]
    assert client["spec"]["selector"] == ROUTERS and engines["spec"]["selector"] == ENGINES
    # Clients keep the port they had; the router watches the engine Service's port by its name `http`.
    http = {"name": "http", "port": 8000, "targetPort": "http", "protocol": "TCP"}
    assert client["spec"]["ports"] == engines["spec"]["ports"] == [http]
    assert endpoint_url("tiny", "team-a", parse_resource(load("cpu-tiny.yaml"))) == "http://tiny.team-a.svc:8000/v1"

    deployment = children[("Deployment", "tiny-router")]
    assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["selector"]["matchLabels"] == ROUTERS
    pod = deployment["spec"]["template"]["spec"]
    container = router_container(children)
    engine_pod = children[("Deployment", "tiny-on-demand")]["spec"]["template"]["spec"]
    assert container["image"] == engine_pod["containers"][0]["image"]  # one image holds the whole package
    assert container["command"] == ["fleetserve"] and container["args"] == [
        "router", "--llmdeployment", "tiny", "--namespace", "team-a", "--host", "0.0.0.0", "--port", "8080",
        "--policy", "prefix"]
    assert container["ports"] == [{"name": "http", "containerPort": ROUTER_PORT, "protocol": "TCP"}]
    assert (container["startupProbe"]["httpGet"] == container["readinessProbe"]["httpGet"]
            == container["livenessProbe"]["httpGet"] == {"path": "/health", "port": "http"})
    # Liveness starts only once the router first answered, which may take minutes on a node loading engines.
    assert container["startupProbe"]["periodSeconds"] * container["startupProbe"]["failureThreshold"] >= 120
    assert container["resources"] == {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"memory": "1Gi"}}
    # The engines' restricted security context; unlike them it needs its token (EndpointSlices, the wake annotation).
    assert container["securityContext"] == engine_pod["containers"][0]["securityContext"]
    assert pod["securityContext"] == engine_pod["securityContext"]
    assert pod["serviceAccountName"] == "tiny-router" and pod["automountServiceAccountToken"] is True


def test_the_routers_flags_are_the_ones_fleetserve_router_takes():
    parser = argparse.ArgumentParser()
    router_cli.add_arguments(parser)
    for policy in POLICIES:
        args = router_container(render(load("cpu-tiny.yaml", router={"policy": policy})))["args"]
        parsed = parser.parse_args(args[1:])
        assert router_cli.check(parsed) is None
        assert (parsed.llmdeployment, parsed.namespace, parsed.port, parsed.policy) == ("tiny", "team-a", 8080, policy)


def test_the_spec_offers_exactly_the_routers_policies():
    assert typing.get_args(RouterSpec.model_fields["policy"].annotation) == POLICIES


def test_router_off_leaves_the_engines_behind_the_client_service():
    children = render(load("cpu-tiny.yaml", router={"enabled": False}), pod_monitor=True)
    assert children[("Service", "tiny")]["spec"]["selector"] == ENGINES
    assert not [key for key in children if key[1] in ("tiny-engines", "tiny-router")]


def test_the_router_may_read_endpoint_slices_and_wake_only_its_own_deployment():
    children = render(load("cpu-tiny.yaml"))
    role, binding = children[("Role", "tiny-router")], children[("RoleBinding", "tiny-router")]
    assert role["rules"] == [
        {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": ["fleetserve.io"], "resources": ["llmdeployments"], "resourceNames": ["tiny"], "verbs": ["get", "patch"]},
    ]
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "tiny-router"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "tiny-router", "namespace": "team-a"}]
    # Applied before the Deployment whose pods use them.
    order = [(m["kind"], m["metadata"]["name"]) for m in render_manifests(load("cpu-tiny.yaml"), ClusterFeatures())]
    assert order.index(("RoleBinding", "tiny-router")) < order.index(("Deployment", "tiny-router"))
    policy = children[("NetworkPolicy", "tiny-router")]["spec"]
    assert policy["podSelector"] == {"matchLabels": ROUTERS} and policy["ingress"] == [{"ports": [{"port": "http", "protocol": "TCP"}]}]


def test_with_an_api_key_the_router_reads_replicas_with_the_engines_key():
    children = render(load("tp4.yaml", router={"policy": "least-loaded", "replicas": 2}))
    deployment = children[("Deployment", "chat-router")]
    container = router_container(children, "chat")
    assert container["args"][-3:] == ["least-loaded", "--api-key-file", "/var/run/fleetserve/api-key/token"]
    assert deployment["spec"]["replicas"] == 2
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes["api-key"]["secret"] == {"secretName": "chat-key", "items": [{"key": "token", "path": "token"}]}
    assert {"name": "api-key", "mountPath": "/var/run/fleetserve/api-key", "readOnly": True} in container["volumeMounts"]
    assert "--api-key-file" not in router_container(render(load("cpu-tiny.yaml")))["args"]


def test_the_routers_metrics_are_scraped_with_the_users_labels():
    body = load("cpu-tiny.yaml", monitoring={"podMonitorLabels": {"release": "kube-prometheus-stack"}})
    assert ("PodMonitor", "tiny-router") not in render(body)
    monitor = render(body, pod_monitor=True)[("PodMonitor", "tiny-router")]
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert monitor["metadata"]["labels"]["app.kubernetes.io/instance"] == "tiny"
    assert monitor["spec"]["selector"] == {"matchLabels": ROUTERS}
    assert monitor["spec"]["podMetricsEndpoints"] == [{"port": "http", "path": "/metrics", "interval": "15s"}]
    assert monitor["spec"]["podTargetLabels"] == ["app.kubernetes.io/instance"]
    engines = render(body, pod_monitor=True)[("PodMonitor", "tiny")]
    assert engines["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"] == "fleetserve-engine"


def test_the_longest_name_leaves_room_for_router_pod_names():
    body = load("cpu-tiny.yaml")
    body["metadata"]["name"] = "a" * MAX_NAME_LENGTH
    names = [m["metadata"]["name"] for m in render_manifests(body, ClusterFeatures())]
    # A Deployment's pods add "-<10-character hash>-<5 characters>"; a Service name is a 63-character label.
    assert max(len(n) for n in names) + 17 <= 63


def test_render_cli_shows_the_router():
    result = subprocess.run([sys.executable, "-c", "from fleetserve.cli import main; raise SystemExit(main())", "render",
                             "-f", str(REPO / "examples" / "cpu-tiny.yaml")], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    printed = {(m["kind"], m["metadata"]["name"]) for m in yaml.safe_load_all(result.stdout)}
    assert {("Service", "tiny"), ("Service", "tiny-engines"), *((k, "tiny-router") for k in ROUTER_KINDS)} <= printed


def test_the_router_runs_where_on_demand_engines_may_and_never_on_spot():
    spot_mix = render(load("spot-mix.yaml"))
    pod = spot_mix[("Deployment", "mix-router")]["spec"]["template"]["spec"]
    engine = spot_mix[("Deployment", "mix-on-demand")]["spec"]["template"]["spec"]
    assert pod["affinity"] == {"nodeAffinity": engine["affinity"]["nodeAffinity"]}  # off the spot nodes
    assert "nvidia.com/gpu" not in str(pod.get("tolerations")) and "resources" not in pod
    pinned = load("cpu-tiny.yaml", capacity={"onDemand": {"nodeSelector": {"pool": "system"},
                                                          "tolerations": [{"key": "dedicated", "operator": "Exists"}]}})
    pod = render(pinned)[("Deployment", "tiny-router")]["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"pool": "system"} and {"key": "dedicated", "operator": "Exists"} in pod["tolerations"]
