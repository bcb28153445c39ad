"""status.conditions, written by both the operator and the autoscaler: one transition rule, one clock format."""

import datetime

CONDITION_TYPES = ("Ready", "Progressing", "Degraded", "InsufficientCapacity", "SpotPreempted", "ScalingActive")


def now_rfc3339() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def condition(kind: str, ok: bool, reason: str, message: str) -> dict:
    return {"type": kind, "status": "True" if ok else "False", "reason": reason, "message": message}


def merge_conditions(previous: list[dict], current: list[dict], now: str) -> list[dict]:
    """Keep lastTransitionTime when a condition's status is unchanged; keep conditions not recomputed.

    A merge patch replaces the list whole, so each writer merges its own conditions into the fresh list.
    """
    before = {c["type"]: c for c in previous or []}
    merged = []
    for cond in current:
        old = before.get(cond["type"])
        unchanged = old is not None and old.get("status") == cond["status"]
        merged.append({**cond, "lastTransitionTime": old["lastTransitionTime"] if unchanged else now})
    recomputed = {c["type"] for c in current}
    merged += [c for c in previous or [] if c["type"] not in recomputed]
    return sorted(merged, key=lambda c: CONDITION_TYPES.index(c["type"]))
