"""The pure scaling policy: load and capacity in, a replica count out. A replica is one whole tensor-parallel
group; ready counts come from the operator's status, which counts a group only when all its pods are ready.

`recommend` answers "how many replicas meet the TTFT SLO right now?" with the queueing model; `stabilize`
turns the stream of recommendations into a scale that rises fast and falls only after the delay.
"""

import dataclasses

import numpy as np

from fleetserve.autoscaler.estimate import CapacityEstimate
from fleetserve.autoscaler.prompt_lengths import PromptLengths
from fleetserve.autoscaler.queueing import UNSTABLE, backlog_drain_time, fifo_waits, waiting_time_quantile


@dataclasses.dataclass(frozen=True)
class SloTarget:
    ttft_s: float
    quantile: float  # e.g. 0.95 for a p95 target
    headroom: float = 0.2  # plan for (1 - headroom) x the SLO so noise and estimate error don't breach it
    # Busy share of slots we plan for: spare capacity absorbs load that grows, or replicas that are preempted,
    # while new replicas are still cold-starting (queueing delay alone only reacts near saturation).
    max_utilization: float = 0.8


@dataclasses.dataclass(frozen=True)
class Load:
    arrival_rate: float  # requests/s
    backlog: float  # requests already queued
    in_flight: float  # requests being served (0 together with no arrivals = idle)


@dataclasses.dataclass(frozen=True)
class Recommendation:
    replicas: int
    # Share of feasible requests predicted over their TTFT deadline at `replicas` (`PrefillQueue`).
    predicted_miss_share: float
    reason: str
    # Of `replicas`, what the arrival rate alone needs (SLO and utilisation cap, no backlog to drain). Replicas
    # beyond it only drain a queue; once it is gone they are not needed, so `stabilize` holds only these.
    sustained: int | None = None

    @property
    def held(self) -> int:
        return self.replicas if self.sustained is None else self.sustained


def service_time_at(load: Load, capacity: CapacityEstimate, replicas: int) -> float:
    """Service time when `replicas` share the load: each replica's prefill share is arrivals x prefill / replicas,
    and decoding only gets the rest of its time (the measured decode part is rescaled from the measured share)."""
    if replicas <= 0:
        return UNSTABLE
    share = load.arrival_rate * capacity.prefill_s / replicas
    if share >= 1:
        return UNSTABLE
    decode_s = capacity.service_time_s - capacity.prefill_s
    return capacity.prefill_s + decode_s * (1 - capacity.prefill_share) / (1 - share)


# Prompts drawn to solve a replica's prefill queue. At a miss share of 1% the estimate's sampling error is then
# under a tenth of that; a fixed seed makes every tick draw the same prompts, so a decision moves only with its inputs.
SAMPLED_PROMPTS = 20_000


class PrefillQueue:
    """A replica's prefill queue: the share of feasible requests whose first token comes after the TTFT SLO.

    A replica prefills prompts one after another (its chunks go first come first served), so it is a single-server
    queue whose service times are the measured prompt lengths over the prefill speed, and whose arrivals are every
    n-th request of the pool: under round-robin, a Poisson stream of rate lambda gives each of n replicas gaps of a
    sum of n exponential gaps (Erlang, mean n / lambda), far more regular than Poisson; a replica is seldom still
    busy with the previous prompt it was given. The waits are solved by Lindley's recursion over SAMPLED_PROMPTS
    prompts drawn from the histogram. A request misses when its wait for a slot, its wait behind other prompts and
    its own prefill together pass the SLO. A prompt that alone takes longer than the SLO is infeasible: no replica
    count helps it, so it is not scored (it still takes its prefill time from the others).
    """

    def __init__(self, load: Load, capacity: CapacityEstimate, slo: SloTarget):
        lengths, speed = capacity.prompt_lengths, capacity.prefill_tokens_per_s
        if lengths is None or speed <= 0:
            # Before a histogram and a prefill speed are measured, the mean prefill stands in as the one length.
            lengths, speed = PromptLengths.one_length(capacity.prefill_s), 1.0
        self._prefill_s = lengths.sample(np.random.default_rng(0), SAMPLED_PROMPTS) / speed
        self._feasible = self._prefill_s <= slo.ttft_s
        self._slack_s = slo.ttft_s - self._prefill_s
        self._arrival_rate = load.arrival_rate
        self._waits_s: dict[int, np.ndarray] = {}  # per replica count: the bisection and the plan ask for the same

    def miss_share(self, replicas: int, slot_wait_s: float) -> float:
        """Share of feasible requests predicted over the SLO with `replicas` ready, after `slot_wait_s` for a slot."""
        if not self._feasible.any():
            return 0.0
        if replicas < 1:
            return 1.0
        if self._arrival_rate <= 0:
            return float(np.mean(slot_wait_s > self._slack_s[self._feasible]))
        if replicas not in self._waits_s:
            gaps_s = np.random.default_rng(replicas).gamma(replicas, 1 / self._arrival_rate, SAMPLED_PROMPTS)
            self._waits_s[replicas] = fifo_waits(self._prefill_s, gaps_s)
        late = self._waits_s[replicas] + slot_wait_s > self._slack_s
        return float(np.mean(late[self._feasible]))

    def fewest_replicas(self, allowed: float, max_replicas: int) -> int | None:
        """Smallest replica count whose miss share (before any wait for a slot) is within `allowed`, None if even
        `max_replicas` misses more. Fewer replicas never miss less, so a bisection finds it."""
        if self.miss_share(max_replicas, 0.0) > allowed:
            return None
        low, high = 1, max_replicas
        while low < high:
            middle = (low + high) // 2
            low, high = (low, middle) if self.miss_share(middle, 0.0) <= allowed else (middle + 1, high)
        return low


