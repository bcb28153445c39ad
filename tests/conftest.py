"""Fixtures shared by every test area: real services started on 127.0.0.1 and stopped afterwards."""

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness.fixtures import (  # noqa: F401  (the local control plane's fixtures, for every test area)
    admin_kubeconfig, cluster, operator, operator_kubeconfig, process_node, start_operator,
)
from harness.ports import free_port


@pytest.fixture(name="free_port")
def free_port_fixture():
    """A callable returning an unused TCP port on 127.0.0.1 (tests can't import conftest in importlib mode)."""
    return free_port


def wait_until_ready(process: subprocess.Popen, url: str, log_path: Path, timeout: float = 240) -> None:
    """Polls GET url until it answers 200; fails with the tail of the server's log if the process exits first."""
    deadline = time.monotonic() + timeout
    while True:
        assert process.poll() is None, log_path.read_text()[-3000:]
        assert time.monotonic() < deadline, f"{url} did not answer 200 within {timeout:.0f}s"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:  # not listening yet, or 503 while it loads
            pass
        time.sleep(0.5)


@pytest.fixture(name="wait_until_ready")
def wait_until_ready_fixture():
    """wait_until_ready(process, url, log_path, timeout=240), for tests that start `fleetserve serve` themselves."""
    return wait_until_ready


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


def _start_prometheus(workdir: Path, targets: list[str], scrape_interval: str,
                      target_labels: dict[str, str] | None) -> PrometheusServer:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("prometheus is not installed: run `bash scripts/setup.sh --test`")
    config = workdir / "prometheus.yml"
    config.write_text(
        "global:\n"
        f"  scrape_interval: {scrape_interval}\n"
        f"  evaluation_interval: {scrape_interval}\n"
        "scrape_configs:\n"
        "  - job_name: fleetserve\n"
        f"    static_configs:\n      - targets: {json.dumps(targets)}\n"
        f"        labels: {json.dumps(target_labels or {})}\n"
    )
    port = free_port()
    log_path = workdir / "prometheus.log"
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--web.enable-lifecycle",
        ],
        stdout=log_path.open("w"),
        stderr=subprocess.STDOUT,
    )
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


@pytest.fixture
def prometheus_factory(tmp_path_factory):
    """Starts a real Prometheus scraping the given targets; every one started is stopped at test end."""
    started: list[PrometheusServer] = []

    def start(targets: list[str], scrape_interval: str = "1s",
              target_labels: dict[str, str] | None = None) -> PrometheusServer:
        """`target_labels` go on every sample of these targets, as a cluster's service discovery and relabelling
        add `namespace` and the pod's labels (a PodMonitor's podTargetLabels)."""
        server = _start_prometheus(tmp_path_factory.mktemp("prometheus"), targets, scrape_interval, target_labels)
        started.append(server)
        return server

    yield start
    for server in started:
        server.process.terminate()
        try:
            server.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.process.kill()
