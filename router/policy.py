"""Which replica serves a request: pure decisions over what the router knows (no I/O here).

Three policies, selectable for comparison:
- `round-robin`: what a Kubernetes Service gives today;
- `least-loaded`: the replica with the fewest outstanding requests;
- `prefix`: the replica most likely to hold the request's longest cached prefix, among the idle replicas if any
  is idle, else among replicas whose load stays under `balance` times the mean (consistent hashing with bounded
  loads, applied to prefix affinity). A prompt nobody has cached, or whose longest cached prefix is under
  MIN_AFFINITY_SHARE of it longer than the least loaded replica's, goes to the least loaded replica.

The router cannot see the engines' caches, so `PrefixIndex` keeps its own estimate: the blocks of every prompt it
sent to a replica (`Router.sent`), in LRU order, up to that replica's cache size.
"""

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

POLICIES = ("prefix", "least-loaded", "round-robin")
DEFAULT_BALANCE = 1.25  # a replica may carry up to 25% more than the mean; measured in benchmarks/router_replay.py
# Affinity must save at least this share of the prompt's blocks over the least loaded replica's cached prefix: a
# block or two (a shared system prompt's tail, one earlier turn's opening) saves less prefill than joining a busier
# queue costs. The Mooncake replay at 8 replicas: 36.3% hits with no minimum, 36.0% with 1/4, 34.2% with 1/2.
MIN_AFFINITY_SHARE = 0.25


@dataclass
class PrefixIndex:
    """Per replica, the block names it most likely still caches (None: unbounded, as the engines' caches grow)."""

    capacity_blocks: int | None = None
    blocks: dict[str, OrderedDict] = field(default_factory=dict)

    def cached_prefix(self, replica: str, hashes: Sequence[int]) -> int:
        """How many leading blocks of the request the replica holds."""
        cached = self.blocks.get(replica)
        if not cached:
            return 0
        for count, block in enumerate(hashes):
            if block not in cached:
                return count
        return len(hashes)

    def record(self, replica: str, hashes: Sequence[int]) -> None:
        cached = self.blocks.setdefault(replica, OrderedDict())
        for block in hashes:
            cached[block] = None
            cached.move_to_end(block)
        if self.capacity_blocks is not None:
            while len(cached) > self.capacity_blocks:
                cached.popitem(last=False)

    def forget(self, replica: str) -> None:
        self.blocks.pop(replica, None)


@dataclass
class Router:
    policy: str = "prefix"
    balance: float = DEFAULT_BALANCE
    index: PrefixIndex = field(default_factory=PrefixIndex)
    _turn: int = 0

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ValueError(f"policy: expected one of {', '.join(POLICIES)}, got {self.policy!r}")
        if not self.balance >= 1:
            raise ValueError(f"balance: must be >= 1 (a share of the mean load), got {self.balance}")

    def choose(self, hashes: Sequence[int], loads: dict[str, float], exclude: frozenset[str] = frozenset()) -> str | None:
        """The replica for a request whose prompt has these block names; `loads` maps each ready replica to its
        outstanding requests. None when no replica is left after `exclude` (those already tried)."""
        candidates = sorted(r for r in loads if r not in exclude)
        if not candidates:
            return None
        if self.policy == "round-robin":
            self._turn += 1
            return candidates[self._turn % len(candidates)]
        if self.policy == "least-loaded":
            self._turn += 1
            return min(candidates, key=lambda r: (loads[r], self._rotation(r, candidates)))
        # Bounded load: a replica qualifies if taking the request leaves it within `balance` times the mean load
        # after it, and the least loaded always does. No rounding up of the bound (as consistent hashing with
        # bounded loads does): at low load, where one request more is a large share of a replica's work, that
        # would let affinity queue a request behind another while a replica sits idle.
        bound = max(self.balance * (sum(loads[r] for r in candidates) + 1) / len(candidates),
                    min(loads[r] for r in candidates) + 1)
        # and never behind another request while a replica sits idle: the prefix saved is worth less than waiting
        # for the request ahead (three replicas on a quiet CPU, docs/router.md, Measured: p99 TTFT 1152 ms
        # against least-loaded's 959 without this rule)
        allowed = ([r for r in candidates if loads[r] < 1]
                   or [r for r in candidates if loads[r] + 1 <= bound])
        best = max(allowed, key=lambda r: (self.index.cached_prefix(r, hashes), -loads[r], -self._rotation(r, allowed)))
        least = min(candidates, key=lambda r: (loads[r], self._rotation(r, candidates)))
        self._turn += 1
        gain = self.index.cached_prefix(best, hashes) - self.index.cached_prefix(least, hashes)
        return best if gain >= MIN_AFFINITY_SHARE * len(hashes) else least

    def sent(self, replica: str, hashes: Sequence[int]) -> int:
        """Records that the replica got the request (its blocks are cached there from now on); returns how many of
        them it was estimated to hold already."""
        cached = self.index.cached_prefix(replica, hashes)
        self.index.record(replica, hashes)
        return cached

    def _rotation(self, replica: str, candidates: list[str]) -> int:
        """Ties go round the replicas instead of always to the first name."""
        return (candidates.index(replica) - self._turn) % len(candidates)

    def forget(self, replica: str) -> None:
        self.index.forget(replica)
