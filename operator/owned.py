"""What every child of an LLMDeployment carries: its name and namespace, the operator's labels (by which the
operator finds its children) and the LLMDeployment as controlling owner (deleting it deletes them)."""

from fleetserve.api.labels import INSTANCE_LABEL, MANAGED_BY, MANAGED_BY_LABEL, NAME_LABEL, PART_OF, PART_OF_LABEL
from fleetserve.api.spec import API_VERSION, KIND


def child_labels(name: str, app: str) -> dict:
    """`app`: what the child belongs to, ENGINE_NAME or ROUTER_NAME."""
    return {NAME_LABEL: app, INSTANCE_LABEL: name, MANAGED_BY_LABEL: MANAGED_BY, PART_OF_LABEL: PART_OF}


def owner_reference(body: dict) -> dict:
    meta = body["metadata"]
    return {"apiVersion": API_VERSION, "kind": KIND, "name": meta["name"], "uid": meta["uid"],
            "controller": True, "blockOwnerDeletion": True}


def child_meta(body: dict, name: str, labels: dict) -> dict:
    meta = {"name": name, "namespace": body["metadata"]["namespace"], "labels": labels}
    if body["metadata"].get("uid"):  # `fleetserve render` has none
        meta["ownerReferences"] = [owner_reference(body)]
    return meta
