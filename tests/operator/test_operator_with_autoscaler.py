"""The operator with the autoscaler's handlers loaded, as `helm install` runs it, on the local control plane: both
share one status, and the autoscaler's loop puts no finalizer on the LLMDeployment."""

from harness.llmd import LLMD, condition, example, llmd, workload


async def test_autoscaler_owns_scaling_active_and_delete_still_cleans_up(cluster, start_operator):
    # No Prometheus is configured, so the autoscaler holds the replica counts and says why.
    operator = await start_operator(autoscaler=True, env={"FLEETSERVE_AUTOSCALER_INTERVAL": "1",
                                                          "FLEETSERVE_PROMETHEUS_URL": ""})
    await cluster.create(example("spot-mix.yaml"))
    await cluster.wait_for("the spot Deployment", lambda: workload(cluster, "mix-spot"))
    held = await cluster.wait_for("the autoscaler's condition", lambda: (
        c := condition(llmd(cluster, "mix"), "ScalingActive")).get("reason") == "MetricsUnavailable" and c)
    assert held["status"] == "False" and "Prometheus" in held["message"]

    # Status refreshes by the operator after that (the scheduler places the pods on the GKE L4 nodes, KWOK makes
    # them ready, the Deployments report it) keep the autoscaler's condition.
    await cluster.wait_for("all five replicas ready", lambda: (
        llmd(cluster, "mix").get("status") or {}).get("replicas", {}).get("ready") == 5, timeout=45)
    body = llmd(cluster, "mix")
    assert condition(body, "ScalingActive")["reason"] == "MetricsUnavailable"
    assert condition(body, "Ready")["status"] == "True"
    assert not body["metadata"].get("finalizers")  # the loop reads a Kopf index: deleting never waits for it

    await cluster.delete(*LLMD, "mix")
    await cluster.wait_for("the LLMDeployment gone", lambda: llmd(cluster, "mix") == {})
    await cluster.wait_for("children gone (garbage collector)", lambda: not cluster.objects("apps/v1", "Deployment"))
    assert operator.alive()