def recommend(
    load: Load,
    capacity: CapacityEstimate,
    slo: SloTarget,
    ready_replicas: int,
    cold_start_s: float,
    max_replicas: int,
) -> Recommendation:
    """Smallest replica count that keeps all but 1 - quantile of the feasible requests within their TTFT deadline,
    that stays under the utilisation cap and that drains the backlog (including what piles up while new replicas
    cold-start)."""
    if load.arrival_rate <= 0 and load.backlog <= 0 and load.in_flight <= 0:
        return Recommendation(0, 0.0, "idle: no arrivals, queue or running requests", 0)
    # The share of feasible requests allowed over the SLO, less the headroom (estimate error and noise).
    allowed = (1 - slo.quantile) * (1 - slo.headroom)
    prefill_queue = PrefillQueue(load, capacity, slo)
    fewest = prefill_queue.fewest_replicas(allowed, max_replicas)
    # Requests keep piling up on the ready replicas until new ones finish their cold start.
    ready_service_s = service_time_at(load, capacity, ready_replicas)
    ready_rate = 0.0 if ready_service_s == UNSTABLE else ready_replicas * capacity.slots_per_replica / ready_service_s
    backlog = load.backlog + max(0.0, load.arrival_rate - ready_rate) * cold_start_s
    drain_within_s = max(slo.ttft_s, cold_start_s)
    sustained = None
    for replicas in range(fewest or max_replicas + 1, max_replicas + 1):
        service_s = service_time_at(load, capacity, replicas)
        if service_s == UNSTABLE:
            continue
        servers = replicas * capacity.slots_per_replica
        utilisation = load.arrival_rate * service_s / servers
        if utilisation > slo.max_utilization:
            continue
        slot_wait = waiting_time_quantile(load.arrival_rate, service_s, servers, slo.quantile, capacity.service_cv2)
        missed = prefill_queue.miss_share(replicas, slot_wait)
        if missed > allowed:
            continue
        sustained = sustained or replicas
        drain = backlog_drain_time(backlog, load.arrival_rate, service_s, servers)
        if drain <= drain_within_s:
            queued = f"; {backlog:.0f} queued drain in {drain:.0f}s" if backlog else ""
            return Recommendation(
                replicas, missed,
                f"{missed:.2%} of feasible requests over the TTFT deadline (<= {allowed:.2%}) at"
                f" {load.arrival_rate:.2f} req/s ({capacity.slots_per_replica} slots x {service_s:.1f}s per replica)"
                f"{queued}",
                sustained,
            )
    missed = prefill_queue.miss_share(max_replicas, 0.0)
    return Recommendation(max_replicas, missed, f"SLO not reachable within max={max_replicas}: {missed:.2%} of"
                          f" feasible requests predicted over the TTFT deadline", sustained)


def clamp(replicas: int, min_replicas: int, max_replicas: int) -> int:
    return max(min_replicas, min(max_replicas, replicas))


def stabilize(
    history: list[tuple[float, int, int]], now: float, current: int, up_window_s: float, down_delay_s: float
) -> int:
    """Kubernetes-HPA-style damping over (time, recommended replicas, of those held) history, newest last.

    Scale up to the lowest recommendation of the up window (0 s = at once); scale down only to the highest held
    recommendation of the down delay, so a dip of the load shorter than the delay never removes a replica. Replicas
    recommended only to drain a queue (`Recommendation.sustained`) are not held: when the queue is gone, so is
    their reason, and holding them for the delay paid for a fleet sized for a backlog that no longer existed.
    """
    if not history:
        return current
    up_target = min(n for t, n, _ in history if t >= now - up_window_s) if up_window_s > 0 else history[-1][1]
    down_target = max(history[-1][1], *(held for t, _, held in history if t >= now - down_delay_s))
    if up_target > current:
        return up_target
    if down_target < current:
        return down_target
    return current

