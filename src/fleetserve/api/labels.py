"""Label keys and values on the LLMDeployment's children and pods, defined here and nowhere else.

The operator sets them, Services and the operator's watches select by them, and the autoscaler removes
SERVING_LABEL from pods on reclaimed spot nodes.
"""

NAME_LABEL = "app.kubernetes.io/name"
INSTANCE_LABEL = "app.kubernetes.io/instance"  # the LLMDeployment's name
COMPONENT_LABEL = "app.kubernetes.io/component"
PART_OF_LABEL = "app.kubernetes.io/part-of"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
CAPACITY_LABEL = "fleetserve.io/capacity"
SERVING_LABEL = "fleetserve.io/serving"  # "true" while the pod may receive new requests
GROUP_LABEL = "fleetserve.io/group"  # the StatefulSet of one multi-node group
# INSTANCE_LABEL as a Prometheus target label: the PodMonitor copies it from the pod (podTargetLabels), and both
# prometheus-operator and kubernetes_sd's labelmap turn the characters Prometheus forbids into "_".
INSTANCE_TARGET_LABEL = "app_kubernetes_io_instance"

ENGINE_NAME = "fleetserve-engine"
ENGINE_COMPONENT = "engine"
ROUTER_NAME = "fleetserve-router"  # NAME_LABEL of the router's pods and children
ROUTER_COMPONENT = "router"
PART_OF = "fleetserve"
MANAGED_BY = "fleetserve-operator"
ON_DEMAND, SPOT = "on-demand", "spot"  # CAPACITY_LABEL values
