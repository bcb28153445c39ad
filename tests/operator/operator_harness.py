"""Test harness around the API emulator: a kubectl/kubelet stand-in and the real `fleetserve operator` process.

Shared by tests/operator/ and the e2e/ scenarios (each conftest turns these into fixtures).
"""

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import kmock
import pytest
import yaml
from kmock import Server

from k8s_emulator import ClusterEmulator
from fleetserve.kube import PLURALS, resource_path

OPERATOR_START_TIMEOUT = 30
WAIT_TIMEOUT = 20


class Cluster:
    """The emulator plus helpers that act as kubectl, kubelet and the workload controllers would."""

    def __init__(self, emulator: ClusterEmulator, url: str, kubeconfig: Path) -> None:
        self.emulator, self.url, self.kubeconfig = emulator, url, kubeconfig

    async def request(self, method: str, path: str, body=None, content_type="application/json") -> dict:
        headers = {"Content-Type": content_type}
        async with self.emulator.request(method, path, json=body, headers=headers) as response:
            answer = await response.json(content_type=None)
            assert response.status < 300, (method, path, response.status, answer)
            return answer

    async def create(self, manifest: dict) -> dict:
        meta = manifest["metadata"]
        return await self.request("POST", resource_path(manifest["apiVersion"], manifest["kind"], meta.get("namespace")), manifest)

    async def patch(self, api_version: str, kind: str, namespace: str, name: str, patch: dict, subresource=None) -> dict:
        path = resource_path(api_version, kind, namespace, name, subresource)
        return await self.request("PATCH", path, patch, "application/merge-patch+json")

    async def delete(self, api_version: str, kind: str, namespace: str, name: str) -> dict:
        return await self.request("DELETE", resource_path(api_version, kind, namespace, name))

    def objects(self, api_version: str, kind: str, namespace: str | None = None) -> list[dict]:
        """Live objects of one kind, read straight from the emulator's memory."""
        plural = PLURALS.get((api_version, kind), kind.lower() + "s")
        group_version = api_version if "/" in api_version else f"/{api_version}"
        found = []
        for (resource, ns, _), obj in self.emulator.objects.items():
            if obj.deleted or resource.plural != plural or f"{resource.group}/{resource.version}" != group_version:
                continue
            if namespace is None or ns == namespace:
                found.append(obj.raw)
        return found

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict | None:
        return next((o for o in self.objects(api_version, kind, namespace) if o["metadata"]["name"] == name), None)

    def events(self, reason: str | None = None) -> list[dict]:
        return [e for e in self.objects("v1", "Event") if reason is None or e.get("reason") == reason]

    async def wait_for(self, what: str, predicate: Callable[[], object], timeout: float = WAIT_TIMEOUT):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            await asyncio.sleep(0.2)
        raise AssertionError(f"timed out after {timeout}s waiting for {what}")

    async def report_ready(self, workload: dict, ready: int | None = None) -> None:
        """Play the workload controller and kubelet: mark `ready` pods of a Deployment/StatefulSet ready."""
        meta = workload["metadata"]
        replicas = workload["spec"]["replicas"] if ready is None else ready
        await self.patch(workload["apiVersion"], workload["kind"], meta["namespace"], meta["name"], {"status": {
            "observedGeneration": meta.get("generation", 1), "replicas": replicas, "readyReplicas": replicas,
            "updatedReplicas": replicas, "availableReplicas": replicas,
        }}, subresource="status")


@contextlib.asynccontextmanager
async def running_cluster(folder: Path):
    """The emulator serving on 127.0.0.1, with a kubeconfig pointing at it."""
    async with ClusterEmulator() as emulator, Server(emulator) as server:
        url = str(server.url).rstrip("/")
        kubeconfig = folder / "kubeconfig"
        kubeconfig.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "emulator",
            "clusters": [{"name": "emulator", "cluster": {"server": url}}],
            "users": [{"name": "tester", "user": {"token": "test-token"}}],
            "contexts": [{"name": "emulator", "context": {"cluster": "emulator", "user": "tester", "namespace": "default"}}],
        }))
        yield Cluster(emulator, url, kubeconfig)


class OperatorProcess:
    """`fleetserve operator` in a subprocess, pointed at the emulator through its own kubeconfig."""

    def __init__(self, cluster: Cluster, log_path: Path, autoscaler: bool = False, env: dict | None = None,
                 args: tuple[str, ...] = ()) -> None:
        self.cluster, self.log_path, self.autoscaler, self.extra_env = cluster, log_path, autoscaler, env or {}
        self.extra_args = args
        self.process: subprocess.Popen | None = None

    async def start(self) -> None:
        env = {**os.environ, **self.extra_env, "KUBECONFIG": str(self.cluster.kubeconfig)}
        command = [sys.executable, "-c", "from fleetserve.cli import main; raise SystemExit(main())",
                   "operator", "--liveness", "", *([] if self.autoscaler else ["--no-autoscaler"]), *self.extra_args]
        log = open(self.log_path, "a")
        self.process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd="/")
        # Ready once kopf watches LLMDeployments (a watch request reached the emulator).
        await self.cluster.wait_for("the operator to watch LLMDeployments", self._watching, OPERATOR_START_TIMEOUT)

    def _watching(self) -> bool:
        assert self.process.poll() is None, f"operator exited early:\n{self.log()}"
        return any(
            r.action == kmock.action.WATCH and r.resource is not None and r.resource.plural == "llmdeployments"
            for r in self.cluster.emulator  # iterating kmock yields the requests it served
        )

    async def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        while self.process.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.1)  # keep serving the emulator while kopf shuts down
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=5)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""


@contextlib.asynccontextmanager
async def running_operator(cluster: Cluster, log_path: Path, **options):
    process = OperatorProcess(cluster, log_path, **options)
    await process.start()
    try:
        yield process
    finally:
        await process.stop()
        print(process.log())  # pytest shows it only when the test failed


@pytest.fixture
async def cluster(tmp_path: Path):
    """An emulated cluster; a conftest that imports this fixture makes it available to its tests."""
    async with running_cluster(tmp_path) as emulated:
        yield emulated


@pytest.fixture
async def operator(cluster, tmp_path: Path):
    """The real `fleetserve operator` process, watching `cluster`."""
    async with running_operator(cluster, tmp_path / "operator.log") as process:
        yield process
