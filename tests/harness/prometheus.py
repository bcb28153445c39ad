"""A real Prometheus server for tests (upstream's, built with the control plane by scripts/control-plane/build.sh):
static targets, or pods discovered through the local control plane's apiserver (`kubernetes_sd_configs`) with the
scrape config prometheus-operator would generate from a PodMonitor."""

import json
import subprocess
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import yaml

from harness.kube import Api, Kubeconfig, control_plane_bin
from harness.ports import free_port

PROMETHEUS_NAMESPACE = "monitoring"
PROMETHEUS_ACCOUNT = "prometheus"


@dataclass
class PrometheusServer:
    url: str
    process: subprocess.Popen
    log_path: Path

    def query(self, promql: str) -> list[dict]:
        """Instant query; returns the result vector (empty when nothing matches yet)."""
        address = f"{self.url}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"
        with urllib.request.urlopen(address, timeout=5) as response:
            body = json.load(response)
        assert body["status"] == "success", body
        return body["data"]["result"]

    def wait_for(self, promql: str, timeout: float = 30.0) -> list[dict]:
        """Polls until the query returns something: the first scrape lands a few seconds after start."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"prometheus exited early; log:\n{self.log_path.read_text()[-3000:]}")
            result = self.query(promql)
            if result:
                return result
            time.sleep(0.5)
        raise TimeoutError(f"no result for {promql!r} within {timeout}s")

    def series_names(self) -> set[str]:
        with urllib.request.urlopen(f"{self.url}/api/v1/label/__name__/values", timeout=5) as response:
            return set(json.load(response)["data"])

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()


def static_job(targets: list[str], labels: dict[str, str] | None = None) -> dict:
    """A scrape job of fixed targets; `labels` go on every sample, as relabelling adds `namespace` and pod labels."""
    return {"job_name": "fleetserve", "static_configs": [{"targets": targets, "labels": labels or {}}]}


def label_name(key: str) -> str:
    """A Kubernetes label key as a Prometheus label name, as prometheus-operator and kubernetes_sd spell it."""
    return "".join(c if c.isalnum() else "_" for c in key)


def pod_monitor_job(monitor: dict, api: Api, token_file: Path) -> dict:
    """The scrape job prometheus-operator generates for a PodMonitor (the parts ours use): pods of its namespace
    matching its selector, at their named port, with namespace, pod, container and its podTargetLabels as labels."""
    meta, spec = monitor["metadata"], monitor["spec"]
    endpoint = spec["podMetricsEndpoints"][0]
    keep = [{"action": "keep", "source_labels": [f"__meta_kubernetes_pod_label_{label_name(k)}",
                                                 f"__meta_kubernetes_pod_labelpresent_{label_name(k)}"],
             "regex": f"({v});true"} for k, v in spec["selector"]["matchLabels"].items()]
    keep.append({"action": "keep", "source_labels": ["__meta_kubernetes_pod_container_port_name"],
                 "regex": endpoint["port"]})
    keep.append({"action": "drop", "source_labels": ["__meta_kubernetes_pod_phase"], "regex": "(Failed|Succeeded)"})
    labels = [{"source_labels": [f"__meta_kubernetes_{source}"], "target_label": target} for source, target in (
        ("namespace", "namespace"), ("pod_name", "pod"), ("pod_container_name", "container"))]
    labels += [{"source_labels": [f"__meta_kubernetes_pod_label_{label_name(key)}"], "target_label": label_name(key)}
               for key in spec.get("podTargetLabels", [])]
    return {
        "job_name": f"podMonitor/{meta['namespace']}/{meta['name']}",
        "scrape_interval": endpoint.get("interval", "15s"),
        "metrics_path": endpoint.get("path", "/metrics"),
        "kubernetes_sd_configs": [{"role": "pod", "api_server": api.kubeconfig.server,
                                   "namespaces": {"names": [meta["namespace"]]},
                                   "tls_config": {"ca_file": api.kubeconfig.ca},
                                   "authorization": {"credentials_file": str(token_file)}}],
        "relabel_configs": keep + labels,
    }


def prometheus_token(api: Api, folder: Path) -> Path:
    """A token of a `prometheus` ServiceAccount allowed to discover pods, as kube-prometheus-stack grants it."""
    for path, body in (
        ("/api/v1/namespaces", {"metadata": {"name": PROMETHEUS_NAMESPACE}}),
        (f"/api/v1/namespaces/{PROMETHEUS_NAMESPACE}/serviceaccounts", {"metadata": {"name": PROMETHEUS_ACCOUNT}}),
        ("/apis/rbac.authorization.k8s.io/v1/clusterroles", {"metadata": {"name": "fleetserve-test-prometheus"}, "rules": [
            {"apiGroups": [""], "resources": ["pods", "services", "endpoints"], "verbs": ["get", "list", "watch"]}]}),
        ("/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", {
            "metadata": {"name": "fleetserve-test-prometheus"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "fleetserve-test-prometheus"},
            "subjects": [{"kind": "ServiceAccount", "name": PROMETHEUS_ACCOUNT, "namespace": PROMETHEUS_NAMESPACE}]}),
    ):
        try:
            api.request("POST", path, body)
        except Exception as error:  # noqa: BLE001 - already there from an earlier test
            if getattr(error, "status", None) != 409:
                raise
    token = api.request("POST", f"/api/v1/namespaces/{PROMETHEUS_NAMESPACE}/serviceaccounts/{PROMETHEUS_ACCOUNT}/token",
                        {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                         "spec": {"expirationSeconds": 6 * 3600}})["status"]["token"]
    path = folder / "prometheus-token"
    path.write_text(token)
    return path


def start_prometheus(workdir: Path, jobs: list[dict], scrape_interval: str = "1s", port: int | None = None) -> PrometheusServer:
    binary = control_plane_bin() / "prometheus"  # upstream's build: Debian's has no kubernetes_sd_configs
    config = workdir / "prometheus.yml"
    config.write_text(yaml.safe_dump({
        "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
        "scrape_configs": jobs}))
    port = port or free_port()
    log_path = workdir / "prometheus.log"
    process = subprocess.Popen(
        [binary, f"--config.file={config}", f"--storage.tsdb.path={workdir / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}", "--web.enable-lifecycle"],
        stdout=log_path.open("w"), stderr=subprocess.STDOUT)
    server = PrometheusServer(f"http://127.0.0.1:{port}", process, log_path)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{server.url}/-/ready", timeout=2) as response:
                if response.status == 200:
                    return server
        except OSError:
            if process.poll() is not None:
                break
            time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"prometheus did not become ready; log:\n{log_path.read_text()[-3000:]}")


def start_cluster_prometheus(admin: Kubeconfig, workdir: Path, pod_monitors: list[dict],
                             scrape_interval: str = "2s", port: int | None = None) -> PrometheusServer:
    """Prometheus discovering pods through the apiserver, one job per PodMonitor (read from the cluster)."""
    api = Api(admin)
    token = prometheus_token(api, workdir)
    jobs = [{**pod_monitor_job(m, api, token), "scrape_interval": scrape_interval} for m in pod_monitors]
    return start_prometheus(workdir, jobs, scrape_interval, port)
