"""Turns a metrics snapshot into per-replica service capacity: how many sequences a replica can batch while
holding the ITL SLO, and how long one request occupies such a slot.

Nothing here is a constant of the model or GPU: slots come from the measured KV-cache occupancy and a running
fit of inter-token latency against batch size (trusted up to twice the largest batch seen); the service time
from measured prefill time, output length and that ITL fit, and never shorter than what replicas measured while
saturated allow (Little's law). When the pool is idle there is nothing to measure, so the previous estimate is
carried over.
"""

import dataclasses
import math

from fleetserve.autoscaler.metrics import MetricsSnapshot
from fleetserve.autoscaler.prompt_lengths import PromptLengths

# Below this KV occupancy the ratio running/occupancy is mostly noise.
MIN_KV_USAGE_FOR_ESTIMATE = 0.05
# Least-squares needs batch sizes that actually differ before it may claim a slope.
MIN_BATCH_SPREAD = 2.0
# The ITL fit is trusted only near its data: plan for at most this multiple of the largest batch observed.
# Larger batches are reached step by step as load grows, each step measured before the next.
BATCH_TRUST_FACTOR = 2.0
# Highest prefill share taken from one window: the decode stretch 1 / (1 - share) stays finite on a saturated one.
MAX_PREFILL_SHARE = 0.95


@dataclasses.dataclass(frozen=True)
class CapacityEstimate:
    slots_per_replica: int  # sequences one replica decodes together within the ITL SLO
    service_time_s: float  # time one request holds a slot at that batch size (prefill + decode)
    prefill_s: float  # TTFT minus queueing: the part of TTFT that more replicas cannot remove
    # Share of a replica's time spent in prefill when measured; prefills stall decoding, so the decode part of
    # the service time stretches by 1 / (1 - share) and changes when the same load meets more or fewer replicas.
    prefill_share: float = 0.0
    service_cv2: float = 1.0  # squared coefficient of variation of service times (1 = exponential)
    # Prefill of the prompt at the SLO percentile: what the tail of TTFT pays on top of queueing.
    prefill_tail_s: float = 0.0
    # Fastest prefill seen (prompt tokens per second of TTFT beyond queueing): TTFT - queue also holds the time a
    # prompt waits for its chunks among other prefills, so the best observation is the least polluted one.
    prefill_tokens_per_s: float = 0.0
    # Largest batch per replica ever measured. The trust bound on the ITL fit grows from it and never shrinks with
    # the window: with a shrinking bound, more replicas mean smaller batches, fewer trusted slots and yet more
    # replicas, a loop that ends at max.
    largest_batch_seen: float = 0.0
    # Highest token throughput (prompt + generated tokens per second) one replica was measured at while saturated:
    # every slot busy and requests queued. The fitted model may promise more than a replica can do (an ITL line
    # extrapolated past its data, prefills it underprices); what saturated replicas completed is the bound.
    saturated_tokens_per_s: float = 0.0
    # The prompt lengths of the requests finished in the last minutes (the engine's prompt histogram over the burst
    # horizon): what a replica's prefill queue is made of. None until measured.
    prompt_lengths: PromptLengths | None = None


# Used only until the first request has been measured; replaced by measurements on the first busy tick.
PRIOR = CapacityEstimate(slots_per_replica=8, service_time_s=10.0, prefill_s=0.5, prefill_tail_s=0.5)


@dataclasses.dataclass(frozen=True)
class ItlLine:
    """ITL(batch) = base_s + per_sequence_s * batch, fitted over recent (batch, ITL) samples."""

    base_s: float
    per_sequence_s: float

    def at(self, batch: float) -> float:
        return self.base_s + self.per_sequence_s * batch

    def largest_batch_within(self, itl_limit_s: float, cap: int) -> int:
        """The largest batch whose ITL stays within the limit. When even one sequence misses it, no batch size and
        no replica count meets it, so it limits nothing: planning for one sequence per replica would only buy
        replicas that miss it too (an overloaded CPU, a slow GPU), all the way to max."""
        if self.per_sequence_s <= 0 or self.at(1) > itl_limit_s:
            return cap
        # The epsilon keeps an exact fit (0.05 / 0.0025) from flooring to one less through float error.
        return max(1, min(cap, int((itl_limit_s - self.base_s) / self.per_sequence_s + 1e-9)))


def fit_itl_line(samples: list[tuple[float, float]]) -> ItlLine | None:
    """Least-squares line through (batch per replica, mean ITL) samples; None without any sample."""
    if not samples:
        return None
    batches = [b for b, _ in samples]
    itls = [i for _, i in samples]
    mean_b = sum(batches) / len(batches)
    mean_i = sum(itls) / len(itls)
    if max(batches) - min(batches) < MIN_BATCH_SPREAD:
        # One operating point: attribute all of ITL to the fixed part, i.e. assume ITL is flat in batch size
        # until a larger batch is observed; KV occupancy and max_num_seqs still bound the slots.
        return ItlLine(base_s=mean_i, per_sequence_s=0.0)
    covariance = sum((b - mean_b) * (i - mean_i) for b, i in samples)
    variance = sum((b - mean_b) ** 2 for b in batches)
    slope = max(0.0, covariance / variance)
    return ItlLine(base_s=max(0.0, mean_i - slope * mean_b), per_sequence_s=slope)


