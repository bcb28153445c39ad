"""Pure rendering: every example and edge case, each manifest validated against the Kubernetes schemas."""

import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from fleetserve.api import group_env
from fleetserve.api.placement import ImpossibleShape
from fleetserve.api.spec import OPERATOR_FLAGS, parse_resource
from fleetserve.operator import pod_template
from fleetserve.operator.render import ClusterFeatures, endpoint_url
from fleetserve.operator.render_cli import llm_deployments, render_manifests

REPO = Path(__file__).parents[2]
EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))
# The oldest Kubernetes we support (StatefulSet pod-index labels arrived in 1.28) and the newest schemas offline.
KUBERNETES_VERSIONS = ("1.29", kubernetes_validate.latest_version())


def load(name: str, uid: str | None = "0b5e-uid") -> dict:
    (body,) = llm_deployments((REPO / "examples" / name).read_text())
    if uid:
        body["metadata"]["uid"] = uid
    return body


def render(body: dict, pod_monitor: bool = False, leader_worker_set: bool = False) -> dict[tuple[str, str], dict]:
    features = ClusterFeatures(pod_monitor=pod_monitor, leader_worker_set=leader_worker_set)
    return {(m["kind"], m["metadata"]["name"]): m for m in render_manifests(body, features)}


def pod_spec(workload: dict) -> dict:
    template = workload["spec"].get("template") or workload["spec"]["leaderWorkerTemplate"]["workerTemplate"]
    return template["spec"]


def engine(manifest: dict) -> dict:
    return pod_spec(manifest)["containers"][0]


def flag(container: dict, name: str) -> str:
    args = container["args"]
    return args[args.index(name) + 1]


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_rendered_manifest_is_valid_kubernetes(path):
    manifests = render_manifests(load(path.name), ClusterFeatures(pod_monitor=True))
    for manifest in manifests:
        if manifest["kind"] in ("PodMonitor", "LeaderWorkerSet"):
            continue  # CRD kinds: no official schema to check against
        for version in KUBERNETES_VERSIONS:
            kubernetes_validate.validate(manifest, version, strict=True)
        assert manifest["metadata"]["ownerReferences"][0] == {
            "apiVersion": "fleetserve.io/v1alpha1", "kind": "LLMDeployment", "name": manifest["metadata"]["labels"]["app.kubernetes.io/instance"],
            "uid": "0b5e-uid", "controller": True, "blockOwnerDeletion": True}


