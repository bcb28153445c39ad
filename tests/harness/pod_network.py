"""The network of process-node pods (tests/harness/node_agent.py): one network namespace the test run creates,
joined to this machine by a veth pair; each pod gets an address of its own there (SUBNET.N.M, a /16 that no route
of this machine covers: 10.250 where it is free).

Why not loopback addresses: Kubernetes refuses loopback IPs in Endpoints and EndpointSlices, so Services would never
list such pods. Only loopback and namespaces the tests create may receive test traffic, so the pods live in their
own namespace; what they call on this machine's loopback (the apiserver, Prometheus) is bridged into their
namespace's loopback (loopback_bridge.py), and nothing here listens beyond loopback.
"""

import ipaddress
import os
import socket
import subprocess
import sys
from pathlib import Path

SUBNETS = ("10.250", "10.251", "10.252", "10.253", "172.29", "172.30", "172.31")  # the first free /16 is used
BRIDGE = Path(__file__).with_name("loopback_bridge.py")
PREFIX = "fleetserve-pods-"  # + the pid of the test process that made it


def ip(*args: str) -> str:
    return subprocess.run(["ip", *args], check=True, capture_output=True, text=True).stdout


def remove_stale() -> None:
    """Removes the pod networks of test runs killed before their teardown: their host link holds the same subnet,
    and the route through it would take this run's pod traffic into a namespace where nothing listens."""
    for line in ip("netns", "list").splitlines():
        name = line.split()[0] if line.strip() else ""
        owner = name.removeprefix(PREFIX)
        if name.startswith(PREFIX) and owner.isdigit() and not os.path.exists(f"/proc/{owner}"):
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
            subprocess.run(["ip", "link", "del", f"fsh{owner}"], capture_output=True)


def free_subnet() -> str:
    """A /16 that no route or address of this machine overlaps: one that did (a host network in 10.250.0.0/16,
    say) would take the pods' traffic out of this machine instead of into their namespace."""
    taken = [ipaddress.ip_interface(line.split()[3]).network for line in ip("-4", "-o", "addr").splitlines()]
    for line in ip("-4", "route", "show", "table", "all").splitlines():
        words = line.split()
        if words and words[0] in ("unreachable", "blackhole", "prohibit", "throw", "unicast"):
            words = words[1:]
        try:
            taken.append(ipaddress.ip_network(words[0], strict=False))
        except (IndexError, ValueError):  # default, and the local table's host entries (their addresses are above)
            pass
    for subnet in SUBNETS:
        candidate = ipaddress.ip_network(f"{subnet}.0.0/16")
        if not any(candidate.overlaps(network) for network in taken):
            return subnet
    raise RuntimeError(f"every subnet the pods could use ({', '.join(SUBNETS)}) is routed on this machine")


class PodNetwork:
    def __init__(self, folder: Path) -> None:
        tag = os.getpid()
        self.name, self.host_link, self.pod_link = f"{PREFIX}{tag}", f"fsh{tag}", f"fsp{tag}"
        self.folder = folder
        self.subnet = SUBNETS[0]  # chosen when created
        self._bridges: dict[int, list[subprocess.Popen]] = {}

    def create(self) -> None:
        remove_stale()
        self.destroy()
        self.subnet = free_subnet()
        ip("netns", "add", self.name)
        ip("link", "add", self.host_link, "type", "veth", "peer", "name", self.pod_link)
        ip("link", "set", self.pod_link, "netns", self.name)
        ip("addr", "add", f"{self.subnet}.0.1/16", "dev", self.host_link)
        ip("link", "set", self.host_link, "up")
        ip("-n", self.name, "link", "set", "lo", "up")
        ip("-n", self.name, "link", "set", self.pod_link, "up")
        self.check_reachable()

    def check_reachable(self) -> None:
        """This machine must reach an address in the namespace (the node agent probes pods there, as kubelet
        does); otherwise every pod would only time out waiting for Ready, so fail here with the routes."""
        address = f"{self.subnet}.0.2"
        self.add_address(address)
        listener = subprocess.Popen(self.run_inside([sys.executable, "-c", (
            "import socket, sys; s = socket.create_server((sys.argv[1], 0)); print(s.getsockname()[1], flush=True);"
            "s.settimeout(10); s.accept()"), address]), stdout=subprocess.PIPE, text=True)
        try:
            port = int(listener.stdout.readline() or 0)
            socket.create_connection((address, port), timeout=5).close()
        except (OSError, ValueError) as error:
            raise RuntimeError(f"the pods' network namespace {self.name} is not reachable at {address} from this "
                               f"machine ({error}); routes:\n{ip('route')}{ip('route', 'get', address)}") from None
        finally:
            listener.kill()
            listener.wait()
            self.remove_address(address)

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
