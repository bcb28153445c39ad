"""One control-loop tick for one LLMDeployment: snapshot -> estimate -> policy -> spot split -> plan.

Everything that must survive between ticks lives in `LoopMemory` (held by the caller, one per deployment), so
this module stays a plain function of its inputs and the Kopf handlers and the integration test share it.
"""

import collections
import dataclasses

from fleetserve.autoscaler.estimate import PRIOR, CapacityEstimate, batch_itl_sample, estimate_capacity
from fleetserve.autoscaler.metrics import MetricsSnapshot, MetricsUnavailable
from fleetserve.autoscaler.policy import Load, SloTarget, clamp, recommend, stabilize
from fleetserve.autoscaler.spot import CapacityPlan, PreemptionRate, SpotSettings, spot_share, split


ITL_SAMPLES_KEPT = 120
# Spot replicas Pending longer than this are covered by on-demand ones ("within seconds" of the shortfall).
SPOT_FALLBACK_AFTER_S = 10.0
COLD_START_PRIOR_S = 120.0
# Observed-TTFT feedback: while the observed TTFT at the SLO percentile is above the SLO, the load the model plans
# for grows by FEEDBACK_STEP per tick (5 s ticks: doubling in about 40 s, well within one cold start); while it is
# under half the SLO, it shrinks back by the same factor. FEEDBACK_MAX bounds what a wrong model or a signal
# polluted by requests no replica count can help may add: at most a quarter more than the model's own load.
FEEDBACK_STEP = 1.1
FEEDBACK_MAX = 1.25


@dataclasses.dataclass(frozen=True)
class LoopSettings:
    """What the tick needs from an LLMDeployment spec, as plain values."""

    min_replicas: int
    max_replicas: int
    slo: SloTarget
    itl_slo_s: float
    max_num_seqs: int
    scale_up_stabilization_s: float
    scale_down_delay_s: float
    spot: SpotSettings


@dataclasses.dataclass(frozen=True)
class Observed:
    """The deployment's replicas as the operator reports them (whole tensor-parallel groups only)."""

    ready: int
    spot_ready: int
    on_demand_up: int = 0  # on-demand replicas running or starting (kept while spot replacements start)
    spot_starting: int = 0  # spot replicas on a node, starting: coming, so no on-demand cover for them


@dataclasses.dataclass
class LoopMemory:
    serving: int | None = None  # replicas the SLO needs (before spot extras and fallback); None until known
    history: list[tuple[float, int, int]] = dataclasses.field(default_factory=list)  # see policy.stabilize
    itl_samples: collections.deque = dataclasses.field(default_factory=lambda: collections.deque(maxlen=ITL_SAMPLES_KEPT))
    capacity: CapacityEstimate = PRIOR
    cold_start_s: float = COLD_START_PRIOR_S
    preemptions: PreemptionRate = PreemptionRate()
    spot_short_since: float | None = None
    scale_up_started: tuple[float, int] | None = None  # (time, target) of an unfinished scale-up, to time cold starts
    last_tick: float | None = None
    last_wake: str | None = None  # the wake annotation value already acted on
    feedback: float = 1.0  # multiplier on the planned load from the observed TTFT quantile


@dataclasses.dataclass(frozen=True)
class TickResult:
    plan: CapacityPlan | None  # None: hold the current scale
    serving: int
    scaling_active: bool
    reason: str


def _forget_old(history: list[tuple[float, int, int]], now: float, keep_s: float) -> list[tuple[float, int, int]]:
    return [entry for entry in history if entry[0] >= now - keep_s]


def _track_cold_start(memory: LoopMemory, observed: Observed, now: float) -> None:
    """Measure cold start as the time from a scale-up decision until that many replicas are ready."""
    if memory.scale_up_started is None:
        return
    started, target = memory.scale_up_started
    if observed.ready >= target:
        # Exponential average: cold starts vary with image caching and node provisioning.
        memory.cold_start_s = 0.5 * memory.cold_start_s + 0.5 * (now - started)
        memory.scale_up_started = None


def _burst_factor(snapshot: MetricsSnapshot) -> float:
    """How much the busiest completion-rate window of the last minutes exceeds the current one: plan for the burst,
    since a scale-up started when it comes back arrives one cold start late."""
    if not snapshot.completion_burst_rate or snapshot.completion_rate <= 0:
        return 1.0
    return max(1.0, snapshot.completion_burst_rate / snapshot.completion_rate)


