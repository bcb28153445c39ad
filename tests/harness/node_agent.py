"""A node agent for tests: kubelet and a container runtime for "process nodes", the part of a cluster that cannot
exist here (no container runtime, no GPU). Test infrastructure, not product code.

Per node it:
- registers the Node (CPU and memory, a fake `nvidia.com/gpu` capacity for GPU-labelled nodes: their pods run on
  the CPU) and renews its heartbeat Lease and Ready condition, as kubelet does;
- runs each pod bound to it as local processes, one per container: the container's command (or the image's
  entrypoint: FleetServe images run `fleetserve`) and args, with env resolved (values, `valueFrom` field and
  Secret/ConfigMap keys, `envFrom`, `$(VAR)` expansion);
- gives each pod an address of its own in the pods' network namespace (pod_network.py: SUBNET.N.M) and runs its
  processes there; pods share that namespace, so the agent rewrites the `0.0.0.0` a container listens on to the
  pod's address;
- maps each volume mount under the pod's own folder (there is no mount namespace) and rewrites references to the
  mount path in args and env; Secret volumes are written there; a pod with a ServiceAccount token gets a
  kubeconfig holding a token of that ServiceAccount (the projected-token stand-in), so it has exactly its RBAC;
- runs startup, readiness and liveness HTTP probes against the pod IP (liveness and readiness only after the
  startup probe passed and their initialDelaySeconds, as kubelet does) and reports phase, conditions, pod IP and
  container states through /status; a failed liveness probe or an exit restarts the container;
- on deletion runs the preStop hook, sends SIGTERM, and SIGKILL when terminationGracePeriodSeconds runs out, then
  removes the pod, as kubelet does; `reclaim()` plays a spot node's graceful shutdown on notice, `power_off()` the
  instance going away.
KWOK nodes stay for scale tests that need no real process.
"""

import base64
import datetime
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from harness.kube import REPO, Api, ApiError, Kubeconfig
from harness.pod_network import PodNetwork

log = logging.getLogger("node-agent")
HEARTBEAT_SECONDS = 5
IMAGE_ENTRYPOINTS = {"ghcr.io/fleetserve/": ["fleetserve"]}  # what the images' ENTRYPOINT runs
TOKEN_SECONDS = 6 * 3600
SA_TOKEN_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Container:
    spec: dict
    process: subprocess.Popen | None = None
    restarts: int = 0
    started_at: str | None = None
    launched: float = 0.0  # time.monotonic() at the last start, for probes' initialDelaySeconds
    started: bool = False  # the startup probe passed (or there is none)
    ready: bool = False
    failed_liveness: int = 0
    last_probe: dict = field(default_factory=dict)
    last_failure: str | None = None  # the last failed probe's message, posted once as an Event


@dataclass
class PodRun:
    uid: str
    namespace: str
    name: str
    ip: str
    folder: Path
    spec: dict
    containers: dict[str, Container] = field(default_factory=dict)
    terminating: bool = False
    env_cache: dict = field(default_factory=dict)


