"""A Kubernetes API emulator for operator tests: kmock's in-memory API plus what the real apiserver adds.

kmock stores and serves objects but sets no uid, resourceVersion, generation, creationTimestamp or generated
names, answers creates with 200 and runs no controllers. This subclass stamps those fields, answers 201, enforces
resourceVersion preconditions on patches (409), and plays the garbage collector (children whose ownerReferences
point at a deleted object are deleted too).
It also fixes what kubectl trips over: lists carry their kind and apiVersion, and core discovery says "v1".
"""

import copy
import datetime
import itertools
import secrets
import uuid

import kmock
from kmock._internal import dicts

from fleetserve.api.spec import GROUP, KIND, PLURAL, SHORT_NAME, SINGULAR, VERSION

LLMD_RESOURCE = f"{GROUP}/{VERSION}/{PLURAL}"


class ClusterEmulator(kmock.KubernetesEmulator):
    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self._versions = itertools.count(1)
        self.resources.load_bundled()
        self.resources[LLMD_RESOURCE] = kmock.ResourceInfo(
            kind=KIND, singular=SINGULAR, namespaced=True, shortnames={SHORT_NAME},
            verbs={"get", "list", "watch", "create", "update", "patch", "delete"}, subresources={"status", "scale"},
        )

    async def _handle(self, request):
        if request.resource is not None and isinstance(request.data, dict):
            if request.action == kmock.action.CREATE:
                self._stamp_new(request.data)
            elif request.action == kmock.action.UPDATE:
                self._stamp_update(request)
        response = await super()._handle(request)
        if request.action == kmock.action.CREATE and response.status == 200:
            response.set_status(201)
        if request.action in (kmock.action.DELETE, kmock.action.UPDATE) and response.status == 200:
            await self._collect_garbage()  # an update that removes the last finalizer deletes the object too
        return response

    async def _serve_version(self, request):
        answer = await super()._serve_version(request)
        answer["groupVersion"] = answer["groupVersion"].lstrip("/")
        for entry in answer["resources"]:
            if "/" in entry["name"]:  # subresources have no short names of their own
                entry["shortNames"], entry["categories"] = [], []
        return answer

    async def _serve_list(self, request):
        answer = await super()._serve_list(request)
        resource = request.resource
        kind = self.resources[resource].kind if resource in self.resources else None
        answer["kind"] = f"{kind or resource.plural.title()}List"
        answer["apiVersion"] = f"{resource.group}/{resource.version}" if resource.group else resource.version
        return answer

    def _stamp_new(self, obj: dict) -> None:
        meta = obj.setdefault("metadata", {})
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + secrets.token_hex(3)[:5]
        meta.update({
            "uid": str(uuid.uuid4()),
            "resourceVersion": str(next(self._versions)),
            "generation": 1,
            "creationTimestamp": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        })

    def _stamp_update(self, request) -> None:
        key = (request.resource, request.namespace, request.name)
        if key not in self.objects or self.objects[key].deleted:
            return
        current = self.objects[key].raw
        expected_version = (request.data.get("metadata") or {}).get("resourceVersion")
        if expected_version is not None and expected_version != current["metadata"].get("resourceVersion"):
            raise kmock.KubernetesError(status=409, reason="Conflict",
                                        message="the object has been modified; apply your changes to the latest version")
        merged = dicts.patch_dict(copy.deepcopy(current), copy.deepcopy(request.data))
        meta = request.data.setdefault("metadata", {})
        meta["resourceVersion"] = str(next(self._versions))
        if request.subresource is None and merged.get("spec") != current.get("spec"):
            meta["generation"] = current["metadata"].get("generation", 1) + 1

    async def _collect_garbage(self) -> None:
        """Delete objects whose owners are all gone, repeatedly, as the kube-controller-manager would."""
        while True:
            async with self._lock:
                live_uids = {obj.raw["metadata"].get("uid") for obj in self.objects.values() if not obj.deleted}
                orphans = [
                    (key, obj) for key, obj in self.objects.items() if not obj.deleted
                    and obj.raw["metadata"].get("ownerReferences")
                    and not any(ref.get("uid") in live_uids for ref in obj.raw["metadata"]["ownerReferences"])
                ]
                for (resource, _, _), obj in orphans:
                    raw = obj.raw
                    obj.delete()
                    await self._buses[resource].put({"type": "DELETED", "object": raw})
            if not orphans:
                return
