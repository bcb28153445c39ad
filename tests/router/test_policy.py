"""The pure routing policies: bounded load, prefix affinity, exclusion, argument checks and the LRU estimate."""

import random

import pytest

from fleetserve.router.policy import POLICIES, PrefixIndex, Router

REPLICAS = ("a", "b", "c", "d")


def test_prefix_never_exceeds_the_bounded_load():
    router = Router("prefix", balance=1.25)
    loads = dict.fromkeys(REPLICAS, 0)
    rng = random.Random(0)
    for _ in range(500):
        # Every prompt shares a long prefix, so affinity alone would send them all to one replica.
        chosen = router.choose([1, 2, 3, rng.randrange(5)], loads)
        assert loads[chosen] < 1.25 * (sum(loads.values()) + 1) / len(loads)
        loads[chosen] += 1
        if rng.random() < 0.5:  # a request somewhere finishes
            busy = [r for r in loads if loads[r]]
            loads[rng.choice(busy)] -= 1


def test_prefix_keeps_a_shared_prefix_on_one_replica():
    router = Router("prefix")
    loads = dict.fromkeys(REPLICAS, 10)
    first = router.choose([1, 2, 3], loads)
    assert router.sent(first, [1, 2, 3]) == 0
    loads[first] += 1
    # The follow-up turn extends the prompt: it goes back although that replica is now the busiest.
    assert router.choose([1, 2, 3, 4], loads) == first
    assert router.sent(first, [1, 2, 3, 4]) == 3  # the estimate the router's hit metric counts
    loads[first] += 1
    # A prompt nobody has cached goes to the least loaded instead.
    assert router.choose([7, 8], loads) != first


def test_at_low_load_affinity_never_queues_behind_a_busy_replica_while_one_is_idle():
    router = Router("prefix", balance=1.25)
    router.index.record("a", [1, 2, 3])
    # One request more on "a" would be 2 against a mean of 1 after it: over the bound, however long its prefix.
    assert router.choose([1, 2, 3, 4], {"a": 1, "b": 1, "c": 0}) == "c"
    # Within the bound ((0 + 1 + 3 + 1) / 3 x 1.25 = 2.08 >= 1 + 1), but "c" is idle: the request waits for none.
    assert router.choose([1, 2, 3, 4], {"a": 1, "b": 3, "c": 0}) == "c"
    # Busy replicas all: one request over the mean is within 1.25x, so the prefix wins.
    assert router.choose([1, 2, 3, 4], {"a": 8, "b": 8, "c": 7}) == "a"


def test_a_prefix_barely_longer_than_the_least_loaded_replicas_buys_no_affinity():
    router = Router("prefix")
    loads = {"a": 4, "b": 4, "c": 3}
    router.index.record("a", [1, 2, 3])
    router.index.record("b", [1, 2])
    router.index.record("c", [1, 2])
    # "a" saves one block of eight over the least loaded "c": under MIN_AFFINITY_SHARE, so "c" takes it.
    assert router.choose([1, 2, 3, 4, 5, 6, 7, 8], loads) == "c"
    # Two blocks of eight is a quarter: affinity wins within the bound.
    router.index.record("a", [1, 2, 3, 4])
    assert router.choose([1, 2, 3, 4, 5, 6, 7, 8], loads) == "a"


def test_prefix_prefers_the_longest_cached_prefix():
    router = Router("prefix")
    loads = dict.fromkeys(REPLICAS, 10)
    router.index.record("b", [1, 2])
    router.index.record("c", [1, 2, 3])
    assert router.choose([1, 2, 3, 4], loads) == "c"


@pytest.mark.parametrize("policy", POLICIES)
def test_excluded_replicas_are_skipped(policy):
    router = Router(policy)
    loads = {"a": 0, "b": 5, "c": 5}
    router.index.record("a", [1, 2])
    for _ in range(10):
        assert router.choose([1, 2], loads, exclude=frozenset({"a"})) in {"b", "c"}
    assert router.choose([1, 2], loads, exclude=frozenset(loads)) is None


def test_round_robin_and_least_loaded():
    turns = Router("round-robin")
    assert {turns.choose([], dict.fromkeys(REPLICAS, 0)) for _ in REPLICAS} == set(REPLICAS)
    assert Router("least-loaded").choose([], {"a": 3, "b": 1, "c": 2}) == "b"
    least = Router("least-loaded")  # ties go round the replicas, never always to the first name
    assert {least.choose([], dict.fromkeys(REPLICAS, 0)) for _ in REPLICAS} == set(REPLICAS)


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="policy: expected one of prefix, least-loaded, round-robin, got 'hash'"):
        Router("hash")
    with pytest.raises(ValueError, match=r"balance: must be >= 1 .* got 0.9"):
        Router("prefix", balance=0.9)
    with pytest.raises(ValueError, match="balance"):
        Router("prefix", balance=float("nan"))


def test_prefix_index_evicts_least_recently_used_blocks():
    index = PrefixIndex(capacity_blocks=3)
    index.record("a", [1, 2, 3])
    index.record("a", [1, 4])  # touches 1, adds 4: block 2 is the oldest and goes
    assert list(index.blocks["a"]) == [3, 1, 4]
    assert index.cached_prefix("a", [1, 2, 3]) == 1
    assert index.cached_prefix("a", [1, 4, 5]) == 2
    assert index.cached_prefix("b", [1]) == 0
    index.forget("a")
    assert index.cached_prefix("a", [1]) == 0


def test_unbounded_index_keeps_everything():
    index = PrefixIndex()
    index.record("a", range(10_000))
    assert index.cached_prefix("a", range(10_000)) == 10_000
