"""The chart installed with real helm, and the real `fleetserve operator` process acting as the chart's
ServiceAccount.

No container runtime exists here, so the chart's operator pod can't run its container: the scheduler places it on
a KWOK node, which only reports it Running. The operator itself runs as a local process with a token of the same
ServiceAccount (TokenRequest, as kubelet mounts it into the pod), so RBAC allows it exactly what the chart grants.
"""

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from harness.kube import REPO, Kubeconfig, run_sync, tool

RELEASE = "fleetserve"
RELEASE_NAMESPACE = "fleetserve-system"
SERVICE_ACCOUNT = "fleetserve"  # the chart's fullname for this release name
OPERATOR_START_TIMEOUT = 30
TOKEN_DURATION = "12h"


def helm(kubeconfig: Kubeconfig, *args: str) -> str:
    home = kubeconfig.path.parent / "helm-home"
    env = {**os.environ, "HELM_CACHE_HOME": str(home / "cache"), "HELM_CONFIG_HOME": str(home / "config"),
           "HELM_DATA_HOME": str(home / "data")}
    return run_sync([tool("helm"), "--kubeconfig", str(kubeconfig.path), *args], env=env)


def install_chart(admin: Kubeconfig, *sets: str, values_file: Path | None = None) -> Kubeconfig:
    """`helm upgrade --install` the chart (CRDs, RBAC, ServiceAccount, operator Deployment) with the chart's
    defaults plus `sets` and `values_file`; returns a kubeconfig holding the operator ServiceAccount's token."""
    # helm installs crds/ only once and never upgrades them; users apply them first, and so do the tests.
    run_sync([tool("kubectl"), "--kubeconfig", str(admin.path), "apply", "--server-side", "--force-conflicts",
              "-f", str(REPO / "helm" / "crds")])
    helm(admin, "upgrade", "--install", RELEASE, str(REPO / "helm"), "--namespace", RELEASE_NAMESPACE,
         "--create-namespace", "--reset-values", *(["-f", str(values_file)] if values_file else []),
         *[a for s in sets for a in ("--set", s)])
    token = run_sync([tool("kubectl"), "--kubeconfig", str(admin.path), "-n", RELEASE_NAMESPACE, "create", "token",
                      SERVICE_ACCOUNT, "--duration", TOKEN_DURATION]).strip()
    user = f"system:serviceaccount:{RELEASE_NAMESPACE}:{SERVICE_ACCOUNT}"
    return admin.with_token(admin.path.parent / "operator.kubeconfig", user, token)


class OperatorProcess:
    """`fleetserve operator` in a subprocess, with the chart ServiceAccount's kubeconfig."""

    def __init__(self, kubeconfig: Kubeconfig, log_path: Path, liveness_port: int, autoscaler: bool = False,
                 env: dict | None = None, args: tuple[str, ...] = ()) -> None:
        self.kubeconfig, self.log_path, self.liveness_port = kubeconfig, log_path, liveness_port
        self.autoscaler, self.extra_env, self.extra_args = autoscaler, env or {}, args
        self.process: subprocess.Popen | None = None

    async def start(self) -> None:
        env = {**os.environ, **self.extra_env, "KUBECONFIG": str(self.kubeconfig.path)}
        command = [sys.executable, "-c", "from fleetserve.cli import main; raise SystemExit(main())", "operator",
                   "--liveness", f"http://127.0.0.1:{self.liveness_port}/healthz",
                   *([] if self.autoscaler else ["--no-autoscaler"]), *self.extra_args]
        log = open(self.log_path, "a")
        self.process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd="/")
        deadline = time.monotonic() + OPERATOR_START_TIMEOUT
        while not self._live():
            assert self.process.poll() is None, f"operator exited early:\n{self.log()}"
            assert time.monotonic() < deadline, f"operator not live after {OPERATOR_START_TIMEOUT}s:\n{self.log()}"
            await asyncio.sleep(0.2)

    def _live(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.liveness_port}/healthz", timeout=1) as response:
                return response.status == 200
        except OSError:
            return False

    async def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        while self.process.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=5)

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(timeout=5)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""


@contextlib.asynccontextmanager
async def running_operator(kubeconfig: Kubeconfig, log_path: Path, liveness_port: int, **options):
    process = OperatorProcess(kubeconfig, log_path, liveness_port, **options)
    await process.start()
    try:
        yield process
    finally:
        await process.stop()
        print(process.log())  # pytest shows it only when the test failed
