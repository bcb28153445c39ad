"""The simulated world: replicas that schedule like our engine, a router in front of them, spot pools that
reclaim capacity, Prometheus scraping them, and the bill. Policies only see it through `snapshot`/`counts` (what
Prometheus and the operator would report) and act on it through `set_target`.

A replica follows engine_image/scheduler.py: each engine step decodes one token for every running sequence and
fills the rest of the token budget (`max_num_batched_tokens`) with prompt chunks, first come first served, so
prefills share steps with decodes (chunked prefill). A step costs the decode step at that batch and context plus
the chunk at the prefill speed. A request is admitted while the batch has a slot and the KV cache has room for its
prompt and output (the engine allocates blocks as it goes and preempts by recompute when they run out; reserving
up front keeps the same capacity without modelling recompute). A prompt of max_model_len or more is rejected at
arrival, as the engine's server does; an output is cut at max_model_len. Within one simulation step a replica's
work is advanced in segments that each end when a prompt finishes, so the step length bounds no TTFT.

Routing: `round_robin` (a Kubernetes Service, the default), `least_loaded` (fewest requests in the replica) or
`ideal` (one global queue; a request goes to the replica with the least prefill outstanding among those with a
free slot, when it has one). Requests no replica accepts wait at the router.

Spot pools hold the trace's count of instances at offset + t, absolute; a Pending spot replica goes where the operator's
zone spread puts it (the pool with room holding fewest of ours). When a pool shrinks, the excess replicas
get a notice and die `notice_s` later; everything on a dead replica goes back through the router and is prefilled
again on another replica (the client's retry). Cold start is drawn per replica from the profile's distribution.
"""

import collections
import dataclasses
import heapq
import itertools
import math
import random

import numpy as np

from fleetserve.api.engine_defaults import token_buckets
from fleetserve.autoscaler.metrics import BURST_HORIZON_WINDOWS, MetricsSnapshot
from fleetserve.autoscaler.sim_profile import ReplicaProfile
from fleetserve.autoscaler.sim_traces import SpotTrace, TraceRequest

ON_DEMAND, SPOT = "on_demand", "spot"
ROUTING = ("round_robin", "least_loaded", "ideal")
SCRAPE_INTERVAL_S = 15.0  # the PodMonitor's scrape interval: policies see the cluster as of the last scrape
MAX_WINDOW_S = 60.0  # longest rate window a policy asks `snapshot` for (the live loop's default)
# Longest look-back of any query: the completion burst's and the prompt histogram's, BURST_HORIZON_WINDOWS rate
# windows (as the live loop's queries in metrics.py), plus one window.
METRICS_KEPT_S = (BURST_HORIZON_WINDOWS + 1) * MAX_WINDOW_S


def prompt_histogram(prompt_tokens, longest_request: int) -> tuple[tuple[float, float], ...]:
    """Prompts counted in the engine's prompt-histogram buckets, cumulative with +Inf last, as the live loop's
    `sum by (le)` query returns them."""
    lengths = np.sort(np.asarray(prompt_tokens))
    bounds = [*token_buckets(longest_request), math.inf]
    return tuple((bound, float(np.searchsorted(lengths, bound, side="right"))) for bound in bounds)


@dataclasses.dataclass
class SimRequest:
    trace: TraceRequest
    scored: bool = True  # False for the warm-up replay that precedes the trace
    admitted_s: float | None = None
    first_token_s: float | None = None
    finish_s: float | None = None
    retries: int = 0
    prefill_left: float = 0.0
    decode_from: float = 0.0  # the replica's decode clock when this request started decoding

    @property
    def ttft_s(self) -> float:
        return self.first_token_s - self.trace.arrival_s

    @property
    def itl_s(self) -> float:
        tokens = self.trace.output_tokens
        return 0.0 if tokens <= 1 else (self.finish_s - self.first_token_s) / (tokens - 1)

    @property
    def kv_tokens(self) -> int:
        return self.trace.prompt_tokens + self.trace.output_tokens


@dataclasses.dataclass(frozen=True)
class SpotPool:
    """One zone/instance pool: capacity(t) = the trace's instance count at offset + t (absolute, 0 is valid)."""

    trace: SpotTrace
    offset_s: float

    def capacity(self, t: float) -> int:
        return self.trace.count_at(self.offset_s + t)


