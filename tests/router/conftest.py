"""Real `fleetserve serve` engines (the built-in model on the CPU) and a real `fleetserve router` in front of them,
each a process on a loopback port, so a test can kill one mid-stream."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from harness.ports import free_port

ENGINE_ARGS = ("--max-model-len", "1024", "--max-num-seqs", "8")


def fleetserve(*args: str) -> list[str]:
    return [sys.executable, "-c", "from fleetserve.cli import main; raise SystemExit(main())", *args]


@pytest.fixture
def processes(tmp_path):
    started: list[subprocess.Popen] = []

    def start(name: str, command: list[str]) -> subprocess.Popen:
        log = open(tmp_path / f"{name}.log", "w")
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                   env={**os.environ, "HF_HUB_OFFLINE": "1"})
        process.log_path = tmp_path / f"{name}.log"
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)


@pytest.fixture
def start_engines(processes, wait_until_ready):
    """start_engines(n, *flags) -> {url: process}: n engines, all ready."""
    def start(count: int, *flags: str) -> dict[str, subprocess.Popen]:
        engines = {}
        for index in range(count):
            port = free_port()
            engines[f"http://127.0.0.1:{port}"] = processes(
                f"engine-{index}", fleetserve("serve", "--host", "127.0.0.1", "--port", str(port), *ENGINE_ARGS, *flags))
        for url, process in engines.items():
            wait_until_ready(process, f"{url}/readyz", process.log_path)
        return engines
    return start


@pytest.fixture
def start_router(processes, wait_until_ready):
    """start_router(backends, *flags) -> the router's base URL, once it answers /health."""
    def start(backends: list[str], *flags: str) -> str:
        port = free_port()
        process = processes("router", fleetserve("router", "--port", str(port), *[a for url in backends for a in (
            "--backend", url)], *flags))
        url = f"http://127.0.0.1:{port}"
        wait_until_ready(process, f"{url}/health", process.log_path, timeout=60)
        return url
    return start
