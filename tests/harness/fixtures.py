"""Fixtures over the local control plane; a conftest imports the ones its tests use.

  admin_kubeconfig  the cluster (started once per test run), as its admin
  operator_kubeconfig  the chart installed with helm; the operator ServiceAccount's token
  cluster           a fresh namespace per test, with the admin client, kubectl and waiting helpers
  operator          the real `fleetserve operator` (no autoscaler) as the chart's ServiceAccount
  start_operator    starts more operators (peering, autoscaler, env) that stop at test end
  process_node      starts node agents (tests/harness/node_agent.py) whose pods run as local processes
"""

import contextlib
import itertools
import os

import pytest

from harness.kube import Api, Cluster, local_cluster, new_namespace
from harness.node_agent import NodeAgent
from harness.pod_network import PodNetwork
from harness.operator_process import install_chart, running_operator
from harness.ports import free_port

# Test traffic goes only to this machine's loopback and the pods' namespace: a proxy set in the environment (for
# package downloads, say) must not take it, in the test process or in the clients and servers it starts.
for variable in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
    os.environ.pop(variable, None)


@pytest.fixture(scope="session")
def admin_kubeconfig():
    return local_cluster()


@pytest.fixture(scope="session")
def operator_kubeconfig(admin_kubeconfig):
    return install_chart(admin_kubeconfig)


@pytest.fixture
def cluster(admin_kubeconfig, request, tmp_path):
    api = Api(admin_kubeconfig)
    namespace = new_namespace(api, request.node.name.split("[")[0].removeprefix("test_"))
    test_cluster = Cluster(admin_kubeconfig, namespace, tmp_path)
    yield test_cluster
    test_cluster.remove_cluster_scoped()
    # The namespace controller deletes what is left, in the background.
    api.request("DELETE", f"/api/v1/namespaces/{namespace}")


@pytest.fixture
async def start_operator(operator_kubeconfig, tmp_path):
    async with contextlib.AsyncExitStack() as stack:
        async def start(name: str = "operator", **options):
            return await stack.enter_async_context(
                running_operator(operator_kubeconfig, tmp_path / f"{name}.log", free_port(), **options))
        yield start


@pytest.fixture
async def operator(start_operator):
    return await start_operator()


PROCESS_NODE_TAINT = {"key": "fleetserve.test/process-node", "value": "true", "effect": "NoSchedule"}
PROCESS_NODE_TOLERATION = {"key": "fleetserve.test/process-node", "operator": "Exists", "effect": "NoSchedule"}
_node_indices = itertools.count(1)  # each agent's pods get addresses <subnet>.<index>.x, unique in the test run


@pytest.fixture(scope="session")
def pod_network(admin_kubeconfig, tmp_path_factory):
    """The process-node pods' network namespace, with the apiserver bridged into it (pod_network.py)."""
    network = PodNetwork(tmp_path_factory.mktemp("pod-network"))
    network.create()
    network.bridge(int(admin_kubeconfig.server.rsplit(":", 1)[1]))
    yield network
    network.destroy()


@pytest.fixture
def process_node(admin_kubeconfig, pod_network, cluster, tmp_path):
    """process_node(**labels) -> a started NodeAgent. Its taint keeps every other test's pods off it: a pod that
    should run for real tolerates PROCESS_NODE_TOLERATION and selects fleetserve.test/process-node=true."""
    agents: list[NodeAgent] = []

    def start(name: str = "proc", taints: list | None = None, **options) -> NodeAgent:
        agent = NodeAgent(admin_kubeconfig, pod_network, f"{cluster.namespace}-{name}", next(_node_indices),
                          tmp_path / "nodes", taints=[PROCESS_NODE_TAINT, *(taints or [])], **options)
        agent.start()
        agents.append(agent)
        return agent

    yield start
    for agent in agents:
        agent.stop()