def test_cpu_example_renders_one_hardened_pod_without_gpus():
    children = render(load("cpu-tiny.yaml"))
    assert set(children) == {("Deployment", "tiny-on-demand"), ("Service", "tiny-engines"), ("Service", "tiny"),
                             ("PodDisruptionBudget", "tiny-on-demand"), ("NetworkPolicy", "tiny"),
                             *((kind, "tiny-router") for kind in ("ServiceAccount", "Role", "RoleBinding", "Deployment",
                                                                  "NetworkPolicy"))}
    deployment = children[("Deployment", "tiny-on-demand")]
    pod = deployment["spec"]["template"]["spec"]
    container = engine(deployment)
    assert container["command"] == ["fleetserve"] and container["args"][:3] == ["serve", "--model", "builtin://smollm2-135m-instruct"]
    assert [flag(container, f) for f in ("--host", "--port", "--served-model-name", "--max-num-seqs", "--max-model-len",
                                         "--tensor-parallel-size", "--device")] == ["0.0.0.0", "8000", "tiny", "16", "2048", "1", "cpu"]
    assert "--gpu-memory-utilization" not in container["args"]  # unset: the engine's own default
    assert container["image"] == pod_template.DEFAULT_ENGINE_IMAGE  # resolved by the operator, not stored in the CR
    assert "nvidia.com/gpu" not in container["resources"]["requests"]
    assert container["ports"] == [{"name": "http", "containerPort": 8000, "protocol": "TCP"}]
    # H7: a busy or draining engine leaves the Service but is never restarted.
    assert container["startupProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["readinessProbe"]["timeoutSeconds"] == 3
    assert container["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "http"}
    security = container["securityContext"]
    assert security["runAsNonRoot"] and security["readOnlyRootFilesystem"] and security["capabilities"] == {"drop": ["ALL"]}
    assert security["seccompProfile"] == {"type": "RuntimeDefault"} and pod["securityContext"]["runAsNonRoot"]
    assert pod["securityContext"]["fsGroupChangePolicy"] == "OnRootMismatch"  # H10: no recursive chown of a model PVC
    # H9: a dead node's replica is replaced after 30 s, not the default 300 s.
    dead_node = {t["key"]: t for t in pod["tolerations"] if t["key"].startswith("node.kubernetes.io/")}
    assert dead_node == {key: {"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 30}
                         for key in ("node.kubernetes.io/unreachable", "node.kubernetes.io/not-ready")}
    assert not {"runtimeClassName", "serviceAccountName", "priorityClassName", "imagePullSecrets"} & set(pod)
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["dshm"]["emptyDir"]["medium"] == "Memory"
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert mounts["/dev/shm"] == "dshm" and mounts["/var/cache/fleetserve"] == "model-cache"
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["HF_HOME"].startswith("/var/cache/fleetserve")
    drain = int(flag(container, "--drain-seconds"))
    assert pod["terminationGracePeriodSeconds"] > drain
    assert container["lifecycle"]["preStop"]["exec"]["command"][0] == "sleep"


def test_labels_and_selectors_follow_the_autoscaler_contract():
    children = render(load("spot-mix.yaml"))
    for capacity in ("on-demand", "spot"):
        deployment = children[("Deployment", f"mix-{capacity}")]
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "fleetserve-engine" and labels["app.kubernetes.io/instance"] == "mix"
        assert labels["fleetserve.io/capacity"] == capacity and labels["fleetserve.io/serving"] == "true"
        assert "fleetserve.io/serving" not in deployment["spec"]["selector"]["matchLabels"]
    service = children[("Service", "mix-engines")]
    assert service["spec"]["selector"]["fleetserve.io/serving"] == "true"
    assert service["spec"]["type"] == "ClusterIP" and service["spec"]["ports"][0]["name"] == "http"


def test_spot_mix_splits_replicas_and_places_each_pool():
    children = render(load("spot-mix.yaml"))
    on_demand, spot = children[("Deployment", "mix-on-demand")], children[("Deployment", "mix-spot")]
    assert (on_demand["spec"]["replicas"], spot["spec"]["replicas"]) == (1, 4)
    # B4: a GKE example selects GPUs by GKE's own label.
    assert spot["spec"]["template"]["spec"]["nodeSelector"] == {"cloud.google.com/gke-spot": "true", "cloud.google.com/gke-accelerator": "nvidia-l4"}
    assert "nodeAffinity" in on_demand["spec"]["template"]["spec"]["affinity"]
    assert "cloud.google.com/gke-spot" not in on_demand["spec"]["template"]["spec"].get("nodeSelector", {})
    # Spot replicas spread over zones, so one zone's reclaim cannot take them all.
    (spread,) = spot["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert spread["topologyKey"] == "topology.kubernetes.io/zone"
    assert spread["labelSelector"]["matchLabels"] == spot["spec"]["selector"]["matchLabels"]
    assert "topologySpreadConstraints" not in on_demand["spec"]["template"]["spec"]


def test_autoscaler_plan_in_status_sets_the_counts():
    body = load("spot-mix.yaml")
    body["status"] = {"autoscaler": {"desiredOnDemand": 3, "desiredSpot": 9, "reason": "load", "time": "2026-01-01T00:00:00Z"}}
    children = render(body)
    assert children[("Deployment", "mix-on-demand")]["spec"]["replicas"] == 3
    assert children[("Deployment", "mix-spot")]["spec"]["replicas"] == 9
    body["spec"]["autoscaling"]["enabled"] = False  # without autoscaling the plan is ignored
    assert render(body)[("Deployment", "mix-spot")]["spec"]["replicas"] == 4


def test_tp4_is_one_pod_with_four_gpus_and_an_api_key():
    deployment = render(load("tp4.yaml"))[("Deployment", "chat-on-demand")]
    container = engine(deployment)
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "4"
    assert flag(container, "--tensor-parallel-size") == "4"
    assert flag(container, "--api-key-file") == "/var/run/fleetserve/api-key/token"
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes["api-key"]["secret"] == {"secretName": "chat-key", "items": [{"key": "token", "path": "token"}]}
    assert not any(e["name"].startswith("FLEETSERVE_") for e in container["env"])


def test_tp16_group_env_contract_is_pinned():
    children = render(load("tp16-multinode.yaml"))
    group = children[("StatefulSet", "big-on-demand-0")]
    env = engine(group)["env"]
    group_vars = [e for e in env if e["name"].startswith("FLEETSERVE_")]
    assert group_vars == [
        {"name": "FLEETSERVE_NNODES", "value": "2"},
        {"name": "FLEETSERVE_NODE_RANK", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['apps.kubernetes.io/pod-index']"}}},
        {"name": "FLEETSERVE_GPUS_PER_NODE", "value": "8"},
        {"name": "FLEETSERVE_LEADER_ADDR", "value": "big-on-demand-0-0.big-on-demand-group.default.svc"},
        {"name": "FLEETSERVE_LEADER_PORT", "value": "29500"},
    ]
    assert [e["name"] for e in group_vars] == [group_env.NNODES, group_env.NODE_RANK, group_env.GPUS_PER_NODE,
                                               group_env.LEADER_ADDR, group_env.LEADER_PORT]
    assert group["spec"]["podManagementPolicy"] == "Parallel" and group["spec"]["replicas"] == 2
    assert engine(group)["resources"]["limits"]["nvidia.com/gpu"] == "8"
    assert flag(engine(group), "--model") == "/models/model-weights/llama-3.1-405b-instruct"
    # Only group leaders are behind the Service; a disruption may take one whole group.
    assert children[("Service", "big-engines")]["spec"]["selector"]["apps.kubernetes.io/pod-index"] == "0"
    assert ("Service", "big-on-demand-group") in children


def test_tp16_group_as_leader_worker_set_where_installed():
    body = load("tp16-multinode.yaml")
    children = {(m["kind"], m["metadata"]["name"]): m
                for m in render_manifests(body, ClusterFeatures(leader_worker_set=True))}
    assert ("StatefulSet", "big-on-demand-0") not in children and ("Service", "big-on-demand-group") not in children
    lws = children[("LeaderWorkerSet", "big-on-demand")]
    assert lws["spec"]["replicas"] == 1
    assert lws["spec"]["leaderWorkerTemplate"]["size"] == 2
    assert lws["spec"]["leaderWorkerTemplate"]["restartPolicy"] == "RecreateGroupOnPodRestart"  # gang restarts
    env = lws["spec"]["leaderWorkerTemplate"]["workerTemplate"]["spec"]["containers"][0]["env"]
    assert [e for e in env if e["name"].startswith("FLEETSERVE_")] == [
        {"name": "FLEETSERVE_GROUP_INDEX", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['leaderworkerset.sigs.k8s.io/group-index']"}}},
        {"name": "FLEETSERVE_NNODES", "value": "2"},
        {"name": "FLEETSERVE_NODE_RANK", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['leaderworkerset.sigs.k8s.io/worker-index']"}}},
        {"name": "FLEETSERVE_GPUS_PER_NODE", "value": "8"},
        {"name": "FLEETSERVE_LEADER_ADDR", "value": "big-on-demand-$(FLEETSERVE_GROUP_INDEX).big-on-demand.default.svc"},
        {"name": "FLEETSERVE_LEADER_PORT", "value": "29500"},
    ]
    assert children[("Service", "big-engines")]["spec"]["selector"]["leaderworkerset.sigs.k8s.io/worker-index"] == "0"
    for version in KUBERNETES_VERSIONS:  # the pod template inside is a core PodTemplateSpec
        kubernetes_validate.validate({"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "t"},
                                      "template": lws["spec"]["leaderWorkerTemplate"]["workerTemplate"]}, version, strict=True)


def test_hf_revision_is_passed_as_part_of_the_model():
    container = engine(render(load("single-gpu.yaml"))[("Deployment", "qwen-7b-on-demand")])
    assert flag(container, "--model") == "hf://Qwen/Qwen2.5-7B-Instruct@main"


def test_scaled_to_zero_keeps_the_workload_at_zero():
    body = load("cpu-tiny.yaml")
    body["spec"]["replicas"] = {"min": 0, "max": 2}
    assert render(body)[("Deployment", "tiny-on-demand")]["spec"]["replicas"] == 0


def test_pod_monitor_only_where_the_crd_exists():
    assert ("PodMonitor", "tiny") not in render(load("cpu-tiny.yaml"))
    monitor = render(load("cpu-tiny.yaml"), pod_monitor=True)[("PodMonitor", "tiny")]
    assert monitor["spec"]["podMetricsEndpoints"] == [{"port": "http", "path": "/metrics", "interval": "15s"}]
    # W6: the autoscaler selects one deployment's series by the instance label the PodMonitor copies.
    assert monitor["spec"]["podTargetLabels"] == ["app.kubernetes.io/instance"]


def test_pod_monitor_carries_the_users_labels_and_scrapes_leaders_only():
    body = load("tp16-multinode.yaml")
    body["spec"]["monitoring"] = {"podMonitorLabels": {"release": "kube-prometheus-stack", "app.kubernetes.io/instance": "x"}}
    for lws, rank_label in ((False, group_env.POD_INDEX_LABEL), (True, group_env.LWS_WORKER_INDEX_LABEL)):
        monitor = render(body, pod_monitor=True, leader_worker_set=lws)[("PodMonitor", "big")]
        # B7: kube-prometheus-stack selects PodMonitors by its `release` label; the operator's own labels win.
        assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
        assert monitor["metadata"]["labels"]["app.kubernetes.io/instance"] == "big"
        # W18: workers answer 404 on /metrics.
        assert monitor["spec"]["selector"]["matchLabels"][rank_label] == "0"


def test_impossible_shape_is_an_error_naming_the_fields():
    body = load("tp16-multinode.yaml")
    body["spec"]["parallelism"]["tensor"] = 12
    with pytest.raises(ImpossibleShape, match="gpusPerNode=8"):
        render(body)


def run_cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "from fleetserve.cli import main; raise SystemExit(main())", "render", *args],
                          capture_output=True, text=True, timeout=60, cwd=REPO.parent, input=stdin)


def test_render_cli_prints_what_the_operator_applies():
    result = run_cli("-f", str(REPO / "examples" / "spot-mix.yaml"))
    assert result.returncode == 0, result.stderr
    printed = list(yaml.safe_load_all(result.stdout))
    assert printed == render_manifests(load("spot-mix.yaml", uid=None), ClusterFeatures())


def test_render_cli_rejects_an_invalid_cr_naming_the_field(tmp_path):
    body = load("cpu-tiny.yaml", uid=None)
    body["spec"]["engine"]["gpuMemoryUtilization"] = 2
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(body))
    result = run_cli("-f", str(path))
    assert result.returncode == 1 and result.stdout == ""
    assert "spec.engine.gpuMemoryUtilization" in result.stderr
    assert run_cli("-f", "-", stdin="just: [a, list").returncode == 2
    missing = run_cli("-f", str(tmp_path / "absent.yaml"))
    assert missing.returncode == 2 and "can't read" in missing.stderr


def test_model_token_env_and_env_from_reach_the_engine():
    body = load("spot-mix.yaml")
    body["spec"]["env"] = [{"name": "NCCL_DEBUG", "value": "WARN"},
                           {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}]
    body["spec"]["envFrom"] = [{"secretRef": {"name": "proxy"}, "prefix": "HTTP_"}]
    container = engine(render(body)[("Deployment", "mix-spot")])
    env = container["env"]
    # B2: the token comes from the Secret the spec names (key `token` by default), never from the CR itself.
    assert {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf-token", "key": "token"}}} in env
    # B1: hf:// must be able to download, so the pod never turns the Hub off (the engine does only for local sources).
    assert "HF_HUB_OFFLINE" not in {e["name"] for e in env}
    assert env[-2:] == body["spec"]["env"]  # after the operator's, so they may refer to them as $(VAR)
    assert container["envFrom"] == [{"prefix": "HTTP_", "secretRef": {"name": "proxy"}}]


def test_model_cache_is_a_sized_empty_dir_or_the_users_shared_pvc():
    body = load("single-gpu.yaml")
    deployment = render(body)[("Deployment", "qwen-7b-on-demand")]
    volumes = {v["name"]: v for v in pod_spec(deployment)["volumes"]}
    assert volumes["model-cache"] == {"name": "model-cache", "emptyDir": {"sizeLimit": "30Gi"}}
    assert engine(deployment)["resources"]["requests"]["ephemeral-storage"] == "30Gi"  # H4: the scheduler sees it

    body["spec"]["model"]["cache"] = {"pvcName": "hf-cache"}
    deployment = render(body)[("Deployment", "qwen-7b-on-demand")]
    volumes = {v["name"]: v for v in pod_spec(deployment)["volumes"]}
    assert volumes["model-cache"] == {"name": "model-cache", "persistentVolumeClaim": {"claimName": "hf-cache"}}
    assert "ephemeral-storage" not in engine(deployment)["resources"]["requests"]
    mounts = {m["name"]: m["mountPath"] for m in engine(deployment)["volumeMounts"]}
    env = {e["name"]: e.get("value") for e in engine(deployment)["env"]}
    assert env["HF_HOME"].startswith(mounts["model-cache"] + "/")  # H5: downloads land on the shared PVC


def test_gpu_pods_ask_for_cuda_and_pass_pod_settings():
    body = load("single-gpu.yaml")
    body["spec"] |= {"runtimeClassName": "nvidia", "serviceAccountName": "gcs-reader", "priorityClassName": "inference",
                     "imagePullSecrets": [{"name": "registry"}], "podAnnotations": {"k8s.v1.cni.cncf.io/networks": "rdma"}}
    deployment = render(body)[("Deployment", "qwen-7b-on-demand")]
    # B3: a pod holding GPUs that can't see them fails instead of serving on the CPU.
    assert flag(engine(deployment), "--device") == "cuda"
    pod = pod_spec(deployment)
    assert (pod["runtimeClassName"], pod["serviceAccountName"], pod["priorityClassName"]) == ("nvidia", "gcs-reader", "inference")
    assert pod["imagePullSecrets"] == [{"name": "registry"}] and pod["automountServiceAccountToken"] is False
    assert deployment["spec"]["template"]["metadata"]["annotations"] == {"k8s.v1.cni.cncf.io/networks": "rdma"}
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-L4"}  # the default label is GFD's
    for version in KUBERNETES_VERSIONS:
        kubernetes_validate.validate(deployment, version, strict=True)


def test_every_flag_the_operator_renders_is_one_extra_args_may_not_set():
    body = load("tp4.yaml")
    body["spec"]["engine"] |= {"gpuMemoryUtilization": 0.8, "image": "registry.example/engine:dev"}
    container = engine(render(body)[("Deployment", "chat-on-demand")])
    assert container["image"] == "registry.example/engine:dev"
    rendered = {arg for arg in container["args"] if arg.startswith("--")}
    assert rendered == set(OPERATOR_FLAGS)


def test_spot_pods_drain_inside_the_reclaim_notice():
    children = render(load("spot-mix.yaml"))
    on_demand, spot = (pod_spec(children[("Deployment", f"mix-{c}")]) for c in ("on-demand", "spot"))
    # W16: GKE gives a reclaimed pod 15 s: 5 s of preStop plus the spot drain fit; the grace period fits its 30 s.
    assert flag(spot["containers"][0], "--drain-seconds") == "10"
    assert pod_template.PRESTOP_SLEEP_SECONDS + 10 <= 15 and spot["terminationGracePeriodSeconds"] <= 30
    assert flag(on_demand["containers"][0], "--drain-seconds") == "30"
    assert on_demand["terminationGracePeriodSeconds"] > 30


def test_one_disruption_budget_per_pool_one_pod_at_a_time():
    for example, pools in (("spot-mix.yaml", ("on-demand", "spot")), ("tp16-multinode.yaml", ("on-demand",))):
        children = render(load(example))
        name = load(example)["metadata"]["name"]
        budgets = {n: c["spec"] for (kind, n), c in children.items() if kind == "PodDisruptionBudget"}
        assert set(budgets) == {f"{name}-{pool}" for pool in pools}
        for pool in pools:
            # W8: Pending spot pods can't block on-demand drains; evicting any group member stops the group anyway.
            assert budgets[f"{name}-{pool}"] == {
                "maxUnavailable": 1, "unhealthyPodEvictionPolicy": "AlwaysAllow",
                "selector": {"matchLabels": {"app.kubernetes.io/name": "fleetserve-engine",
                                             "app.kubernetes.io/instance": name, "fleetserve.io/capacity": pool}}}


def test_groups_stay_in_one_zone_and_only_leaders_spread():
    body = load("tp16-multinode.yaml")
    body["spec"]["capacity"]["spot"] = {"enabled": True, "maxShare": 1}
    body["spec"]["capacity"]["onDemand"] = {"minReplicas": 0}
    body["spec"]["replicas"] = {"min": 2, "max": 2}
    statefulset = render(body)[("StatefulSet", "big-spot-0")]
    pod = pod_spec(statefulset)
    # W9: a tensor-parallel group all-reduces every layer, so its members share a zone...
    (together,) = pod["affinity"]["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert together == {"topologyKey": "topology.kubernetes.io/zone",
                        "labelSelector": {"matchLabels": {"fleetserve.io/group": "big-spot-0"}}}
    assert statefulset["spec"]["template"]["metadata"]["labels"]["fleetserve.io/group"] == "big-spot-0"
    # ...and replicas, not pods, spread over zones: only leaders count.
    (spread,) = pod["topologySpreadConstraints"]
    assert spread["labelSelector"]["matchLabels"][group_env.POD_INDEX_LABEL] == "0"

    lws = render(body, leader_worker_set=True)[("LeaderWorkerSet", "big-spot")]
    (together,) = pod_spec(lws)["affinity"]["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert together["matchLabelKeys"] == [group_env.LWS_GROUP_INDEX_LABEL]
    assert together["labelSelector"]["matchLabels"]["fleetserve.io/capacity"] == "spot"
    (spread,) = pod_spec(lws)["topologySpreadConstraints"]
    assert spread["labelSelector"]["matchLabels"][group_env.LWS_WORKER_INDEX_LABEL] == "0"


def test_addresses_work_with_any_cluster_domain():
    spec = parse_resource(load("cpu-tiny.yaml"))
    assert endpoint_url("tiny", "team-a", spec) == "http://tiny.team-a.svc:8000/v1"  # W14: no cluster.local
    for lws in (False, True):
        manifests = render_manifests(load("tp16-multinode.yaml"), ClusterFeatures(leader_worker_set=lws))
        assert "cluster.local" not in yaml.safe_dump_all(manifests)


def test_render_cli_renders_the_llm_deployment_beside_an_examples_secret():
    result = run_cli("-f", str(REPO / "examples" / "tp4.yaml"))
    assert result.returncode == 0, result.stderr
    assert [m["kind"] for m in yaml.safe_load_all(result.stdout)] == [
        "Deployment", "Service", "Service", "PodDisruptionBudget", "NetworkPolicy",
        "ServiceAccount", "Role", "RoleBinding", "Deployment", "NetworkPolicy"]
    secret = yaml.safe_dump({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}})
    result = run_cli("-f", "-", stdin=secret)
    assert result.returncode == 2 and "holds no LLMDeployment" in result.stderr