def batch_itl_sample(snapshot: MetricsSnapshot, prefill_tokens_per_s: float) -> tuple[float, float] | None:
    """This tick's (running sequences per replica, decode step), or None when nothing was decoded. A step decodes
    one token of every running sequence and prefills a chunk, so the measured ITL is the decode step stretched by
    the share of the replica's time its prompt chunks took (prompt tokens prefilled per second per replica / the
    fastest prefill speed seen); that share is taken out. Left in, a window that prefilled a backlog (a lost spot
    zone, a burst) read as a steep ITL-versus-batch line, and the fleet planned at it for the ten minutes the sample
    was kept."""
    if snapshot.itl_mean_s is None or snapshot.running <= 0:
        return None
    share = 0.0
    if prefill_tokens_per_s > 0:
        share = min(MAX_PREFILL_SHARE, snapshot.prompt_tokens_rate / snapshot.replicas_reporting / prefill_tokens_per_s)
    return snapshot.running / snapshot.replicas_reporting, snapshot.itl_mean_s * (1 - share)


def estimate_capacity(
    snapshot: MetricsSnapshot,
    previous: CapacityEstimate,
    itl_samples: list[tuple[float, float]],
    itl_slo_s: float,
    max_num_seqs: int,
) -> CapacityEstimate:
    """Per-replica capacity from this snapshot; falls back to `previous` for anything not measurable now."""
    if snapshot.completion_rate <= 0 or snapshot.e2e_mean_s is None:
        return previous
    running_per_replica = snapshot.running / snapshot.replicas_reporting
    kv_slots = max_num_seqs
    if snapshot.kv_cache_usage and snapshot.kv_cache_usage >= MIN_KV_USAGE_FOR_ESTIMATE and running_per_replica > 0:
        kv_slots = int(running_per_replica / snapshot.kv_cache_usage)
    queue_s = snapshot.queue_time_mean_s or 0.0
    measured_prefill_s = max(0.0, (snapshot.ttft_mean_s or queue_s) - queue_s)
    # The prompts of the requests the TTFT mean is over, so the prefill speed below compares like with like.
    prompt_mean = snapshot.prompt_tokens_mean or snapshot.prompt_tokens_rate / snapshot.completion_rate
    speed = previous.prefill_tokens_per_s
    if measured_prefill_s > 0 and prompt_mean > 0:
        speed = max(speed, prompt_mean / measured_prefill_s)
    prefill_s = prompt_mean / speed if speed > 0 else measured_prefill_s
    prefill_share = min(MAX_PREFILL_SHARE, snapshot.arrival_rate * prefill_s / snapshot.replicas_reporting)
    # The samples are decode steps (batch_itl_sample); at this prefill share a token takes a step / (1 - share).
    itl_line = fit_itl_line(itl_samples)
    itl_slots = itl_line.largest_batch_within(itl_slo_s * (1 - prefill_share), max_num_seqs) if itl_line else max_num_seqs
    largest_batch = max([previous.largest_batch_seen, *(b for b, _ in itl_samples)])
    trusted = math.ceil(BATCH_TRUST_FACTOR * largest_batch) if largest_batch else max_num_seqs
    slots = max(1, min(kv_slots, itl_slots, trusted, max_num_seqs))

    prompt_tail = snapshot.prompt_tokens_quantile or prompt_mean  # the mean where the engine has no histogram
    prefill_tail_s = prompt_tail / speed if speed > 0 else measured_prefill_s
    in_engine_s = max(prefill_s, snapshot.e2e_mean_s - queue_s)
    output_tokens = snapshot.generation_tokens_rate / snapshot.completion_rate
    if itl_line and output_tokens > 0:
        # Decode time at the batch size we plan to run at, not at today's (possibly lighter) batch.
        service_time_s = prefill_s + output_tokens * itl_line.at(slots) / (1 - prefill_share)
        service_time_s = max(service_time_s, in_engine_s)
    else:
        service_time_s = in_engine_s
    tokens_rate = snapshot.prompt_tokens_rate + snapshot.generation_tokens_rate
    saturated = previous.saturated_tokens_per_s
    if snapshot.waiting >= 1 and running_per_replica >= slots:
        # The highest seen, not the latest: a window only partly saturated understates what a replica can do.
        saturated = max(saturated, tokens_rate / snapshot.replicas_reporting)
    if saturated > 0 and tokens_rate > 0:
        # Little's law: `slots` requests of today's mean size, at that throughput, each hold a slot this long.
        service_time_s = max(service_time_s, slots * tokens_rate / snapshot.completion_rate / saturated)
    lengths = PromptLengths.from_histogram(snapshot.prompt_tokens_buckets) if snapshot.prompt_tokens_buckets else None
    return CapacityEstimate(slots, max(service_time_s, 1e-3), prefill_s, prefill_share,
                            prefill_tail_s=max(prefill_s, prefill_tail_s), prefill_tokens_per_s=speed,
                            largest_batch_seen=largest_batch, saturated_tokens_per_s=saturated,
                            prompt_lengths=lengths or PromptLengths.one_length(prompt_mean))
