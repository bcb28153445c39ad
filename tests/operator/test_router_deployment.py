"""Each LLMDeployment gets its router, on the real control plane: the operator (with exactly the chart's RBAC)
creates the router's ServiceAccount, Role and Deployment, the Service clients use selects the router pod, and the
engine Service the router watches lists the engine pods. Turning the router off points clients at the engines again.
KWOK runs the pods (scheduled and reported Running and Ready; nothing runs in them)."""

from harness.llmd import LLMD, engine_pods, example, llmd, ready

ROUTER_PODS = "app.kubernetes.io/name=fleetserve-router,app.kubernetes.io/instance=tiny"
ROUTER_CHILDREN = [("apps/v1", "Deployment"), ("v1", "ServiceAccount"), ("rbac.authorization.k8s.io/v1", "Role"),
                   ("rbac.authorization.k8s.io/v1", "RoleBinding"), ("networking.k8s.io/v1", "NetworkPolicy")]


def ready_endpoints(cluster, service: str) -> set[str]:
    """Names of the pods that the Service's EndpointSlices list as ready."""
    slices = cluster.objects("discovery.k8s.io/v1", "EndpointSlice", labels=f"kubernetes.io/service-name={service}")
    return {e["targetRef"]["name"] for s in slices for e in s.get("endpoints") or []
            if (e.get("conditions") or {}).get("ready") and e.get("targetRef")}


async def can_i(cluster, verb: str, resource: str, account: str) -> bool:
    answer = await cluster.kubectl("auth", "can-i", verb, resource,
                                   f"--as=system:serviceaccount:{cluster.namespace}:{account}", check=False)
    return answer.stdout.strip() == "yes"


async def test_clients_reach_the_router_which_watches_the_engines_and_can_opt_out(cluster, operator):
    await cluster.create(example("cpu-tiny.yaml"))
    router = await cluster.wait_for("the router pod Running and Ready", lambda: next(
        (p for p in cluster.objects("v1", "Pod", labels=ROUTER_PODS) if ready(p)), None))
    assert router["spec"]["serviceAccountName"] == "tiny-router" and router["spec"]["nodeName"].startswith("kwok-cpu-")
    engine = await cluster.wait_for("the engine pod Ready", lambda: next(filter(ready, engine_pods(cluster, "tiny")), None))

    # The Role the operator could only create because the chart grants it the same verbs.
    assert await can_i(cluster, "watch", "endpointslices.discovery.k8s.io", "tiny-router")
    assert await can_i(cluster, "patch", "llmdeployments.fleetserve.io/tiny", "tiny-router")
    assert not await can_i(cluster, "patch", "llmdeployments.fleetserve.io/other", "tiny-router")
    assert not await can_i(cluster, "list", "pods", "tiny-router")

    await cluster.wait_for("Service tiny to list the router pod", lambda: ready_endpoints(cluster, "tiny") == {
        router["metadata"]["name"]})
    await cluster.wait_for("Service tiny-engines to list the engine pod", lambda: ready_endpoints(
        cluster, "tiny-engines") == {engine["metadata"]["name"]})
    assert llmd(cluster, "tiny")["status"]["endpoint"] == f"http://tiny.{cluster.namespace}.svc:8000/v1"

    await cluster.patch(*LLMD, "tiny", {"spec": {"router": {"enabled": False}}})
    await cluster.wait_for("the router's objects gone", lambda: not any(
        cluster.get(api_version, kind, "tiny-router") for api_version, kind in ROUTER_CHILDREN))
    await cluster.wait_for("Service tiny-engines gone", lambda: cluster.get("v1", "Service", "tiny-engines") is None)
    await cluster.wait_for("Service tiny to list the engine pod", lambda: ready_endpoints(cluster, "tiny") == {
        engine["metadata"]["name"]})
    assert "fleetserve.io/serving" in cluster.get("v1", "Service", "tiny")["spec"]["selector"]
    await cluster.wait_for("the router pod gone", lambda: not cluster.objects("v1", "Pod", labels=ROUTER_PODS))
    assert llmd(cluster, "tiny")["status"]["endpoint"] == f"http://tiny.{cluster.namespace}.svc:8000/v1"
    assert operator.alive()
