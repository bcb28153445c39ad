"""Deleting an LLMDeployment with the real garbage collector, and children the apiserver refuses: a name taken
by someone else's object, a quota. Each ends in a condition and an Event, never a silent retry."""

import pytest

from harness.llmd import LLMD, condition, example, llmd, workload

CHILDREN = [("apps/v1", "Deployment"), ("apps/v1", "ReplicaSet"), ("v1", "Pod"), ("v1", "Service"),
            ("policy/v1", "PodDisruptionBudget"), ("networking.k8s.io/v1", "NetworkPolicy")]


def leftovers(cluster) -> list[str]:
    return [f"{kind}/{o['metadata']['name']}" for api_version, kind in CHILDREN
            for o in cluster.objects(api_version, kind)]


@pytest.mark.parametrize("propagation", ["Background", "Foreground"])
async def test_delete_leaves_no_orphans_and_the_operator_never_recreates(cluster, operator, propagation):
    await cluster.create(example("cpu-tiny.yaml"))
    await cluster.wait_for("Ready", lambda: condition(llmd(cluster, "tiny"), "Ready").get("status") == "True")
    await cluster.wait_for("the pod", lambda: cluster.objects("v1", "Pod"))

    await cluster.delete(*LLMD, "tiny", propagation=propagation)
    # Foreground: the LLMDeployment stays, marked for deletion, until the collector removed every child; the
    # operator sees the Deployment go and must not put it back meanwhile.
    await cluster.wait_for("the LLMDeployment gone", lambda: cluster.get(*LLMD, "tiny") is None)
    await cluster.wait_for("every child gone", lambda: not leftovers(cluster))
    assert operator.log().count(f"create Deployment/tiny-on-demand in namespace {cluster.namespace}") == 1
    assert operator.alive()


async def test_a_name_taken_by_an_unmanaged_object_is_a_name_conflict(cluster, operator):
    await cluster.create({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "tiny"},
                          "spec": {"ports": [{"port": 80}], "selector": {"app": "someone-else"}}})
    await cluster.create(example("cpu-tiny.yaml"))
    ready = await cluster.wait_for("NameConflict", lambda: (
        c := condition(llmd(cluster, "tiny"), "Ready")).get("reason") == "NameConflict" and c)
    assert ready["status"] == "False" and "Service/tiny" in ready["message"]
    assert any(e["type"] == "Warning" and "Service/tiny" in e["message"] for e in cluster.events("NameConflict"))
    foreign = cluster.get("v1", "Service", "tiny")
    assert foreign["spec"]["selector"] == {"app": "someone-else"} and not foreign["metadata"].get("ownerReferences")

    # The operator retries on its own: freeing the name converges.
    await cluster.delete("v1", "Service", "tiny")
    await cluster.wait_for("Ready", lambda: condition(llmd(cluster, "tiny"), "Ready").get("status") == "True", timeout=60)
    assert cluster.get("v1", "Service", "tiny")["metadata"]["ownerReferences"][0]["kind"] == "LLMDeployment"


async def test_a_child_write_the_apiserver_refuses_becomes_apply_failed(cluster, operator):
    # The namespace's quota allows no Services: the apiserver answers 403 to the operator's create.
    await cluster.create({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "no-services"},
                          "spec": {"hard": {"services": "0"}}})
    await cluster.wait_for("the quota to be counted", lambda: (
        (cluster.get("v1", "ResourceQuota", "no-services") or {}).get("status") or {}).get("hard"))
    await cluster.create(example("cpu-tiny.yaml"))
    ready = await cluster.wait_for("ApplyFailed", lambda: (
        c := condition(llmd(cluster, "tiny"), "Ready")).get("reason") == "ApplyFailed" and c)
    assert ready["status"] == "False" and "Service/tiny" in ready["message"] and "HTTP 403" in ready["message"]
    assert any(e["type"] == "Warning" and "exceeded quota" in e["message"] for e in cluster.events("ApplyFailed"))
    assert operator.alive()

    await cluster.delete("v1", "ResourceQuota", "no-services")
    await cluster.wait_for("Ready", lambda: condition(llmd(cluster, "tiny"), "Ready").get("status") == "True", timeout=60)
    assert workload(cluster, "tiny-on-demand")
