"""freeze_startup_heap: what is alive at the call leaves the collector's reach; what is built after it is still
collected, cycles included."""

import gc
import weakref

import pytest

from fleetserve.engine.startup_heap import freeze_startup_heap


class Node:
    pass


@pytest.fixture
def unfrozen_after():
    yield
    gc.unfreeze()  # this pytest process builds and drops engines: nothing may stay frozen


def cycle() -> weakref.ref:
    a, b = Node(), Node()
    a.other, b.other = b, a
    return weakref.ref(a)


def test_objects_alive_at_the_call_are_frozen_and_later_cycles_still_collected(unfrozen_after):
    kept = [Node() for _ in range(100)]
    before = gc.get_freeze_count()
    frozen = freeze_startup_heap()
    assert frozen == gc.get_freeze_count() >= before + len(kept)
    oldest = {id(o) for o in gc.get_objects(generation=2)}  # collected once, read once
    assert not any(id(n) in oldest for n in kept)

    later = cycle()  # built after the freeze, dropped: a full collection still frees it
    assert later() is not None
    gc.collect()
    assert later() is None


def test_a_cycle_dropped_before_the_call_is_freed_by_it(unfrozen_after):
    dropped = cycle()
    freeze_startup_heap()
    assert dropped() is None  # collected first, not frozen with the live objects
