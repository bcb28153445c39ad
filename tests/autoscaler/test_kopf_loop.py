"""The autoscaler's loop inside the operator: no finalizer on any LLMDeployment, one tick per autoscaled
deployment per round, a slow one never holds up the others, and a replica paused by Kopf peering stays quiet."""

import asyncio
import datetime
import threading

import kopf

from fleetserve.autoscaler import kopf_handlers
from fleetserve.operator import handlers  # noqa: F401  (the operator's handlers, registered as the CLI loads them)

NOW = datetime.datetime(2026, 1, 1, 12, 0, tzinfo=datetime.timezone.utc)


def body(name: str) -> dict:
    return {"metadata": {"namespace": "team-a", "name": name, "uid": f"uid-{name}"}, "spec": {}}


def test_nothing_registered_puts_a_finalizer_on_llmdeployments():
    """Kopf adds its finalizer for timers, daemons and on-delete handlers; deletes then wait for the operator."""
    registry = kopf.get_default_registry()
    assert not registry._spawning.get_all_handlers()  # no timer, no daemon
    assert not [h.id for h in registry._changing.get_all_handlers() if h.requires_finalizer]
    assert "autoscaled" in {h.id for h in registry._indexing.get_all_handlers()}


def test_the_filter_never_raises_on_a_bad_spec():
    enabled = kopf_handlers._autoscaling_enabled
    assert enabled(spec={"autoscaling": {"enabled": True}})
    for spec in ({}, {"autoscaling": None}, {"autoscaling": "yes"}, {"autoscaling": ["enabled"]},
                 {"autoscaling": {"enabled": "true"}}, {"autoscaling": {}}):
        assert not enabled(spec=spec)


def peer(priority: int, seconds_ago: float, lifetime: int = 60) -> dict:
    seen = NOW - datetime.timedelta(seconds=seconds_ago)
    return {"priority": priority, "lifetime": lifetime, "lastseen": seen.isoformat()}


def test_peering_follows_kopfs_rule():
    paused = kopf_handlers.paused_by_peers
    assert not paused({"me": peer(100, 5)}, 100, NOW)
    assert not paused({"me": peer(100, 5), "standby": peer(50, 5)}, 100, NOW)
    assert paused({"me": peer(100, 5), "newer": peer(200, 5)}, 100, NOW)
    assert paused({"me": peer(100, 5), "twin": peer(100, 5)}, 100, NOW)  # kopf pauses both
    assert not paused({"me": peer(100, 5), "gone": peer(200, 120)}, 100, NOW)  # dead peers don't count
    assert not paused({}, 100, NOW)


class FakeTicks:
    """Stands in for one deployment's tick; `slow` ones block until released."""

    def __init__(self, slow: set[str]):
        self.calls: list[str] = []
        self.release = threading.Event()
        self.slow = slow

    def __call__(self, llmd: dict) -> None:
        self.calls.append(llmd["metadata"]["name"])
        if llmd["metadata"]["name"] in self.slow:
            self.release.wait(5)


async def run_rounds(monkeypatch, index: dict, active, ticks: FakeTicks, seconds: float) -> None:
    monkeypatch.setattr(kopf_handlers, "TICK_INTERVAL_S", 0.05)
    monkeypatch.setattr(kopf_handlers, "autoscale", ticks)
    monkeypatch.setattr(kopf_handlers, "_active", lambda settings: active())
    loop = asyncio.create_task(kopf_handlers._run_loop(index, kopf.OperatorSettings()))
    await asyncio.sleep(seconds)
    loop.cancel()
    ticks.release.set()


async def test_each_deployment_ticks_every_round_and_a_slow_one_holds_up_only_itself(monkeypatch):
    index = {("team-a", "fast"): [body("fast")], ("team-a", "slow"): [body("slow")]}
    ticks = FakeTicks(slow={"slow"})
    await run_rounds(monkeypatch, index, lambda: True, ticks, seconds=0.6)
    assert ticks.calls.count("fast") >= 5
    assert ticks.calls.count("slow") == 1  # still in its first tick: skipped, not queued


async def test_a_paused_replica_ticks_nothing_and_forgets_what_it_learned(monkeypatch):
    index = {("team-a", "chat"): [body("chat")]}
    monkeypatch.setitem(kopf_handlers._memories, ("team-a", "chat"), kopf_handlers.LoopMemory())
    ticks = FakeTicks(slow=set())
    await run_rounds(monkeypatch, index, lambda: False, ticks, seconds=0.3)
    assert ticks.calls == [] and ("team-a", "chat") not in kopf_handlers._memories


async def test_a_deployment_leaving_the_index_is_forgotten(monkeypatch):
    index = {("team-a", "chat"): [body("chat")]}
    monkeypatch.setitem(kopf_handlers._memories, ("team-a", "gone"), kopf_handlers.LoopMemory())
    ticks = FakeTicks(slow=set())
    await run_rounds(monkeypatch, index, lambda: True, ticks, seconds=0.2)
    assert "chat" in ticks.calls and ("team-a", "gone") not in kopf_handlers._memories


def test_events_are_posted_about_the_llmdeployment():
    event = kopf_handlers.event_manifest(body("chat"), "Normal", "Scaled", "2 -> 3 replicas", "2026-01-01T00:00:00Z")
    assert event["involvedObject"] == {"apiVersion": "fleetserve.io/v1alpha1", "kind": "LLMDeployment",
                                       "name": "chat", "namespace": "team-a", "uid": "uid-chat"}
    assert event["metadata"] == {"generateName": "chat.", "namespace": "team-a"}
    assert (event["type"], event["reason"], event["message"]) == ("Normal", "Scaled", "2 -> 3 replicas")


async def test_an_unreadable_peering_object_holds_the_round_and_the_loop_goes_on(monkeypatch):
    rounds = []

    def active():
        rounds.append(1)
        if len(rounds) == 1:
            raise RuntimeError("connection refused")
        return True

    index = {("team-a", "chat"): [body("chat")]}
    ticks = FakeTicks(slow=set())
    await run_rounds(monkeypatch, index, active, ticks, seconds=0.3)
    assert len(rounds) > 2 and ticks.calls  # ticks resumed after the failed round


def test_a_verbose_tick_line_names_the_numbers_behind_the_decision():
    from fleetserve.autoscaler.control import LoopMemory
    from fleetserve.autoscaler.metrics import MetricsSnapshot, MetricsUnavailable

    snapshot = MetricsSnapshot(replicas_reporting=2, arrival_rate=1.25, waiting=7, running=16, kv_cache_usage=0.4,
                               prompt_tokens_rate=100, generation_tokens_rate=30, completion_rate=1.0,
                               ttft_mean_s=0.8, itl_mean_s=0.1, queue_time_mean_s=0.3, e2e_mean_s=4.0,
                               ttft_quantile_s=2.5)
    line = kopf_handlers._measured(snapshot, LoopMemory())
    assert "arrivals 1.25/s" in line and "waiting 7 on 2 replicas" in line and "TTFT quantile 2.50s" in line
    assert "8 slots x 10.0s" in line  # the prior, until a busy tick measures the replicas
    assert kopf_handlers._measured(MetricsUnavailable("down"), LoopMemory()) == "no metrics"
