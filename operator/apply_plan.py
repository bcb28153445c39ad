"""Planning apart from acting: desired manifests plus live children become creates, patches and deletes.

Patches are three-way JSON merge patches like `kubectl apply`: set what differs from the live object, and remove
what the previous apply set (recorded in an annotation) but the new manifest no longer has.
"""

import json
from dataclasses import dataclass
from typing import Literal

from fleetserve.kube import covers

LAST_APPLIED = "fleetserve.io/last-applied"


@dataclass(frozen=True)
class Change:
    action: Literal["create", "patch", "delete"]
    api_version: str
    kind: str
    namespace: str
    name: str
    body: dict | None = None  # the manifest to create or the merge patch to send


def key(obj: dict) -> tuple[str, str, str]:
    return obj["apiVersion"], obj["kind"], obj["metadata"]["name"]


def with_last_applied(manifest: dict) -> dict:
    annotations = {**manifest["metadata"].get("annotations", {}), LAST_APPLIED: json.dumps(manifest, sort_keys=True)}
    return {**manifest, "metadata": {**manifest["metadata"], "annotations": annotations}}


def three_way_patch(last: dict, live: dict, desired: dict) -> dict:
    patch: dict = {}
    for name, value in desired.items():
        if isinstance(value, dict) and isinstance(live.get(name), dict):
            previous = last.get(name)
            nested = three_way_patch(previous if isinstance(previous, dict) else {}, live[name], value)
            if nested:
                patch[name] = nested
        elif not covers(live.get(name), value):
            patch[name] = value
    for name in last:
        if name not in desired and name in live:
            patch[name] = None
    return patch


def plan_changes(desired: list[dict], live: list[dict], owner_uid: str | None) -> list[Change]:
    live_by_key = {key(obj): obj for obj in live}
    changes: list[Change] = []
    for manifest in desired:
        api_version, kind, name = key(manifest)
        namespace = manifest["metadata"]["namespace"]
        target = with_last_applied(manifest)
        current = live_by_key.get(key(manifest))
        if current is None:
            changes.append(Change("create", api_version, kind, namespace, name, target))
            continue
        last_text = (current["metadata"].get("annotations") or {}).get(LAST_APPLIED, "{}")
        patch = three_way_patch(json.loads(last_text), current, target)
        if patch:
            changes.append(Change("patch", api_version, kind, namespace, name, patch))
    wanted = {key(m) for m in desired}
    for obj in live:
        owners = {ref.get("uid") for ref in obj["metadata"].get("ownerReferences") or []}
        if key(obj) not in wanted and owner_uid in owners:
            changes.append(Change("delete", *key(obj)[:2], obj["metadata"]["namespace"], obj["metadata"]["name"]))
    return changes