class NodeAgent:
    def __init__(self, admin: Kubeconfig, network: PodNetwork, name: str, index: int, workdir: Path,
                 labels: dict | None = None, cpu: str = "8", memory: str = "32Gi", gpus: int = 0,
                 taints: list | None = None) -> None:
        assert 1 <= index <= 250
        self.admin, self.network, self.name, self.index, self.workdir = admin, network, name, index, workdir / name
        self.labels, self.cpu, self.memory, self.gpus, self.taints = labels or {}, cpu, memory, gpus, taints or []
        self.api = Api(admin)
        self.pods: dict[str, PodRun] = {}
        self._next_ip = 2
        self._stop = threading.Event()
        self._lock = threading.RLock()
        self._threads: list[threading.Thread] = []

    # -- node --------------------------------------------------------------------------------------------------
    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        capacity = {"cpu": self.cpu, "memory": self.memory, "pods": "110"}
        if self.gpus:
            capacity["nvidia.com/gpu"] = str(self.gpus)
        self.api.request("POST", "/api/v1/nodes", {
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": self.name, "labels": {"kubernetes.io/hostname": self.name, "kubernetes.io/os": "linux",
                                                        "fleetserve.test/process-node": "true", **self.labels}},
            "spec": {"taints": self.taints}})
        self.api.request("PATCH", f"/api/v1/nodes/{self.name}/status", {"status": {
            "capacity": capacity, "allocatable": capacity,
            "addresses": [{"type": "InternalIP", "address": f"{self.network.subnet}.{self.index}.1"}, {"type": "Hostname", "address": self.name}],
            "nodeInfo": {"kubeletVersion": "v1.34.4-fleetserve-node-agent", "architecture": "amd64", "operatingSystem": "linux",
                         "containerRuntimeVersion": "processes://local", "kernelVersion": "", "osImage": "", "machineID": "",
                         "systemUUID": "", "bootID": "", "kubeProxyVersion": ""}}}, "application/merge-patch+json")
        self._heartbeat()
        for target in (self._heartbeat_forever, self._watch_pods, self._supervise):
            thread = threading.Thread(target=target, name=f"{self.name}-{target.__name__}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def _heartbeat(self) -> None:
        stamp = now()
        lease_path = f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{self.name}"
        micro = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        try:
            self.api.request("PATCH", lease_path, {"spec": {"renewTime": micro}}, "application/merge-patch+json")
        except ApiError as error:
            if error.status != 404:
                raise
            self.api.request("POST", "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases", {
                "apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": self.name},
                "spec": {"holderIdentity": self.name, "leaseDurationSeconds": 40, "renewTime": micro}})
        self.api.request("PATCH", f"/api/v1/nodes/{self.name}/status", {"status": {"conditions": [
            {"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "node agent is posting ready status",
             "lastHeartbeatTime": stamp, "lastTransitionTime": stamp}]}}, "application/strategic-merge-patch+json")

    def _heartbeat_forever(self) -> None:
        while not self._stop.wait(HEARTBEAT_SECONDS):
            try:
                self._heartbeat()
            except (ApiError, httpx.HTTPError) as error:
                log.warning("%s heartbeat: %s", self.name, error)

    def power_off(self) -> None:
        """The instance is gone: every process dies at once and the node stops reporting."""
        self._stop.set()
        with self._lock:
            for run in self.pods.values():
                for container in run.containers.values():
                    if container.process and container.process.poll() is None:
                        os.killpg(container.process.pid, signal.SIGKILL)

    def reclaim(self, grace_seconds: int) -> None:
        """Graceful node shutdown on a spot notice, as kubelet does it: each pod is marked as a disruption target,
        gets its preStop hook and SIGTERM, and SIGKILL when `grace_seconds` run out; then the pods are Failed."""
        with self._lock:
            runs = list(self.pods.values())
        for run in runs:
            self._patch_status(run, {"conditions": [{"type": "DisruptionTarget", "status": "True",
                                                     "reason": "TerminationByKubelet", "lastTransitionTime": now(),
                                                     "message": "Pod was terminated in response to imminent node shutdown."}]})
        threads = [threading.Thread(target=self._terminate, args=(run, grace_seconds)) for run in runs]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for run in runs:
            self._patch_status(run, {"phase": "Failed", "reason": "Terminated",
                                     "message": "Pod was terminated in response to imminent node shutdown."})

    # -- pods --------------------------------------------------------------------------------------------------
    def _watch_pods(self) -> None:
        selector = f"spec.nodeName={self.name}"
        while not self._stop.is_set():
            try:
                listing = self.api.request("GET", "/api/v1/pods", params={"fieldSelector": selector})
                for pod in listing["items"]:
                    self._on_pod("ADDED", pod)
                params = {"fieldSelector": selector, "watch": "true", "timeoutSeconds": "60",
                          "resourceVersion": listing["metadata"]["resourceVersion"]}
                with self.api.http.stream("GET", "/api/v1/pods", params=params, timeout=None) as stream:
                    for line in stream.iter_lines():
                        if self._stop.is_set():
                            return
                        if line:
                            event = json.loads(line)
                            if event["type"] in ("ADDED", "MODIFIED", "DELETED"):
                                self._on_pod(event["type"], event["object"])
            except (ApiError, httpx.HTTPError, ValueError) as error:
                log.warning("%s pod watch: %s", self.name, error)
                time.sleep(1)

    def _on_pod(self, kind: str, pod: dict) -> None:
        meta = pod["metadata"]
        with self._lock:
            run = self.pods.get(meta["uid"])
            if kind == "DELETED":
                if run:
                    self._kill(run)
                    self.pods.pop(meta["uid"], None)
                    self.network.remove_address(run.ip)
                return
            if pod["status"].get("phase") in ("Succeeded", "Failed"):
                return
            if run is None and not meta.get("deletionTimestamp"):
                run = self._admit(pod)
            if run is not None and meta.get("deletionTimestamp") and not run.terminating:
                run.terminating = True
                grace = meta.get("deletionGracePeriodSeconds", 30)
                threading.Thread(target=self._delete_after_terminate, args=(run, grace), daemon=True).start()

    def _admit(self, pod: dict) -> PodRun:
        meta = pod["metadata"]
        ip = f"{self.network.subnet}.{self.index}.{self._next_ip}"
        self._next_ip = self._next_ip + 1 if self._next_ip < 250 else 2
        self.network.add_address(ip)
        run = PodRun(meta["uid"], meta["namespace"], meta["name"], ip, self.workdir / f"{meta['namespace']}_{meta['name']}", pod["spec"])
        run.folder.mkdir(parents=True, exist_ok=True)
        self.pods[run.uid] = run
        for spec in pod["spec"]["containers"]:
            run.containers[spec["name"]] = Container(spec)
        try:
            self._prepare_volumes(run, pod)
            for container in run.containers.values():
                self._start_container(run, container)
        except (ApiError, KeyError, ValueError) as error:  # a missing Secret: kubelet would wait and say why
            log.warning("pod %s/%s cannot start: %s", run.namespace, run.name, error)
            self._patch_status(run, {"phase": "Pending", "conditions": [
                {"type": "PodScheduled", "status": "True"},
                {"type": "ContainersReady", "status": "False", "reason": "ContainersNotReady", "message": str(error)}]})
            return run
        self._report(run)
        return run

    def _mount_folder(self, run: PodRun, mount_path: str) -> Path:
        return run.folder / "mounts" / mount_path.strip("/")

    def _prepare_volumes(self, run: PodRun, pod: dict) -> None:
        volumes = {v["name"]: v for v in pod["spec"].get("volumes") or []}
        for container in run.containers.values():
            for mount in container.spec.get("volumeMounts") or []:
                folder = self._mount_folder(run, mount["mountPath"])
                folder.mkdir(parents=True, exist_ok=True)
                secret = (volumes.get(mount["name"]) or {}).get("secret")
                if secret:
                    data = self._secret(run.namespace, secret["secretName"])
                    items = secret.get("items") or [{"key": k, "path": k} for k in data]
                    for item in items:
                        (folder / item["path"]).write_bytes(base64.b64decode(data[item["key"]]))
        if pod["spec"].get("automountServiceAccountToken", True):
            account = pod["spec"].get("serviceAccountName", "default")
            token = self.api.request("POST", f"/api/v1/namespaces/{run.namespace}/serviceaccounts/{account}/token", {
                "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                "spec": {"expirationSeconds": TOKEN_SECONDS}})["status"]["token"]
            self.admin.with_token(run.folder / "kubeconfig", f"system:serviceaccount:{run.namespace}:{account}", token,
                                  namespace=run.namespace)

    def _secret(self, namespace: str, name: str) -> dict:
        return self.api.request("GET", f"/api/v1/namespaces/{namespace}/secrets/{name}").get("data") or {}

    def _env(self, run: PodRun, container: Container) -> dict[str, str]:
        spec, pod_meta = container.spec, self.api.request("GET", f"/api/v1/namespaces/{run.namespace}/pods/{run.name}")["metadata"]
        env: dict[str, str] = {}
        for source in spec.get("envFrom") or []:
            ref = source.get("secretRef") or source.get("configMapRef")
            kind = "secrets" if "secretRef" in source else "configmaps"
            data = self.api.request("GET", f"/api/v1/namespaces/{run.namespace}/{kind}/{ref['name']}").get("data") or {}
            for key, value in data.items():
                env[source.get("prefix", "") + key] = base64.b64decode(value).decode() if kind == "secrets" else value
        fields = {"metadata.name": run.name, "metadata.namespace": run.namespace, "status.podIP": run.ip,
                  "spec.nodeName": self.name, "spec.serviceAccountName": run.spec.get("serviceAccountName", "default")}
        for item in spec.get("env") or []:
            if "value" in item:
                env[item["name"]] = re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), item["value"])
                continue
            source = item.get("valueFrom") or {}
            if "fieldRef" in source:
                path = source["fieldRef"]["fieldPath"]
                label = re.fullmatch(r"metadata\.labels\['(.+)'\]", path)
                env[item["name"]] = (pod_meta.get("labels") or {}).get(label.group(1), "") if label else fields[path]
            elif "secretKeyRef" in source:
                ref = source["secretKeyRef"]
                env[item["name"]] = base64.b64decode(self._secret(run.namespace, ref["name"])[ref["key"]]).decode()
            elif "configMapKeyRef" in source:
                ref = source["configMapKeyRef"]
                env[item["name"]] = self.api.request(
                    "GET", f"/api/v1/namespaces/{run.namespace}/configmaps/{ref['name']}")["data"][ref["key"]]
        return env

    def _command(self, run: PodRun, container: Container, env: dict[str, str]) -> list[str]:
        spec = container.spec
        command = spec.get("command") or next(
            (entry for prefix, entry in IMAGE_ENTRYPOINTS.items() if spec["image"].startswith(prefix)), None)
        if command is None:
            raise ValueError(f"no local entrypoint for image {spec['image']}")
        expanded = [re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), a) for a in [*command, *spec.get("args", [])]]
        return [self._localise(run, container, a) for a in expanded]

    def _localise(self, run: PodRun, container: Container, value: str) -> str:
        """The pod's address for 0.0.0.0, and its mount folders for mount paths (no network or mount namespace)."""
        value = value.replace("0.0.0.0", run.ip)
        for mount in sorted(container.spec.get("volumeMounts") or [], key=lambda m: -len(m["mountPath"])):
            if value.startswith(mount["mountPath"]) or f"={mount['mountPath']}" in value:
                value = value.replace(mount["mountPath"], str(self._mount_folder(run, mount["mountPath"])), 1)
        return value

    def _start_container(self, run: PodRun, container: Container) -> None:
        env = self._env(run, container)
        local_env = {key: self._localise(run, container, value) for key, value in env.items()}
        path = f"{REPO / '.venv' / 'bin'}:{os.environ.get('PATH', '')}"
        process_env = {"PATH": path, "HOME": str(run.folder / "home"), "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1"),
                       "TMPDIR": str(run.folder / "tmp"), **local_env}
        if (run.folder / "kubeconfig").exists():
            process_env["KUBECONFIG"] = str(run.folder / "kubeconfig")
        for folder in ("home", "tmp"):
            (run.folder / folder).mkdir(exist_ok=True)
        log_file = open(run.folder / f"{container.spec['name']}.log", "a")
        container.process = subprocess.Popen(self.network.run_inside(self._command(run, container, env)), env=process_env, stdout=log_file,
                                             stderr=subprocess.STDOUT, cwd=run.folder, start_new_session=True)
        container.started_at, container.started, container.ready = now(), "startupProbe" not in container.spec, False
        container.launched, container.last_probe = time.monotonic(), {}
        log.info("%s: started %s/%s %s as pid %d at %s", self.name, run.namespace, run.name, container.spec["name"],
                 container.process.pid, run.ip)

    # -- probes and status ---------------------------------------------------------------------------------------
    def _probe(self, run: PodRun, container: Container, probe: dict, kind: str) -> bool:
        check = probe.get("httpGet")
        if not check:
            return True  # exec probes: the container's own process answers for itself here
        port = check["port"]
        if isinstance(port, str):
            port = next(p["containerPort"] for p in container.spec.get("ports", []) if p.get("name") == port)
        try:
            with urllib.request.urlopen(f"http://{run.ip}:{port}{check.get('path', '/')}",
                                        timeout=probe.get("timeoutSeconds", 1)) as answer:
                return 200 <= answer.status < 400
        except OSError as error:
            self._unhealthy(run, container, f"{kind.capitalize()} probe failed: {error}")
            return False

    def _unhealthy(self, run: PodRun, container: Container, message: str) -> None:
        """A Warning Event on the pod, as kubelet posts for a failed probe (once per distinct message here)."""
        if container.last_failure == message:
            return
        container.last_failure = message
        try:
            self.api.request("POST", f"/api/v1/namespaces/{run.namespace}/events", {
                "apiVersion": "v1", "kind": "Event", "metadata": {"generateName": f"{run.name}."},
                "involvedObject": {"kind": "Pod", "namespace": run.namespace, "name": run.name, "uid": run.uid,
                                   "fieldPath": f"spec.containers{{{container.spec['name']}}}"},
                "reason": "Unhealthy", "message": message, "type": "Warning", "lastTimestamp": now(),
                "source": {"component": "kubelet", "host": self.name}})
        except (ApiError, httpx.HTTPError) as error:
            log.info("%s: event for %s/%s not written: %s", self.name, run.namespace, run.name, error)

    def _due(self, container: Container, kind: str, probe: dict) -> bool:
        clock = time.monotonic()
        if (clock - container.launched < probe.get("initialDelaySeconds", 0)
                or clock - container.last_probe.get(kind, 0.0) < probe.get("periodSeconds", 10)):
            return False
        container.last_probe[kind] = clock
        return True

    def _supervise(self) -> None:
        while not self._stop.wait(0.5):
            with self._lock:
                runs = [r for r in self.pods.values() if not r.terminating]
            for run in runs:
                changed = False
                for container in run.containers.values():
                    changed |= self._check(run, container)
                if changed:
                    self._report(run)

    def _check(self, run: PodRun, container: Container) -> bool:
        spec, before = container.spec, (container.started, container.ready, container.restarts)
        if container.process is None:
            return False
        if container.process.poll() is not None:  # exited: restartPolicy Always
            log.warning("%s: %s/%s %s exited with %s; restarting", self.name, run.namespace, run.name, spec["name"],
                        container.process.returncode)
            container.restarts += 1
            self._start_container(run, container)
        elif not container.started:
            probe = spec["startupProbe"]
            if self._due(container, "startup", probe) and self._probe(run, container, probe, "startup"):
                container.started = True
        else:
            readiness, liveness = spec.get("readinessProbe"), spec.get("livenessProbe")
            if readiness is None:
                container.ready = True
            elif self._due(container, "readiness", readiness):
                container.ready = self._probe(run, container, readiness, "readiness")
            if liveness and self._due(container, "liveness", liveness):
                container.failed_liveness = 0 if self._probe(run, container, liveness, "liveness") else container.failed_liveness + 1
                if container.failed_liveness >= liveness.get("failureThreshold", 3):
                    log.warning("%s: %s/%s failed liveness; restarting", self.name, run.namespace, run.name)
                    os.killpg(container.process.pid, signal.SIGKILL)
                    container.process.wait()
                    container.failed_liveness = 0
        return before != (container.started, container.ready, container.restarts)

    def _report(self, run: PodRun) -> None:
        ready = all(c.ready for c in run.containers.values())
        stamp = now()
        statuses = [{"name": name, "image": c.spec["image"], "imageID": "", "ready": c.ready, "started": c.started,
                     "restartCount": c.restarts, "containerID": f"process://{c.process.pid if c.process else 0}",
                     "state": {"running": {"startedAt": c.started_at}}} for name, c in run.containers.items()]
        self._patch_status(run, {
            "phase": "Running", "hostIP": f"{self.network.subnet}.{self.index}.1", "podIP": run.ip, "podIPs": [{"ip": run.ip}],
            "startTime": statuses[0]["state"]["running"]["startedAt"], "containerStatuses": statuses,
            "conditions": [{"type": t, "status": s, "lastTransitionTime": stamp} for t, s in (
                ("PodScheduled", "True"), ("Initialized", "True"), ("ContainersReady", "True" if ready else "False"),
                ("Ready", "True" if ready else "False"))]})

    def _patch_status(self, run: PodRun, status: dict) -> None:
        try:
            self.api.request("PATCH", f"/api/v1/namespaces/{run.namespace}/pods/{run.name}/status",
                             {"metadata": {"uid": run.uid}, "status": status}, "application/strategic-merge-patch+json")
        except (ApiError, httpx.HTTPError) as error:
            log.info("%s: status of %s/%s not written: %s", self.name, run.namespace, run.name, error)

    # -- termination -----------------------------------------------------------------------------------------------
    def _terminate(self, run: PodRun, grace_seconds: float) -> None:
        run.terminating = True
        deadline = time.monotonic() + grace_seconds
        for container in run.containers.values():
            hook = ((container.spec.get("lifecycle") or {}).get("preStop") or {})
            command = (hook.get("exec") or {}).get("command") or []
            if command[:1] == ["sleep"]:
                time.sleep(min(float(command[1]), max(0.0, deadline - time.monotonic())))
        for container in run.containers.values():
            if container.process and container.process.poll() is None:
                os.killpg(container.process.pid, signal.SIGTERM)
        for container in run.containers.values():
            if container.process is None:
                continue
            try:
                container.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(container.process.pid, signal.SIGKILL)
                container.process.wait()

    def _delete_after_terminate(self, run: PodRun, grace: float) -> None:
        self._terminate(run, grace)
        try:  # kubelet's final delete, once the containers are gone
            self.api.request("DELETE", f"/api/v1/namespaces/{run.namespace}/pods/{run.name}",
                             {"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0,
                              "preconditions": {"uid": run.uid}})
        except ApiError as error:
            if error.status not in (404, 409):
                raise
        with self._lock:
            self.pods.pop(run.uid, None)
        self.network.remove_address(run.ip)
        shutil.rmtree(run.folder / "tmp", ignore_errors=True)

    def _kill(self, run: PodRun) -> None:
        for container in run.containers.values():
            if container.process and container.process.poll() is None:
                os.killpg(container.process.pid, signal.SIGKILL)

    def stop(self) -> None:
        """End of test: kill every process and remove the node."""
        self.power_off()
        try:
            self.api.request("DELETE", f"/api/v1/nodes/{self.name}")
        except ApiError as error:
            if error.status != 404:
                raise
