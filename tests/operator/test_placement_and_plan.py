"""Pure planning: the spot/on-demand split, group shapes and the apply plan."""

import json

import pytest

from fleetserve.operator.apply_plan import LAST_APPLIED, plan_changes, three_way_patch, with_last_applied
from fleetserve.api.placement import GroupShape, ImpossibleShape, ReplicaSplit, group_shape, split_replicas
from fleetserve.api.spec import parse_spec


@pytest.mark.parametrize("total,floor,enabled,share,expected", [
    (5, 1, True, 0.8, (1, 4)),
    (5, 2, True, 0.8, (2, 3)),   # the on-demand floor wins over the share
    (10, 1, True, 0.5, (5, 5)),  # the share caps spot
    (1, 1, True, 0.8, (1, 0)),
    (0, 1, True, 0.8, (0, 0)),   # scaled to zero
    (3, 0, True, 1.0, (0, 3)),   # all spot when allowed
    (4, 1, False, 0.8, (4, 0)),  # spot off
    (5, 0, True, 0.8, (1, 4)),   # 0.8 * 5 is exactly 4, not 3.999
])
def test_split_replicas(total, floor, enabled, share, expected):
    split = split_replicas(total, floor, enabled, share)
    assert (split.on_demand, split.spot) == expected and split.total == total


def spec_with(tensor: int, per_node: int, count: int | None = None):
    gpu = {"countPerReplica": count} if count else {}
    return parse_spec({"model": {"source": "hf://org/model"}, "resources": {"gpu": gpu},
                       "parallelism": {"tensor": tensor}, "capacity": {"gpusPerNode": per_node}})


def test_group_shapes():
    assert group_shape(spec_with(4, 8)) == GroupShape(pods=1, gpus_per_pod=4, ranks_per_pod=4)
    assert group_shape(spec_with(8, 8)) == GroupShape(pods=1, gpus_per_pod=8, ranks_per_pod=8)
    assert group_shape(spec_with(16, 8)) == GroupShape(pods=2, gpus_per_pod=8, ranks_per_pod=8)
    assert group_shape(spec_with(2, 8, count=4)) == GroupShape(pods=1, gpus_per_pod=4, ranks_per_pod=2)
    # 8 ranks over 16 GPUs on 8-GPU nodes: 2 pods of 4 ranks, so NNODES x GPUS_PER_NODE = tensor for the engine.
    assert group_shape(spec_with(8, 8, count=16)) == GroupShape(pods=2, gpus_per_pod=8, ranks_per_pod=4)
    with pytest.raises(ImpossibleShape):
        group_shape(spec_with(12, 8))
    with pytest.raises(ImpossibleShape):
        group_shape(spec_with(3, 8, count=27))  # 27 GPUs are not whole 8-GPU nodes
    with pytest.raises(ImpossibleShape, match="spread evenly"):
        group_shape(spec_with(2, 8, count=32))  # 2 ranks can't cover 4 nodes


def manifest(name="web", replicas=1, **extra) -> dict:
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": "ns", "labels": {"a": "b"}},
            "spec": {"replicas": replicas, **extra}}


def live(obj: dict, owner="uid-1", **server_defaults) -> dict:
    applied = with_last_applied(obj)
    applied["metadata"] = {**applied["metadata"], "uid": "x", "resourceVersion": "7",
                           "ownerReferences": [{"uid": owner}]}
    applied["spec"] = {**applied["spec"], **server_defaults}
    return applied


def test_plan_creates_missing_and_leaves_unchanged_alone():
    changes = plan_changes([manifest()], [], "uid-1")
    assert [(c.action, c.name) for c in changes] == [("create", "web")]
    assert json.loads(changes[0].body["metadata"]["annotations"][LAST_APPLIED]) == manifest()
    # Server-side defaults around our fields are not a difference.
    assert plan_changes([manifest()], [live(manifest(), revisionHistoryLimit=10)], "uid-1") == []


def test_plan_patches_changes_and_removes_dropped_fields():
    before = manifest(paused=True)
    changes = plan_changes([manifest(replicas=3)], [live(before)], "uid-1")
    assert len(changes) == 1 and changes[0].action == "patch"
    patch = changes[0].body
    assert patch["spec"] == {"replicas": 3, "paused": None}
    assert LAST_APPLIED in patch["metadata"]["annotations"]


def test_plan_deletes_only_own_orphans():
    changes = plan_changes([manifest()], [live(manifest()), live(manifest("old")), live(manifest("foreign"), owner="uid-2")], "uid-1")
    assert [(c.action, c.name) for c in changes] == [("delete", "old")]


def test_three_way_patch_replaces_changed_lists_whole():
    last = {"spec": {"ports": [1, 2]}}
    assert three_way_patch(last, {"spec": {"ports": [1, 2]}}, {"spec": {"ports": [1]}}) == {"spec": {"ports": [1]}}
    assert ReplicaSplit(1, 2).total == 3
