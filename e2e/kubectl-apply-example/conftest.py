"""The local control plane, the chart installed with helm, and the real operator as its ServiceAccount."""

from harness.fixtures import admin_kubeconfig, cluster, operator, operator_kubeconfig, start_operator  # noqa: F401
