"""The simulated world: continuous-batching replicas, one request queue, spot pools that reclaim capacity, and
the bill. Policies only see it through `snapshot`/`counts` (what Prometheus and the operator would report) and
act on it through `set_target`.

Model (documented in docs/autoscaler.md): an ideal load balancer admits queued requests FIFO to the serving
replica with the least prefill work outstanding (then the fewest running) among those with a batch slot and KV room. A replica runs prefills one after another (each delays
decoding on that replica) and decodes all admitted sequences together, one token per `decode_step_s(batch)`.
Spot replicas wait (Pending, unbilled) until their pool has room; when a pool's capacity drops, the excess
replicas get a preemption notice and die `notice_s` later; requests still running on a dead replica are retried
from the front of the queue (their progress is lost).
"""

import collections
import dataclasses
import heapq
import itertools
import random

from fleetserve.autoscaler.metrics import MetricsSnapshot
from fleetserve.autoscaler.sim_profile import ReplicaProfile
from fleetserve.autoscaler.sim_traces import SpotTrace, TraceRequest

ON_DEMAND, SPOT = "on_demand", "spot"
METRICS_KEPT_S = 120.0


@dataclasses.dataclass
class SimRequest:
    trace: TraceRequest
    scored: bool = True  # False for the warm-up replay that precedes the trace
    admitted_s: float | None = None
    first_token_s: float | None = None
    finish_s: float | None = None
    retries: int = 0

    @property
    def ttft_s(self) -> float:
        return self.first_token_s - self.trace.arrival_s

    @property
    def itl_s(self) -> float:
        tokens = self.trace.output_tokens
        return 0.0 if tokens <= 1 else (self.finish_s - self.first_token_s) / (tokens - 1)


@dataclasses.dataclass(frozen=True)
class SpotPool:
    """One zone/instance pool: capacity(t) = trace count at offset + t, scaled so the trace maximum is `size`."""

    trace: SpotTrace
    offset_s: float
    size: int

    def capacity(self, t: float) -> int:
        if self.trace.max_count == 0:  # a zone that never had capacity
            return 0
        return round(self.trace.count_at(self.offset_s + t) / self.trace.max_count * self.size)


class Replica:
    def __init__(self, kind: str, requested_s: float):
        self.kind = kind
        self.pool: int | None = None
        self.placed_s: float | None = None  # billed from here; None while Pending (spot without room)
        self.ready_s: float | None = None
        self.noticed_s: float | None = None  # preemption notice received
        self.dies_s: float | None = None
        self.removing = False  # scale-down: finish running requests, take no new ones
        self.ended_s: float | None = None
        self.requested_s = requested_s
        self.clock = 0.0  # virtual decode clock, in tokens per sequence
        self.prefill_debt_s = 0.0
        self.running: list = []  # heap of (clock at which the request finishes, tiebreak, request)
        self.kv_tokens = 0

    def is_ready(self, t: float) -> bool:
        return self.ended_s is None and self.ready_s is not None and self.ready_s <= t

    def is_starting(self, t: float) -> bool:
        return self.ended_s is None and self.placed_s is not None and not self.is_ready(t)

    def is_pending(self) -> bool:
        return self.ended_s is None and self.placed_s is None


@dataclasses.dataclass(frozen=True)
class Counts:
    ready: int
    starting: int
    pending: int