class Replica:
    def __init__(self, kind: str, requested_s: float):
        self.kind = kind
        self.pool: int | None = None
        self.placed_s: float | None = None  # billed from here; None while Pending (spot without room)
        self.ready_s: float | None = None
        self.noticed_s: float | None = None  # preemption notice received
        self.dies_s: float | None = None
        self.removing = False  # scale-down: finish what it holds, take nothing new
        self.ended_s: float | None = None
        self.requested_s = requested_s
        self.waiting: collections.deque[SimRequest] = collections.deque()  # routed here, not yet admitted
        self.prefilling: collections.deque[SimRequest] = collections.deque()
        self.prefill_tokens = 0.0  # prompt tokens still to prefill, over `prefilling`
        self.running: list = []  # decoding: heap of (clock at which it finishes, tiebreak, request)
        self.clock = 0.0  # decode clock: tokens each decoding sequence has produced since the replica started
        self.context_base = 0.0  # context tokens of the decoding sequences = context_base + len(running) * clock
        self.kv_tokens = 0

    def is_ready(self, t: float) -> bool:
        return self.ended_s is None and self.ready_s is not None and self.ready_s <= t

    def is_starting(self, t: float) -> bool:
        return self.ended_s is None and self.placed_s is not None and not self.is_ready(t)

    def is_pending(self) -> bool:
        return self.ended_s is None and self.placed_s is None

    def in_engine(self) -> int:
        return len(self.prefilling) + len(self.running)

    def load(self) -> int:
        return len(self.waiting) + self.in_engine()


@dataclasses.dataclass(frozen=True)
class Counts:
    ready: int
    starting: int
    pending: int


