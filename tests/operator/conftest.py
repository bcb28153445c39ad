"""Operator tests run against the local control plane (scripts/local-cluster.sh) and the real operator process."""

from harness.fixtures import admin_kubeconfig, cluster, operator, operator_kubeconfig, start_operator  # noqa: F401
