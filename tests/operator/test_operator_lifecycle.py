"""The real operator (a `fleetserve operator` process as the chart's ServiceAccount) on the local control plane:
the real Deployment and StatefulSet controllers, scheduler and garbage collector act on what it creates, and KWOK
reports scheduled pods Running and Ready."""

from harness.llmd import LLMD, condition, engine_pods, example, llmd, workload


async def test_apply_creates_owned_children_and_becomes_ready(cluster, operator):
    cr = await cluster.create(example("cpu-tiny.yaml"))
    uid = cr["metadata"]["uid"]
    deployment = await cluster.wait_for("the on-demand Deployment", lambda: workload(cluster, "tiny-on-demand"))
    for api_version, kind, name in [("v1", "Service", "tiny"), ("policy/v1", "PodDisruptionBudget", "tiny-on-demand"),
                                    ("networking.k8s.io/v1", "NetworkPolicy", "tiny")]:
        child = await cluster.wait_for(f"{kind}/{name}", lambda: cluster.get(api_version, kind, name))
        owner = child["metadata"]["ownerReferences"][0]
        assert owner["uid"] == uid and owner["controller"] and owner["blockOwnerDeletion"]
    assert deployment["metadata"]["ownerReferences"][0]["uid"] == uid
    assert not cluster.objects("apps/v1", "StatefulSet")

    # The Deployment controller makes the pod, the scheduler places it on a CPU node, KWOK runs it.
    await cluster.wait_for("Ready=True for the applied generation", lambda: (b := llmd(cluster, "tiny")) and condition(
        b, "Ready").get("status") == "True" and b["status"].get("observedGeneration") == b["metadata"]["generation"])
    pod = engine_pods(cluster, "tiny")[0]
    assert pod["spec"]["nodeName"].startswith("kwok-cpu-")
    body = llmd(cluster, "tiny")
    assert body["status"]["endpoint"] == f"http://tiny.{cluster.namespace}.svc:8000/v1"
    assert body["status"]["replicas"]["summary"] == "1/1"
    assert operator.alive()


async def test_a_workload_deleted_by_hand_comes_back(cluster, operator):
    await cluster.create(example("cpu-tiny.yaml"))
    first = await cluster.wait_for("the Deployment", lambda: workload(cluster, "tiny-on-demand"))
    await cluster.delete("apps/v1", "Deployment", "tiny-on-demand")
    again = await cluster.wait_for("the Deployment back", lambda: (
        d := workload(cluster, "tiny-on-demand")) and d["metadata"]["uid"] != first["metadata"]["uid"] and d)
    assert again["spec"]["replicas"] == 1


async def test_spec_change_updates_the_workloads(cluster, operator):
    await cluster.create(example("cpu-tiny.yaml"))
    first = await cluster.wait_for("the Deployment", lambda: workload(cluster, "tiny-on-demand"))
    assert "16" in first["spec"]["template"]["spec"]["containers"][0]["args"]

    await cluster.patch(*LLMD, "tiny", {"spec": {"engine": {"maxNumSeqs": 32}, "replicas": {"min": 2}}})
    updated = await cluster.wait_for("the Deployment to change", lambda: (
        d := workload(cluster, "tiny-on-demand")) and d["spec"]["replicas"] == 2 and d)
    args = updated["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--max-num-seqs") + 1] == "32"
    body = await cluster.wait_for("status for generation 2 with both pods ready", lambda: (
        b := llmd(cluster, "tiny"))["status"].get("observedGeneration") == 2
        and b["status"]["replicas"]["ready"] == 2 and b)
    assert body["status"]["replicas"]["desired"] == 2
    assert {d["metadata"]["name"] for d in cluster.objects("apps/v1", "Deployment")} == {"tiny-on-demand", "tiny-router"}


async def test_kubectl_scale_sets_the_floor_and_reports_desired_replicas(cluster, operator):
    await cluster.create(example("cpu-tiny.yaml"))
    await cluster.wait_for("Ready", lambda: condition(llmd(cluster, "tiny"), "Ready").get("status") == "True")
    await cluster.kubectl("scale", "llmd/tiny", "--replicas=2")
    await cluster.wait_for("two replicas", lambda: (workload(cluster, "tiny-on-demand") or {})["spec"]["replicas"] == 2)
    scale = await cluster.wait_for("the scale subresource to report 2", lambda: (
        s := cluster.get(*LLMD, "tiny", subresource="scale"))["status"].get("replicas") == 2 and s)
    assert scale["spec"]["replicas"] == 2 and "app.kubernetes.io/instance=tiny" in scale["status"]["selector"]
    # replicas.max is 2 in the example: the min <= max rule rejects more.
    refused = await cluster.kubectl("scale", "llmd/tiny", "--replicas=3", check=False)
    assert refused.returncode != 0 and "min must not exceed max" in refused.stderr


async def test_operator_restart_converges_without_duplicates_or_orphans(cluster, operator):
    await cluster.create(example("spot-mix.yaml"))
    await cluster.wait_for("a first child", lambda: workload(cluster, "mix-on-demand"))
    operator.kill()  # mid-reconcile: some children may not exist yet
    # While it is down: spot is switched off (mix-spot becomes an orphan) and a child is deleted by hand.
    await cluster.patch(*LLMD, "mix", {"spec": {"capacity": {"spot": {"enabled": False}}}})
    if cluster.get("v1", "Service", "mix"):
        await cluster.delete("v1", "Service", "mix")

    await operator.start()
    await cluster.wait_for("the Service back", lambda: cluster.get("v1", "Service", "mix"))
    await cluster.wait_for("the spot Deployment gone", lambda: workload(cluster, "mix-spot") is None)
    await cluster.wait_for("all replicas on-demand", lambda: workload(cluster, "mix-on-demand")["spec"]["replicas"] == 5)
    await cluster.wait_for("the spot PDB gone", lambda: cluster.get("policy/v1", "PodDisruptionBudget", "mix-spot") is None)
    names = sorted(f"{kind}/{o['metadata']['name']}" for api_version, kind in [
        ("apps/v1", "Deployment"), ("apps/v1", "ReplicaSet"), ("v1", "Service"), ("policy/v1", "PodDisruptionBudget"),
        ("networking.k8s.io/v1", "NetworkPolicy")] for o in cluster.objects(api_version, kind))
    replica_sets = [n for n in names if n.startswith("ReplicaSet/")]
    assert [n.rsplit("-", 1)[0] for n in replica_sets] == ["ReplicaSet/mix-on-demand", "ReplicaSet/mix-router"]
    assert [n for n in names if not n.startswith("ReplicaSet/")] == [
        "Deployment/mix-on-demand", "Deployment/mix-router", "NetworkPolicy/mix", "NetworkPolicy/mix-router",
        "PodDisruptionBudget/mix-on-demand", "Service/mix", "Service/mix-engines"]