class Cluster:
    def __init__(self, profile: ReplicaProfile, pools: list[SpotPool], notice_s: float, drain_on_notice: bool,
                 seed: int, routing: str = "round_robin", quantile: float = 0.99):
        self.profile = profile
        self.pools = pools
        self.notice_s = notice_s
        self.drain_on_notice = drain_on_notice
        self.routing = routing
        self.quantile = quantile
        self.random = random.Random(seed)
        self.replicas: list[Replica] = []
        self.queue: collections.deque[SimRequest] = collections.deque()  # at the router: no replica took them yet
        self.finished: list[SimRequest] = []
        self.rejected: list[SimRequest] = []  # prompt of max_model_len or more: refused, as the engine does
        self.preemptions = 0
        self._arrivals: collections.deque[float] = collections.deque()  # arrival times
        self._recent: collections.deque[SimRequest] = collections.deque()  # finished within METRICS_KEPT_S
        # What the engine counts as it happens rather than at a request's end (engine_image/llm_engine.py,
        # server.py): (first token time, prompt tokens) when a prefill completes, and (end time, tokens, sum of their
        # gaps) for each stretch of decode steps; within MAX_WINDOW_S, the longest window they are read over.
        self._first_tokens: collections.deque[tuple[float, int]] = collections.deque()
        self._decoded: collections.deque[tuple[float, float, float]] = collections.deque()
        self._tiebreak = itertools.count()
        self._next_replica = 0
        self._scraped: tuple[float, float, MetricsSnapshot] | None = None  # (scrape time, window, snapshot)

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

    def waiting(self) -> int:
        """Requests not yet in an engine batch: at the router and in the replicas' waiting queues."""
        return len(self.queue) + sum(len(r.waiting) for r in self.replicas if r.ended_s is None)

    def in_system(self) -> int:
        return len(self.queue) + sum(r.load() for r in self.replicas if r.ended_s is None)

    def arrival_rate(self, t: float, window_s: float) -> float:
        return sum(1 for a in self._arrivals if a > t - window_s) / window_s

    def snapshot(self, t: float, window_s: float) -> MetricsSnapshot:
        """What the Prometheus queries of metrics.py return: computed at each scrape, stale in between."""
        assert window_s <= MAX_WINDOW_S, f"rate window {window_s} s: metrics are kept for {MAX_WINDOW_S} s windows"
        scrape_t = math.floor(t / SCRAPE_INTERVAL_S) * SCRAPE_INTERVAL_S
        if self._scraped is None or self._scraped[:2] != (scrape_t, window_s):
            self._scraped = (scrape_t, window_s, self._measure(t, window_s))
        return self._scraped[2]

    def _measure(self, t: float, window_s: float) -> MetricsSnapshot:
        serving = [r for r in self.replicas if r.is_ready(t)]
        done = [q for q in self._recent if q.finish_s > t - window_s]
        ttfts = sorted(q.ttft_s for q in done)
        prompts = sorted(q.trace.prompt_tokens for q in done)

        def mean(values):
            values = list(values)
            return sum(values) / len(values) if values else None

        def at_quantile(values):
            return values[int(self.quantile * (len(values) - 1))] if values else None

        # Highest completion rate over any rate window in the last BURST_HORIZON_WINDOWS windows, a window's end every
        # quarter window: the live loop's query (metrics.py; 5 min at 15 s steps at the default 60 s).
        horizon_s = BURST_HORIZON_WINDOWS * window_s
        burst = 0.0
        if self._recent:
            step_s = max(1.0, window_s // 4)
            times = np.sort([q.finish_s for q in self._recent])
            ends = t - step_s * np.arange(int((horizon_s - window_s) / step_s) + 1)
            in_window = np.searchsorted(times, ends, side="right") - np.searchsorted(times, ends - window_s, side="right")
            burst = float(in_window.max()) / window_s
        decoded = [(tokens, gaps_s) for end, tokens, gaps_s in self._decoded if end > t - window_s]
        decoded_tokens = sum(tokens for tokens, _ in decoded)
        first_tokens = [prompt for at, prompt in self._first_tokens if t - window_s < at <= t]
        # The engine's prompt histogram (its buckets, +Inf last) over the burst horizon, as the live query's
        # `sum by (le) (rate(...))` returns it.
        finished = [q.trace.prompt_tokens for q in self._recent if q.finish_s > t - horizon_s]
        buckets = tuple((bound, count / horizon_s) for bound, count in prompt_histogram(finished, self.profile.longest_request))
        return MetricsSnapshot(
            replicas_reporting=len(serving),
            arrival_rate=self.arrival_rate(t, window_s),
            waiting=len(self.queue) + sum(len(r.waiting) for r in serving),
            running=sum(r.in_engine() for r in serving),
            kv_cache_usage=mean(r.kv_tokens / self.profile.kv_cache_tokens for r in serving),
            prompt_tokens_rate=sum(first_tokens) / window_s,
            generation_tokens_rate=(len(first_tokens) + decoded_tokens) / window_s,
            completion_rate=len(done) / window_s,
            ttft_mean_s=mean(ttfts),
            itl_mean_s=sum(gaps_s for _, gaps_s in decoded) / decoded_tokens if decoded_tokens else None,
            queue_time_mean_s=mean(q.admitted_s - q.trace.arrival_s for q in done),
            e2e_mean_s=mean(q.finish_s - q.trace.arrival_s for q in done),
            ttft_quantile_s=at_quantile(ttfts),
            prompt_tokens_mean=mean(prompts),
            prompt_tokens_quantile=at_quantile(prompts),
            completion_burst_rate=burst,
            prompt_tokens_buckets=buckets if finished else None,
        )

    # --- what policies do --------------------------------------------------------------------------
    def set_target(self, t: float, kind: str, target: int) -> None:
        alive = [r for r in self.alive(kind) if r.noticed_s is None]
        for _ in range(target - len(alive)):
            self._add(kind, t)
        surplus = len(alive) - target
        # Cheapest to give up first: never-placed, then still starting, then the least busy serving ones.
        for replica in sorted(alive, key=lambda r: (r.placed_s is not None, r.is_ready(t), r.load()))[:max(0, surplus)]:
            if replica.is_ready(t):
                replica.removing = True
            else:
                replica.ended_s = t

    def start_serving(self, t: float, on_demand: int, spot: int) -> int:
        """A fleet that is already serving at `t`: `spot` replicas go where the pools have room at `t`, those
        without room are on-demand instead. Returns how many spot replicas were placed."""
        self.set_target(t, SPOT, spot)
        self._place_pending_spot(t)
        for replica in self.replicas:
            if replica.is_pending():
                replica.ended_s = t
        placed = sum(1 for r in self.replicas if r.kind == SPOT and r.ended_s is None)
        self.replicas = [r for r in self.replicas if r.ended_s is None]
        self.set_target(t, ON_DEMAND, on_demand + spot - placed)
        for replica in self.replicas:
            replica.ready_s = t
        return placed

    def _add(self, kind: str, t: float) -> None:
        replica = Replica(kind, t)
        if kind == ON_DEMAND:
            self._place(replica, None, t)
        self.replicas.append(replica)

    def _place(self, replica: Replica, pool: int | None, t: float) -> None:
        replica.pool, replica.placed_s = pool, t
        replica.ready_s = t + self.profile.draw_cold_start(self.random)

    # --- the world moving on -----------------------------------------------------------------------
    def arrive(self, request: TraceRequest, scored: bool = True) -> None:
        longest = self.profile.longest_request
        if request.prompt_tokens >= longest:
            self.rejected.append(SimRequest(request, scored))
            return
        if request.prompt_tokens + request.output_tokens > longest:
            request = dataclasses.replace(request, output_tokens=longest - request.prompt_tokens)
        self.queue.append(SimRequest(request, scored, prefill_left=request.prompt_tokens))
        self._arrivals.append(request.arrival_s)

    def step(self, t: float, dt: float) -> None:
        self._reclaim_spot(t)
        self._place_pending_spot(t)
        if self.routing == "ideal":
            self._admit_global(t)
        else:
            self._route(t)
        for replica in self.replicas:
            if replica.is_ready(t):
                if self.routing != "ideal":
                    self._admit_local(replica, t)
                self._run(replica, t, dt)
        for replica in self.replicas:
            if replica.removing and replica.ended_s is None and not replica.load():
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
        """Everything the replica held goes back through the router and is prefilled again elsewhere."""
        held = [*replica.waiting, *replica.prefilling, *(entry[2] for entry in replica.running)]
        for request in sorted(held, key=lambda q: q.trace.arrival_s):
            request.retries += 1
            request.admitted_s = request.first_token_s = None
            request.prefill_left = request.trace.prompt_tokens
            self.queue.append(request)
        replica.waiting.clear()
        replica.prefilling.clear()
        replica.running, replica.kv_tokens, replica.prefill_tokens, replica.ended_s = [], 0, 0.0, t

    def _place_pending_spot(self, t: float) -> None:
        """Each Pending spot replica goes to a pool with room, the one holding fewest of the fleet's spot replicas
        first (then the one with most room): the operator's zone spread (topologySpreadConstraints, maxSkew 1,
        ScheduleAnyway, operator/pod_template.py), so one zone's reclaim never takes every spot replica."""
        for replica in self.replicas:
            if replica.kind != SPOT or not replica.is_pending():
                continue
            held = [len(self._spot_in_pool(i)) for i in range(len(self.pools))]
            free = [(-held[i], pool.capacity(t) - held[i], i) for i, pool in enumerate(self.pools)
                    if pool.capacity(t) - held[i] > 0]
            if free:
                self._place(replica, max(free)[2], t)

    def _accepting(self, t: float) -> list[Replica]:
        return [
            r for r in self.replicas
            if r.is_ready(t) and not r.removing and (r.noticed_s is None or not self.drain_on_notice)
        ]

    def _route(self, t: float) -> None:
        accepting = self._accepting(t)
        if not accepting:
            return
        while self.queue:
            request = self.queue.popleft()
            if self.routing == "least_loaded":
                replica = min(accepting, key=Replica.load)
            else:
                self._next_replica = (self._next_replica + 1) % len(accepting)
                replica = accepting[self._next_replica]
            replica.waiting.append(request)

    def _fits(self, replica: Replica, request: SimRequest) -> bool:
        return replica.in_engine() < self.profile.max_batch and replica.kv_tokens + request.kv_tokens <= self.profile.kv_cache_tokens

    def _start(self, replica: Replica, request: SimRequest, t: float) -> None:
        request.admitted_s = max(t, request.trace.arrival_s)
        replica.prefilling.append(request)
        replica.prefill_tokens += request.prefill_left
        replica.kv_tokens += request.kv_tokens

    def _admit_local(self, replica: Replica, t: float) -> None:
        """The engine's admission: waiting requests in order, while a slot and KV room remain."""
        while replica.waiting and self._fits(replica, replica.waiting[0]):
            self._start(replica, replica.waiting.popleft(), t)

    def _admit_global(self, t: float) -> None:
        accepting = self._accepting(t)
        while self.queue and accepting:
            fits = [r for r in accepting if self._fits(r, self.queue[0])]
            if not fits:
                return
            replica = min(fits, key=lambda r: (r.prefill_tokens, len(r.running)))
            self._start(replica, self.queue.popleft(), t)

    def _run(self, replica: Replica, t: float, dt: float) -> None:
        """Advance the replica's engine steps over [t, t + dt), in segments that end when a prompt completes."""
        profile, elapsed = self.profile, 0.0
        while elapsed < dt:
            batch = len(replica.running)
            decode_s = profile.decode_step_s(batch, replica.context_base + batch * replica.clock) if batch else 0.0
            chunk = min(max(0, profile.max_num_batched_tokens - batch), replica.prefill_tokens)
            if chunk <= 0 or not replica.prefilling:
                if batch:
                    self._decode(replica, t + elapsed, (dt - elapsed) / decode_s, decode_s)
                return
            step_s = decode_s + chunk / profile.prefill_tokens_per_s
            # All outstanding prompt tokens fit one step, or the head prompt completes after its share of steps.
            head = replica.prefilling[0].prefill_left
            steps = 1.0 if replica.prefill_tokens <= chunk else head / chunk
            steps = min(steps, (dt - elapsed) / step_s)
            if batch:
                self._decode(replica, t + elapsed, steps, step_s)
            elapsed += steps * step_s
            self._prefill(replica, t + elapsed, steps * chunk)

    def _prefill(self, replica: Replica, now: float, tokens: float) -> None:
        replica.prefill_tokens = max(0.0, replica.prefill_tokens - tokens)
        while replica.prefilling and tokens >= replica.prefilling[0].prefill_left - 1e-6:
            request = replica.prefilling.popleft()
            tokens -= request.prefill_left
            request.prefill_left = 0.0
            # Arrivals within a simulation step are admitted at its start: never before its own prefill is done.
            request.first_token_s = max(now, request.admitted_s + self.profile.prefill_s(request.trace.prompt_tokens))
            self._first_tokens.append((request.first_token_s, request.trace.prompt_tokens))
            if request.trace.output_tokens <= 1:
                request.finish_s = request.first_token_s
                self._done(replica, request)
                continue
            request.decode_from = replica.clock
            replica.context_base += request.trace.prompt_tokens + 1 - replica.clock
            heapq.heappush(replica.running, (replica.clock + request.trace.output_tokens - 1, next(self._tiebreak), request))
        if replica.prefilling:
            replica.prefilling[0].prefill_left -= tokens
        else:
            replica.prefill_tokens = 0.0  # float residue of the fluid steps

    def _decode(self, replica: Replica, start_s: float, steps: float, step_s: float) -> None:
        start_clock = replica.clock
        replica.clock += steps
        self._decoded.append((start_s + steps * step_s, steps * len(replica.running), steps * step_s * len(replica.running)))
        while replica.running and replica.running[0][0] <= replica.clock:
            finish_clock, _, request = heapq.heappop(replica.running)
            request.finish_s = max(request.first_token_s, start_s + (finish_clock - start_clock) * step_s)
            replica.context_base -= request.trace.prompt_tokens + 1 - request.decode_from
            self._done(replica, request)

    def _done(self, replica: Replica, request: SimRequest) -> None:
        replica.kv_tokens -= request.kv_tokens
        self.finished.append(request)
        self._recent.append(request)

    def _forget_old(self, t: float) -> None:
        while self._arrivals and self._arrivals[0] <= t - MAX_WINDOW_S:
            self._arrivals.popleft()
        while self._recent and self._recent[0].finish_s <= t - METRICS_KEPT_S:
            self._recent.popleft()
        while self._first_tokens and self._first_tokens[0][0] <= t - MAX_WINDOW_S:
            self._first_tokens.popleft()
        while self._decoded and self._decoded[0][0] <= t - MAX_WINDOW_S:
            self._decoded.popleft()

    # --- the bill ----------------------------------------------------------------------------------
    def gpu_hours(self, kind: str, start_s: float, end_s: float) -> float:
        """GPU-hours billed for `kind` between start_s and end_s."""
        seconds = sum(
            max(0.0, min(end_s, r.ended_s if r.ended_s is not None else end_s) - max(start_s, r.placed_s))
            for r in self.replicas if r.kind == kind and r.placed_s is not None
        )
        return seconds * self.profile.gpus_per_replica / 3600
