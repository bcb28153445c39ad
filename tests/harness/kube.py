"""A test client for the local control plane (scripts/local-cluster.sh): raw API calls with discovery, kubectl
and helm, each test in a namespace of its own.

It talks to the real kube-apiserver with the admin token, the way a user at a terminal would; the operator under
test runs separately with the chart's ServiceAccount token (harness.operator_process).
"""

import asyncio
import os
import ssl
import subprocess
import time
import uuid
from collections.abc import Callable
from functools import cache
from pathlib import Path

import httpx
import yaml

REPO = Path(__file__).parents[2]
TOOLS = REPO / ".tools"
WAIT_TIMEOUT = 30
COMMAND_TIMEOUT = 60


class ApiError(Exception):
    def __init__(self, status: int, body: dict | str, what: str) -> None:
        self.status, self.body = status, body
        message = body.get("message", body) if isinstance(body, dict) else body
        super().__init__(f"{what}: HTTP {status}: {message}")


def tool(name: str) -> str:
    path = TOOLS / name
    if not path.exists():
        raise RuntimeError(f"{name} not found in .tools/: run `bash scripts/setup.sh --test`")
    return str(path)


class Kubeconfig:
    def __init__(self, path: Path) -> None:
        config = yaml.safe_load(path.read_text())
        self.path = path
        self.server = config["clusters"][0]["cluster"]["server"]
        self.ca = config["clusters"][0]["cluster"]["certificate-authority"]
        self.token = config["users"][0]["user"]["token"]

    def with_token(self, path: Path, user: str, token: str, namespace: str = "default") -> "Kubeconfig":
        """A kubeconfig for the same cluster and another identity (a ServiceAccount token)."""
        path.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "local",
            "clusters": [{"name": "local", "cluster": {"server": self.server, "certificate-authority": self.ca}}],
            "users": [{"name": user, "user": {"token": token}}],
            "contexts": [{"name": "local", "context": {"cluster": "local", "user": user, "namespace": namespace}}],
        }))
        return Kubeconfig(path)


class Api:
    """JSON in and out over HTTPS; paths come from the apiserver's own discovery, so any kind (CRDs too) works."""

    def __init__(self, kubeconfig: Kubeconfig) -> None:
        self.kubeconfig = kubeconfig
        self.http = httpx.Client(base_url=kubeconfig.server, verify=ssl.create_default_context(cafile=kubeconfig.ca),
                                 timeout=COMMAND_TIMEOUT,
                                 headers={"Authorization": f"Bearer {kubeconfig.token}"})
        self._resources: dict[tuple[str, str], tuple[str, bool]] = {}

    def request(self, method: str, path: str, body=None, content_type: str = "application/json",
                params: dict | None = None) -> dict:
        response = self.http.request(method, path, json=body, params=params, headers={"Content-Type": content_type})
        answer = response.json() if response.content else {}
        if response.status_code >= 300:
            raise ApiError(response.status_code, answer, f"{method} {path}")
        return answer

    def resource(self, api_version: str, kind: str) -> tuple[str, bool]:
        """(plural, namespaced) of a kind; re-discovered on a miss, since tests install CRDs as they go."""
        if (api_version, kind) not in self._resources:
            prefix = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
            for item in self.request("GET", prefix)["resources"]:
                if "/" not in item["name"]:
                    self._resources[(api_version, item["kind"])] = (item["name"], item["namespaced"])
        return self._resources[(api_version, kind)]

    def path(self, api_version: str, kind: str, namespace: str | None, name: str | None = None,
             subresource: str | None = None) -> str:
        plural, namespaced = self.resource(api_version, kind)
        parts = ["/api/v1" if api_version == "v1" else f"/apis/{api_version}"]
        if namespaced and namespace:
            parts.append(f"namespaces/{namespace}")
        parts += [p for p in (plural, name, subresource) if p]
        return "/".join(parts)


