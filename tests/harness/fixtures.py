"""Fixtures over the local control plane; a conftest imports the ones its tests use.

  admin_kubeconfig  the cluster (started once per test run), as its admin
  operator_kubeconfig  the chart installed with helm; the operator ServiceAccount's token
  cluster           a fresh namespace per test, with the admin client, kubectl and waiting helpers
  operator          the real `fleetserve operator` (no autoscaler) as the chart's ServiceAccount
  start_operator    starts more operators (peering, autoscaler, env) that stop at test end
"""

import contextlib

import pytest

from harness.kube import Api, Cluster, local_cluster, new_namespace
from harness.operator import install_chart, running_operator
from harness.ports import free_port


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