def _feedback(current: float, snapshot: MetricsSnapshot, slo: SloTarget, capacity: CapacityEstimate) -> float:
    """Integral feedback on the observed TTFT quantile. Not while the prompt tail alone breaks the SLO: those
    requests stay slow whatever the replica count, and chasing them only buys replicas."""
    observed = snapshot.ttft_quantile_s
    if observed is None:
        return current
    if capacity.prefill_tail_s >= slo.ttft_s * (1 - slo.headroom):
        return max(1.0, current / FEEDBACK_STEP)  # what was added before the tail grew is released, not kept
    if observed > slo.ttft_s and snapshot.waiting > 0:  # a slow tail with nothing queued is prefill, not capacity
        return min(FEEDBACK_MAX, current * FEEDBACK_STEP)
    if observed < slo.ttft_s / 2:
        return max(1.0, current / FEEDBACK_STEP)
    return current


def _spot_not_serving(memory: LoopMemory, settings: LoopSettings, serving: int, observed: Observed, now: float) -> int:
    """Spot replicas of the plan that don't serve: covered by on-demand ones at once if those already run
    (make before break), by new on-demand ones once the shortfall outlasts the fallback delay."""
    spot = spot_share(serving, settings.spot)
    not_ready = max(0, spot - observed.spot_ready)
    # On-demand replicas already up keep covering every spot replica not ready yet, starting ones included: they
    # go once their spot replacements serve, never while those still load the model (make before break).
    kept = min(not_ready, max(0, observed.on_demand_up - (serving - spot)))
    # New on-demand replicas only for Pending or preempted spot: spot starting on a node serves within a cold start.
    shortfall = max(0, not_ready - observed.spot_starting)
    if shortfall == 0:
        memory.spot_short_since = None
        return kept
    if memory.spot_short_since is None:
        memory.spot_short_since = now
    if now - memory.spot_short_since >= SPOT_FALLBACK_AFTER_S:
        return max(shortfall, kept)
    return kept


def tick(
    settings: LoopSettings,
    memory: LoopMemory,
    snapshot: MetricsSnapshot | MetricsUnavailable,
    observed: Observed,
    new_preemptions: int,
    now: float,
    wake: bool = False,
) -> TickResult:
    """Decide this tick's plan, updating `memory`. A metrics failure holds the scale (plan None).

    `wake` starts a deployment scaled to zero: with no replica there are no engine metrics to show demand, so
    whoever sees the first request (a gateway, a client's retry wrapper, a person) asks for it explicitly.
    """
    elapsed = 0.0 if memory.last_tick is None else now - memory.last_tick
    memory.last_tick = now
    memory.preemptions = memory.preemptions.observe(new_preemptions, observed.spot_ready, elapsed)
    if memory.serving is None:
        memory.serving = clamp(observed.ready, settings.min_replicas, settings.max_replicas)
        # A fresh loop (or a restarted operator) has no history: record the running scale as a recommendation
        # made now, so nothing scales down before one full delay of real observations.
        memory.history = [(now, memory.serving, memory.serving)]
    if wake and memory.serving == 0 and settings.max_replicas > 0:
        memory.serving = max(1, settings.min_replicas)
        memory.history = [(now, memory.serving, memory.serving)]
        memory.scale_up_started = (now, memory.serving)
        plan = split(memory.serving, settings.spot, memory.preemptions, memory.cold_start_s, 0)
        return TickResult(plan, memory.serving, True, f"woken from zero: {plan.reason}")
    if isinstance(snapshot, MetricsUnavailable):
        return TickResult(None, memory.serving, False, f"holding {memory.serving} replicas: {snapshot}")

    _track_cold_start(memory, observed, now)
    sample = batch_itl_sample(snapshot, memory.capacity.prefill_tokens_per_s)
    if sample:
        memory.itl_samples.append(sample)
    memory.capacity = estimate_capacity(
        snapshot, memory.capacity, list(memory.itl_samples), settings.itl_slo_s, settings.max_num_seqs
    )
    memory.feedback = _feedback(memory.feedback, snapshot, settings.slo, memory.capacity)
    load = Load(snapshot.arrival_rate * _burst_factor(snapshot) * memory.feedback, snapshot.waiting, snapshot.running)
    recommendation = recommend(
        load, memory.capacity, settings.slo, observed.ready, memory.cold_start_s, settings.max_replicas
    )
    wanted = clamp(recommendation.replicas, settings.min_replicas, settings.max_replicas)
    held = clamp(recommendation.held, settings.min_replicas, settings.max_replicas)
    memory.history = _forget_old(
        memory.history + [(now, wanted, held)], now, max(settings.scale_up_stabilization_s, settings.scale_down_delay_s)
    )
    serving = stabilize(
        memory.history, now, memory.serving, settings.scale_up_stabilization_s, settings.scale_down_delay_s
    )
    if serving > memory.serving:
        memory.scale_up_started = (now, serving)
    memory.serving = serving
    not_serving = _spot_not_serving(memory, settings, serving, observed, now)
    plan = split(serving, settings.spot, memory.preemptions, memory.cold_start_s, not_serving)
    damped = "" if serving == wanted else f" (recommended {wanted}, damped)"
    return TickResult(plan, serving, True, f"{recommendation.reason}{damped}; {plan.reason}")