class Cluster:
    """The control plane as one test sees it: its own namespace, the admin identity, kubectl and waiting."""

    def __init__(self, kubeconfig: Kubeconfig, namespace: str, workdir: Path) -> None:
        self.kubeconfig, self.namespace, self.workdir = kubeconfig, namespace, workdir
        self.api = Api(kubeconfig)
        self.cluster_scoped: list[tuple[str, str, str]] = []  # what the test added beside its namespace

    async def add_node(self, name: str, labels: dict[str, str], gpus: int = 0, taints: list[dict] | None = None,
                       cpu: str = "64", memory: str = "512Gi") -> dict:
        """A KWOK node of this test's own (removed at test end), Ready within a second or two."""
        capacity = {"cpu": cpu, "memory": memory, "pods": "110", **({"nvidia.com/gpu": str(gpus)} if gpus else {})}
        node = await self.create_cluster_scoped({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "annotations": {"kwok.x-k8s.io/node": "fake"},
                         "labels": {"type": "kwok", "kubernetes.io/hostname": name, **labels}},
            "spec": {"taints": taints or []}, "status": {"capacity": capacity, "allocatable": capacity}})
        await self.wait_for(f"node {name} Ready", lambda: any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in ((self.get("v1", "Node", name) or {}).get("status") or {}).get("conditions", [])))
        return node

    async def create_cluster_scoped(self, manifest: dict) -> dict:
        created = await self.create(manifest)
        self.cluster_scoped.append((manifest["apiVersion"], manifest["kind"], manifest["metadata"]["name"]))
        return created

    def remove_cluster_scoped(self) -> None:
        for api_version, kind, name in reversed(self.cluster_scoped):
            try:
                self.api.request("DELETE", self.api.path(api_version, kind, None, name))
            except ApiError as error:
                if error.status != 404:
                    raise

    # -- writes (async, so tests read like the user's steps) --------------------------------------------------
    async def create(self, manifest: dict) -> dict:
        """Creates `manifest`; a namespaced object without a namespace lands in the test's namespace."""
        manifest = {**manifest, "metadata": dict(manifest["metadata"])}
        plural, namespaced = self.api.resource(manifest["apiVersion"], manifest["kind"])
        if namespaced:
            manifest["metadata"].setdefault("namespace", self.namespace)
        path = self.api.path(manifest["apiVersion"], manifest["kind"], manifest["metadata"].get("namespace"))
        return self.api.request("POST", path, manifest)

    async def patch(self, api_version: str, kind: str, name: str, patch: dict, subresource: str | None = None,
                    namespace: str | None = None) -> dict:
        path = self.api.path(api_version, kind, namespace or self.namespace, name, subresource)
        return self.api.request("PATCH", path, patch, "application/merge-patch+json")

    async def delete(self, api_version: str, kind: str, name: str, propagation: str = "Background",
                     namespace: str | None = None) -> dict:
        path = self.api.path(api_version, kind, namespace or self.namespace, name)
        return self.api.request("DELETE", path, {"kind": "DeleteOptions", "apiVersion": "v1",
                                                 "propagationPolicy": propagation})

    # -- reads ----------------------------------------------------------------------------------------------
    def get(self, api_version: str, kind: str, name: str, namespace: str | None = None,
            subresource: str | None = None) -> dict | None:
        try:
            path = self.api.path(api_version, kind, namespace or self.namespace, name, subresource)
            return self.api.request("GET", path)
        except ApiError as error:
            if error.status == 404:
                return None
            raise

    def objects(self, api_version: str, kind: str, namespace: str | None = None, labels: str | None = None) -> list[dict]:
        """Live objects of one kind in the test's namespace (all namespaces for cluster-scoped kinds)."""
        params = {"labelSelector": labels} if labels else None
        path = self.api.path(api_version, kind, namespace or self.namespace)
        return self.api.request("GET", path, params=params)["items"]

    def events(self, reason: str | None = None) -> list[dict]:
        return [e for e in self.objects("v1", "Event") if reason is None or e.get("reason") == reason]

    async def wait_for(self, what: str, predicate: Callable[[], object], timeout: float = WAIT_TIMEOUT):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            await asyncio.sleep(0.3)
        try:
            now = self.describe()
        except (ApiError, OSError) as error:
            now = f"  (could not read it: {error})"
        raise AssertionError(f"timed out after {timeout}s waiting for {what}; the namespace now:\n{now}")

    def describe(self) -> str:
        """The test namespace's pods (node, phase, readiness) and latest Warning events, for a failure message."""
        lines = []
        for pod in self.objects("v1", "Pod"):
            status = pod.get("status") or {}
            ready = next((c for c in status.get("conditions") or [] if c["type"] == "Ready"), {})
            lines.append(f"  pod {pod['metadata']['name']} on {pod['spec'].get('nodeName') or '-'}: "
                         f"{status.get('phase')}, Ready={ready.get('status')} {ready.get('reason') or ''}".rstrip())
        warnings = sorted((e for e in self.events() if e.get("type") == "Warning"),
                          key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "")
        lines += [f"  event {e['involvedObject']['kind']}/{e['involvedObject']['name']}: {e['reason']}: "
                  f"{(e.get('message') or '')[:200]}" for e in warnings[-8:]]
        return "\n".join(lines) or "  (no pods, no warnings)"

    # -- the user's tools -------------------------------------------------------------------------------------
    async def kubectl(self, *args: str, check: bool = True, timeout: float = COMMAND_TIMEOUT) -> subprocess.CompletedProcess:
        """Real kubectl as the admin, in the test's namespace."""
        return await run_command([tool("kubectl"), "--kubeconfig", str(self.kubeconfig.path), "-n", self.namespace,
                                  *args], check=check, timeout=timeout)


async def run_command(command: list[str], check: bool = True, env: dict | None = None,
                      timeout: float = COMMAND_TIMEOUT) -> subprocess.CompletedProcess:
    process = await asyncio.create_subprocess_exec(*command, stdout=asyncio.subprocess.PIPE,
                                                   stderr=asyncio.subprocess.PIPE, env=env)
    out, err = await asyncio.wait_for(process.communicate(), timeout)
    result = subprocess.CompletedProcess(command, process.returncode, out.decode(), err.decode())
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(command[:1] + command[3:])} failed ({result.returncode}):\n{result.stderr}{result.stdout}")
    return result


def run_sync(command: list[str], env: dict | None = None, timeout: float | None = COMMAND_TIMEOUT) -> str:
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({result.returncode}):\n{result.stderr}{result.stdout}")
    return result.stdout


@cache
def control_plane_bin() -> Path:
    """The cached control-plane build (binaries, and crds/ with prometheus-operator's PodMonitor CRD)."""
    return Path(run_sync(["bash", str(REPO / "scripts" / "control-plane" / "build.sh")], timeout=None).splitlines()[-1])


@cache
def local_cluster() -> Kubeconfig:
    """Starts the local control plane unless it runs (scripts/test.sh starts it once per test run)."""
    run_sync(["bash", str(REPO / "scripts" / "local-cluster.sh"), "up"], timeout=None)  # may build the binaries
    return Kubeconfig(Path(os.environ.get("FLEETSERVE_CLUSTER_DIR", REPO / ".local-cluster")) / "kubeconfig")


def new_namespace(api: Api, prefix: str) -> str:
    name = f"{prefix[:40].lower().replace('_', '-').strip('-')}-{uuid.uuid4().hex[:6]}"
    api.request("POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    return name
