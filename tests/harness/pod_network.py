"""The network of process-node pods (tests/harness/node_agent.py): one network namespace the test run creates,
joined to this machine by a veth pair; each pod gets an address of its own there (10.250.N.M).

Why not loopback addresses: Kubernetes refuses loopback IPs in Endpoints and EndpointSlices, so Services would never
list such pods. Only loopback and namespaces the tests create may receive test traffic, so the pods live in their
own namespace; what they call on this machine's loopback (the apiserver, Prometheus) is bridged into their
namespace's loopback (loopback_bridge.py), and nothing here listens beyond loopback.
"""

import os
import subprocess
import sys
from pathlib import Path

SUBNET = "10.250"
BRIDGE = Path(__file__).with_name("loopback_bridge.py")


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


class PodNetwork:
    def __init__(self, folder: Path) -> None:
        tag = os.getpid() % 100000
        self.name, self.host_link, self.pod_link = f"fleetserve-pods-{tag}", f"fsh{tag}", f"fsp{tag}"
        self.folder = folder
        self._bridges: dict[int, list[subprocess.Popen]] = {}

    def create(self) -> None:
        self.destroy()
        ip("netns", "add", self.name)
        ip("link", "add", self.host_link, "type", "veth", "peer", "name", self.pod_link)
        ip("link", "set", self.pod_link, "netns", self.name)
        ip("addr", "add", f"{SUBNET}.0.1/16", "dev", self.host_link)
        ip("link", "set", self.host_link, "up")
        ip("-n", self.name, "link", "set", "lo", "up")
        ip("-n", self.name, "link", "set", self.pod_link, "up")

    def add_address(self, address: str) -> None:
        ip("-n", self.name, "addr", "add", f"{address}/16", "dev", self.pod_link)

    def remove_address(self, address: str) -> None:
        subprocess.run(["ip", "-n", self.name, "addr", "del", f"{address}/16", "dev", self.pod_link], capture_output=True)

    def run_inside(self, command: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.name, *command]

    def bridge(self, port: int) -> None:
        """Pods reach 127.0.0.1:port of this machine at their own 127.0.0.1:port."""
        if port in self._bridges:
            return
        socket_path = str(self.folder / f"bridge-{port}.sock")
        outside = subprocess.Popen([sys.executable, str(BRIDGE), "unix-to-tcp", socket_path, str(port)])
        inside = subprocess.Popen(self.run_inside([sys.executable, str(BRIDGE), "tcp-to-unix", socket_path, str(port)]))
        self._bridges[port] = [outside, inside]

    def destroy(self) -> None:
        for processes in self._bridges.values():
            for process in processes:
                process.kill()
                process.wait()
        self._bridges.clear()
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)
        subprocess.run(["ip", "link", "del", self.host_link], capture_output=True)