class Cluster:
    def __init__(self, profile: ReplicaProfile, pools: list[SpotPool], notice_s: float, drain_on_notice: bool, seed: int):
        self.profile = profile
        self.pools = pools
        self.notice_s = notice_s
        self.drain_on_notice = drain_on_notice
        self.random = random.Random(seed)
        self.replicas: list[Replica] = []
        self.queue: collections.deque[SimRequest] = collections.deque()
        self.finished: list[SimRequest] = []
        self.rejected: list[SimRequest] = []  # never fit one replica's KV cache: refused, as the engine does
        self.preemptions = 0
        self._arrivals: collections.deque[float] = collections.deque()
        self._recent: collections.deque[SimRequest] = collections.deque()  # finished within METRICS_KEPT_S
        self._tiebreak = itertools.count()

    # --- what policies see -------------------------------------------------------------------------
    def alive(self, kind: str) -> list[Replica]:
        return [r for r in self.replicas if r.kind == kind and r.ended_s is None and not r.removing]

    def counts(self, kind: str, t: float) -> Counts:
        alive = [r for r in self.alive(kind) if r.noticed_s is None]
        return Counts(
            ready=sum(r.is_ready(t) for r in alive),
            starting=sum(r.is_starting(t) for r in alive),
            pending=sum(r.is_pending() for r in alive),
        )

    def in_system(self) -> int:
        return len(self.queue) + sum(len(r.running) for r in self.replicas if r.ended_s is None)

    def arrival_rate(self, t: float, window_s: float) -> float:
        return sum(1 for a in self._arrivals if a > t - window_s) / window_s

    def snapshot(self, t: float, window_s: float) -> MetricsSnapshot:
        """What the Prometheus queries of metrics.py would return for this cluster."""
        serving = [r for r in self.replicas if r.is_ready(t)]
        done = [q for q in self._recent if q.finish_s > t - window_s]
        ttfts = sorted(q.ttft_s for q in done)

        def mean(values):
            values = list(values)
            return sum(values) / len(values) if values else None

        multi_token = [q for q in done if q.trace.output_tokens > 1]
        return MetricsSnapshot(
            replicas_reporting=len(serving),
            arrival_rate=self.arrival_rate(t, window_s),
            waiting=len(self.queue),
            running=sum(len(r.running) for r in serving),
            kv_cache_usage=mean(r.kv_tokens / self.profile.kv_cache_tokens for r in serving),
            prompt_tokens_rate=sum(q.trace.prompt_tokens for q in done) / window_s,
            generation_tokens_rate=sum(q.trace.output_tokens for q in done) / window_s,
            completion_rate=len(done) / window_s,
            ttft_mean_s=mean(ttfts),
            itl_mean_s=mean(q.itl_s for q in multi_token),
            queue_time_mean_s=mean(q.admitted_s - q.trace.arrival_s for q in done),
            e2e_mean_s=mean(q.finish_s - q.trace.arrival_s for q in done),
            ttft_quantile_s=ttfts[int(0.95 * (len(ttfts) - 1))] if ttfts else None,
        )

    # --- what policies do --------------------------------------------------------------------------
    def set_target(self, t: float, kind: str, target: int) -> None:
        alive = [r for r in self.alive(kind) if r.noticed_s is None]
        for _ in range(target - len(alive)):
            self._add(kind, t)
        surplus = len(alive) - target
        # Cheapest to give up first: never-placed, then still starting, then the least busy serving ones.
        for replica in sorted(alive, key=lambda r: (r.placed_s is not None, r.is_ready(t), len(r.running)))[:max(0, surplus)]:
            if replica.is_ready(t):
                replica.removing = True
            else:
                replica.ended_s = t

    def _add(self, kind: str, t: float) -> None:
        replica = Replica(kind, t)
        if kind == ON_DEMAND:
            self._place(replica, None, t)
        self.replicas.append(replica)

    def _place(self, replica: Replica, pool: int | None, t: float) -> None:
        replica.pool, replica.placed_s, replica.ready_s = pool, t, t + self.profile.cold_start_s

    # --- the world moving on -----------------------------------------------------------------------
    def arrive(self, request: TraceRequest, scored: bool = True) -> None:
        if request.prompt_tokens + request.output_tokens > self.profile.kv_cache_tokens:
            self.rejected.append(SimRequest(request, scored))
            return
        self.queue.append(SimRequest(request, scored))
        self._arrivals.append(request.arrival_s)

    def step(self, t: float, dt: float) -> None:
        self._reclaim_spot(t)
        self._place_pending_spot(t)
        self._admit(t)
        for replica in self.replicas:
            if replica.is_ready(t):
                self._decode(replica, t, dt)
        for replica in self.replicas:
            if replica.removing and replica.ended_s is None and not replica.running:
                replica.ended_s = t + dt
        self._forget_old(t + dt)

    def _spot_in_pool(self, pool: int) -> list[Replica]:
        return [r for r in self.replicas if r.kind == SPOT and r.pool == pool and r.ended_s is None and r.noticed_s is None]

    def _reclaim_spot(self, t: float) -> None:
        for index, pool in enumerate(self.pools):
            holders = self._spot_in_pool(index)
            excess = len(holders) - pool.capacity(t)
            for replica in self.random.sample(holders, max(0, excess)):
                replica.noticed_s = t
                replica.dies_s = t if not replica.is_ready(t) else t + self.notice_s
                self.preemptions += 1
        for replica in self.replicas:
            if replica.dies_s is not None and replica.dies_s <= t and replica.ended_s is None:
                self._kill(replica, t)

    def _kill(self, replica: Replica, t: float) -> None:
        lost = sorted((entry[2] for entry in replica.running), key=lambda q: q.trace.arrival_s, reverse=True)
        for request in lost:  # retried by the client: back to the front, progress lost
            request.retries += 1
            request.admitted_s = request.first_token_s = None
            self.queue.appendleft(request)
        replica.running, replica.kv_tokens, replica.ended_s = [], 0, t

    def _place_pending_spot(self, t: float) -> None:
        """Spread: each Pending spot replica goes to the pool with the most free room, if any has room."""
        for replica in self.replicas:
            if replica.kind != SPOT or not replica.is_pending():
                continue
            free = [(pool.capacity(t) - len(self._spot_in_pool(i)), i) for i, pool in enumerate(self.pools)]
            room, index = max(free, default=(0, None))
            if room > 0:
                self._place(replica, index, t)

    def _decode(self, replica: Replica, t: float, dt: float) -> None:
        budget = dt - replica.prefill_debt_s
        replica.prefill_debt_s = max(0.0, -budget)
        if budget <= 0 or not replica.running:
            return
        step_s = self.profile.decode_step_s(len(replica.running))
        start_clock = replica.clock
        replica.clock += budget / step_s
        busy_before = dt - budget
        while replica.running and replica.running[0][0] <= replica.clock:
            finish_clock, _, request = heapq.heappop(replica.running)
            request.finish_s = t + busy_before + max(0.0, finish_clock - start_clock) * step_s
            replica.kv_tokens -= request.trace.prompt_tokens + request.trace.output_tokens
            self.finished.append(request)
            self._recent.append(request)

    def _accepting(self, t: float) -> list[Replica]:
        return [
            r for r in self.replicas
            if r.is_ready(t) and not r.removing and (r.noticed_s is None or not self.drain_on_notice)
        ]

    def _admit(self, t: float) -> None:
        """Admit queued requests (those arriving before t + step included) at the start of step t."""
        accepting = self._accepting(t)
        profile = self.profile
        while self.queue and accepting:
            request = self.queue[0]
            tokens = request.trace.prompt_tokens + request.trace.output_tokens
            fits = [r for r in accepting if len(r.running) < profile.max_batch and r.kv_tokens + tokens <= profile.kv_cache_tokens]
            if not fits:
                return
            replica = min(fits, key=lambda r: (r.prefill_debt_s, len(r.running)))
            self.queue.popleft()
            # Arrivals within this step are admitted when they arrive; prefills on one replica run in turn. Only
            # the prefill itself is debt (time taken from decoding), not the idle gap before the arrival.
            request.admitted_s = max(t, request.trace.arrival_s)
            prefill_s = profile.prefill_s(request.trace.prompt_tokens)
            request.first_token_s = max(request.admitted_s, t + replica.prefill_debt_s) + prefill_s
            replica.prefill_debt_s += prefill_s
            replica.kv_tokens += tokens
            if request.trace.output_tokens <= 1:
                request.finish_s = request.first_token_s
                replica.kv_tokens -= tokens
                self.finished.append(request)
                self._recent.append(request)
                continue
            finish_clock = replica.clock + request.trace.output_tokens - 1
            heapq.heappush(replica.running, (finish_clock, next(self._tiebreak), request))

    def _forget_old(self, t: float) -> None:
        while self._arrivals and self._arrivals[0] <= t - METRICS_KEPT_S:
            self._arrivals.popleft()
        while self._recent and self._recent[0].finish_s <= t - METRICS_KEPT_S:
            self._recent.popleft()

    # --- the bill ----------------------------------------------------------------------------------
    def gpu_hours(self, kind: str, start_s: float, end_s: float) -> float:
        """GPU-hours billed for `kind` between start_s and end_s."""
        seconds = sum(
            max(0.0, min(end_s, r.ended_s if r.ended_s is not None else end_s) - max(start_s, r.placed_s))
            for r in self.replicas if r.kind == kind and r.placed_s is not None
        )
        return seconds * self.profile.gpus_per_replica / 3600
