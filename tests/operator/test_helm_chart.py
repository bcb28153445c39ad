"""The Helm chart with the real helm binary: lint, template, Kubernetes schemas, RBAC that matches the code."""

import os
import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from fleetserve.kube import PLURALS

REPO = Path(__file__).parents[2]
CHART = REPO / "helm"
KUBERNETES_VERSIONS = ("1.29", kubernetes_validate.latest_version())


def helm_binary() -> str:
    found = shutil.which("helm") or (REPO / ".tools" / "helm")
    if not Path(found).exists():
        pytest.fail("helm not found: run `bash scripts/setup.sh --test` (installs .tools/helm)")
    return str(found)


@pytest.fixture(scope="module")
def helm(tmp_path_factory):
    home = tmp_path_factory.mktemp("helm")
    env = {**os.environ, "HELM_CACHE_HOME": str(home / "cache"), "HELM_CONFIG_HOME": str(home / "config"),
           "HELM_DATA_HOME": str(home / "data")}

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run([helm_binary(), *args], capture_output=True, text=True, timeout=60, env=env)
        if check:
            assert result.returncode == 0, result.stderr + result.stdout
        return result
    return run


def rendered(helm, *sets: str) -> list[dict]:
    args = [a for s in sets for a in ("--set", s)]
    out = helm("template", "fs", str(CHART), "--namespace", "fleetserve", "--include-crds", *args).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def test_lint_strict(helm):
    helm("lint", "--strict", str(CHART))
    helm("lint", "--strict", str(CHART), "--set", "replicaCount=3", "--set", "autoscaler.enabled=false")


@pytest.mark.parametrize("value", ["replicaCount=0", "image.pullPolicy=Sometimes", "autoscaler.prometheusUrl=ftp://x", "nonsense=1"])
def test_values_schema_rejects_bad_values(helm, value):
    result = helm("template", "fs", str(CHART), "--set", value, check=False)
    assert result.returncode != 0 and "values don't meet the specifications of the schema" in result.stderr


def test_chart_works_as_a_subchart_with_global_values(helm):
    helm("template", "fs", str(CHART), "--set", "global.imageRegistry=registry.example")


@pytest.mark.parametrize("sets", [(), ("replicaCount=2",), ("autoscaler.enabled=false", "verbose=true")], ids=str)
def test_template_output_is_valid_kubernetes(helm, sets):
    docs = rendered(helm, *sets)
    kinds = {d["kind"] for d in docs}
    assert {"CustomResourceDefinition", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Deployment"} <= kinds
    for doc in docs:
        if doc["kind"] == "ClusterKopfPeering":
            continue  # a CRD kind: no official schema
        for version in KUBERNETES_VERSIONS:
            kubernetes_validate.validate(doc, version, strict=True)


def operator_deployment(docs: list[dict]) -> dict:
    return next(d for d in docs if d["kind"] == "Deployment")


def test_operator_pod_is_non_root_with_limits_and_peering_for_replicas(helm):
    single = operator_deployment(rendered(helm))
    pod = single["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert pod["securityContext"]["runAsNonRoot"] and container["securityContext"]["readOnlyRootFilesystem"]
    assert container["resources"]["limits"]["memory"] and container["resources"]["limits"]["cpu"]
    assert container["args"][0] == "operator" and "--peering" not in container["args"]
    assert any(a.startswith("--prometheus-url=") for a in container["args"])
    docs = rendered(helm, "replicaCount=2")
    assert "--peering" in operator_deployment(docs)["spec"]["template"]["spec"]["containers"][0]["args"]
    assert any(d["kind"] == "ClusterKopfPeering" and d["metadata"]["name"] == "fleetserve" for d in docs)
    assert "--no-autoscaler" in operator_deployment(rendered(helm, "autoscaler.enabled=false"))["spec"]["template"]["spec"]["containers"][0]["args"]


def test_rbac_covers_exactly_what_the_code_uses_without_wildcards(helm):
    role = next(d for d in rendered(helm) if d["kind"] == "ClusterRole")
    grants = {}
    for rule in role["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                grants[(group, resource)] = set(rule["verbs"])
                assert "*" not in (group, resource) and "*" not in rule["verbs"]
    workloads = {"get", "list", "watch", "create", "patch", "delete"}
    children = {"get", "list", "create", "patch", "delete"}
    expected = {
        ("fleetserve.io", "llmdeployments"): {"get", "list", "watch", "patch"},
        ("fleetserve.io", "llmdeployments/status"): {"get", "patch"},
        ("fleetserve.io", "llmdeployments/finalizers"): {"update"},  # blockOwnerDeletion under admission
        ("apps", "deployments"): workloads, ("apps", "statefulsets"): workloads,
        ("leaderworkerset.x-k8s.io", "leaderworkersets"): workloads,
        ("", "services"): children, ("policy", "poddisruptionbudgets"): children,
        ("networking.k8s.io", "networkpolicies"): children, ("monitoring.coreos.com", "podmonitors"): children,
        # Each router's identity and Role; the operator holds what that Role grants (RBAC forbids granting more).
        ("", "serviceaccounts"): children, ("rbac.authorization.k8s.io", "roles"): children,
        ("rbac.authorization.k8s.io", "rolebindings"): children,
        ("discovery.k8s.io", "endpointslices"): {"get", "list", "watch"},
        ("", "pods"): {"get", "list", "watch", "patch"}, ("", "nodes"): {"get", "list", "watch"},
        ("", "events"): {"create", "patch"},
        ("apiextensions.k8s.io", "customresourcedefinitions"): {"get", "list", "watch"},
    }
    assert grants == expected
    peering = next(d for d in rendered(helm, "replicaCount=2") if d["kind"] == "ClusterRole")
    assert {"apiGroups": ["kopf.dev"], "resources": ["clusterkopfpeerings"], "verbs": ["get", "list", "watch", "patch"]} in peering["rules"]
    # Every kind the operator's client can address is granted (ClusterKopfPeering only with peering on).
    granted_groups = {group for rule in peering["rules"] for group in rule["apiGroups"]}
    for api_version, _ in PLURALS:
        assert (api_version.rsplit("/", 1)[0] if "/" in api_version else "") in granted_groups, api_version


def test_chart_ships_the_generated_crd(helm):
    crds = [d for d in rendered(helm) if d["kind"] == "CustomResourceDefinition"]
    assert {c["metadata"]["name"] for c in crds} == {"llmdeployments.fleetserve.io", "clusterkopfpeerings.kopf.dev"}
