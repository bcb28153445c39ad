"""The contract between the operator and the router it deploys in front of each LLMDeployment's engines."""

ROUTER_PORT = 8080
# Any new value starts a deployment that was scaled to zero: the router sets it while it holds requests.
WAKE_ANNOTATION = "fleetserve.io/wake"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"  # set on EndpointSlices by Kubernetes' EndpointSlice controller


def engine_service_name(name: str) -> str:
    """The Service of the engine pods, whose EndpointSlices the router watches (clients use the router's)."""
    return f"{name}-engines"


def router_name(name: str) -> str:
    """The router's Deployment and ServiceAccount."""
    return f"{name}-router"
