"""The local control plane, the chart, and process nodes whose pods run for real (tests/harness)."""

from harness.fixtures import admin_kubeconfig, cluster, operator_kubeconfig, pod_network, process_node  # noqa: F401
