"""Fixtures shared by every test area: real services started on 127.0.0.1 and stopped afterwards."""

import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from harness.fixtures import (  # noqa: F401  (the local control plane's fixtures, for every test area)
    admin_kubeconfig, cluster, operator, operator_kubeconfig, pod_network, process_node, start_operator,
)
from harness.ports import free_port
from harness.prometheus import PrometheusServer, start_prometheus, static_job


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


@pytest.fixture
def prometheus_factory(tmp_path_factory):
    """Starts a real Prometheus scraping the given targets; every one started is stopped at test end."""
    started: list[PrometheusServer] = []

    def start(targets: list[str], scrape_interval: str = "1s",
              target_labels: dict[str, str] | None = None) -> PrometheusServer:
        """`target_labels` go on every sample of these targets, as a cluster's service discovery and relabelling
        add `namespace` and the pod's labels (a PodMonitor's podTargetLabels)."""
        job = static_job(targets, target_labels)
        server = start_prometheus(tmp_path_factory.mktemp("prometheus"), [job], scrape_interval)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
