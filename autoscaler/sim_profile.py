"""A replica's performance profile (what the simulator knows about the engine) and GPU prices.

Profile JSON format (all times in seconds):
{
  "name": "...", "source": "how and where every number was measured or derived",
  "gpus_per_replica": 1,
  "max_batch": 64,                                  # engine max_num_seqs
  "device": "cuda", "gpu_memory_gib": 79.2,       # what the engine runs on (sets its default token budget)
  "max_num_batched_tokens": 8192,                   # engine per-step token budget (default: the engine's rule)
  "kv_cache_tokens": 200000,                        # tokens the KV cache holds
  "max_model_len": 32768,                           # longest prompt + output (default: kv_cache_tokens)
  "prefill_tokens_per_s": 4000.0,                   # prompt processing speed
  "decode_step_s": {"batch": [1, 8, 32], "seconds": [0.02, 0.025, 0.04], "context_tokens": 1024},
  "decode_s_per_context_token": 5.6e-8,             # extra step time per token of context read (default 0)
  "cold_start_s": 90.0,                             # fixed cold start, or instead a distribution:
  "cold_start": {"cached_s": [20, 40], "uncached_s": [90, 200], "cached_share": 0.5}
}
One engine step costs decode_step_s(batch) at `context_tokens` per sequence, plus decode_s_per_context_token for
every token of context above (or below) that, plus the prefill chunk's tokens at prefill_tokens_per_s. Decode
step time is linearly interpolated between the listed batch sizes and extrapolated from the last two. A cold start
is drawn uniformly from `cached_s` with probability `cached_share` (image and weights already on the node) and from
`uncached_s` otherwise. Without `max_num_batched_tokens`, the budget is the one the engine picks for `device` and
`gpu_memory_gib` when `serve` is given none (fleetserve.api.engine_defaults.default_max_num_batched_tokens: 8192 on a CUDA
device of 70 GiB or more, else 2048), so the simulated replica runs what a default deployment runs.
"""

import bisect
import csv
import dataclasses
import json
import math
import random
import statistics
from pathlib import Path

from fleetserve.autoscaler.sim_traces import InputError
from fleetserve.api.engine_defaults import default_max_num_batched_tokens

DEVICES = ("cuda", "cpu")


@dataclasses.dataclass(frozen=True)
class ReplicaProfile:
    name: str
    source: str
    gpus_per_replica: int
    max_batch: int
    kv_cache_tokens: int
    prefill_tokens_per_s: float
    decode_batches: tuple[int, ...]
    decode_seconds: tuple[float, ...]
    cold_start_s: float  # the mean, for sizing the baselines
    max_num_batched_tokens: int = default_max_num_batched_tokens("cpu")
    max_model_len: int = 0  # 0: kv_cache_tokens
    decode_context_tokens: int = 1024
    decode_s_per_context_token: float = 0.0
    cold_start_cached_s: tuple[float, float] | None = None
    cold_start_uncached_s: tuple[float, float] | None = None
    cold_start_cached_share: float = 0.0

    @property
    def longest_request(self) -> int:
        return self.max_model_len or self.kv_cache_tokens

    def decode_step_s(self, batch: int, context_tokens: float | None = None) -> float:
        """One step decoding `batch` sequences holding `context_tokens` in all (default: the reference context)."""
        xs, ys = self.decode_batches, self.decode_seconds
        if len(xs) == 1:
            base = ys[0]
        else:
            i = min(max(bisect.bisect_left(xs, batch), 1), len(xs) - 1)
            x0, x1, y0, y1 = xs[i - 1], xs[i], ys[i - 1], ys[i]
            base = y0 + (y1 - y0) * (batch - x0) / (x1 - x0)
        if context_tokens is not None:
            base += self.decode_s_per_context_token * (context_tokens - batch * self.decode_context_tokens)
        return max(ys[0] / 2, base)  # reading the weights once per step never gets cheaper than half a 1-batch step

    def prefill_s(self, prompt_tokens: int) -> float:
        return prompt_tokens / self.prefill_tokens_per_s

    def largest_batch_within(self, itl_s: float) -> int:
        """Most sequences a replica may batch while each still gets a token every `itl_s`."""
        best = 1
        for batch in range(1, self.max_batch + 1):
            if self.decode_step_s(batch) <= itl_s:
                best = batch
        return best

    def draw_cold_start(self, rng: random.Random) -> float:
        if self.cold_start_cached_s is None:
            return self.cold_start_s
        low, high = self.cold_start_cached_s if rng.random() < self.cold_start_cached_share else self.cold_start_uncached_s
        return rng.uniform(low, high)


def _positive(data: dict, key: str, path, default=None, kind=float):
    value = data.get(key, default)
    if value is None:
        raise InputError(f"{path}: profile is missing field '{key}'")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise InputError(f"{path}: profile field '{key}' is {value!r}, expected a positive number")
    return kind(value)


def _range(cold: dict, key: str, path) -> tuple[float, float]:
    value = cold.get(key)
    if (not isinstance(value, list) or len(value) != 2 or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in value)
            or not 0 <= value[0] <= value[1]):
        raise InputError(f"{path}: profile field 'cold_start.{key}' is {value!r}, expected [low, high] seconds")
    return float(value[0]), float(value[1])


def load_profile(path: str | Path) -> ReplicaProfile:
    try:
        data = json.loads(Path(path).read_text())
    except OSError as error:
        raise InputError(f"{path}: cannot read the profile ({error.strerror})") from None
    except json.JSONDecodeError as error:
        raise InputError(f"{path}:{error.lineno}: profile is not JSON ({error.msg})") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: profile must be a JSON object")
    for key in ("name", "source", "decode_step_s"):
        if key not in data:
            raise InputError(f"{path}: profile is missing field '{key}'")
    decode = data["decode_step_s"]
    try:
        pairs = sorted(zip(decode["batch"], decode["seconds"], strict=True))
        batches = tuple(int(b) for b, _ in pairs)
        seconds = tuple(float(s) for _, s in pairs)
    except (KeyError, TypeError, ValueError):
        raise InputError(f"{path}: profile field 'decode_step_s' needs equally long 'batch' and 'seconds' lists") from None
    if not pairs or min(batches) < 1 or len(set(batches)) != len(batches) or not all(math.isfinite(s) and s > 0 for s in seconds):
        raise InputError(f"{path}: 'decode_step_s' needs distinct batch sizes >= 1 and positive finite seconds")
    cold = data.get("cold_start")
    if cold is not None:
        cached, uncached = _range(cold, "cached_s", path), _range(cold, "uncached_s", path)
        share = cold.get("cached_share")
        if not isinstance(share, (int, float)) or not 0 <= share <= 1:
            raise InputError(f"{path}: profile field 'cold_start.cached_share' is {share!r}, expected 0..1")
        mean_cold = share * sum(cached) / 2 + (1 - share) * sum(uncached) / 2
    else:
        cached = uncached = None
        share = 0.0
        mean_cold = _positive(data, "cold_start_s", path)
    kv_tokens = _positive(data, "kv_cache_tokens", path, default=10**9, kind=int)
    if "max_num_batched_tokens" in data:
        budget = _positive(data, "max_num_batched_tokens", path, kind=int)
    else:  # what `fleetserve serve` picks on this device when given no --max-num-batched-tokens
        device = data.get("device")
        if device not in DEVICES:
            raise InputError(f"{path}: profile field 'device' is {device!r}, expected one of {', '.join(DEVICES)} "
                             "(it sets the engine's token budget where max_num_batched_tokens is not given)")
        memory_gib = _positive(data, "gpu_memory_gib", path) if device == "cuda" else 0.0
        budget = default_max_num_batched_tokens(device, int(memory_gib * 2**30))
    return ReplicaProfile(
        name=str(data["name"]),
        source=str(data["source"]),
        gpus_per_replica=_positive(data, "gpus_per_replica", path, default=1, kind=int),
        max_batch=_positive(data, "max_batch", path, kind=int),
        kv_cache_tokens=kv_tokens,
        prefill_tokens_per_s=_positive(data, "prefill_tokens_per_s", path),
        decode_batches=batches,
        decode_seconds=seconds,
        cold_start_s=mean_cold,
        max_num_batched_tokens=budget,
        max_model_len=min(kv_tokens, _positive(data, "max_model_len", path, default=kv_tokens, kind=int)),
        decode_context_tokens=_positive(decode, "context_tokens", path, default=1024, kind=int),
        decode_s_per_context_token=float(data.get("decode_s_per_context_token", 0.0)),
        cold_start_cached_s=cached,
        cold_start_uncached_s=uncached,
        cold_start_cached_share=float(share),
    )


@dataclasses.dataclass(frozen=True)
class GpuPrices:
    instance_type: str
    on_demand_per_gpu_hour: float
    spot_per_gpu_hour: float
    source: str


def load_prices(path: str | Path, instance_type: str) -> GpuPrices:
    """Median per-GPU-hour on-demand and spot price of `instance_type` over the zones in a SkyPilot-style CSV."""
    try:
        with open(path, newline="") as handle:
            rows = [r for r in csv.DictReader(handle) if r.get("instance_type") == instance_type]
    except OSError as error:
        raise InputError(f"{path}: cannot read the prices ({error.strerror})") from None

    def prices(column: str) -> list[float]:
        try:
            values = [float(r[column]) for r in rows if r.get(column)]
        except ValueError:
            raise InputError(f"{path}: a {column} of {instance_type!r} is not a number") from None
        return [v for v in values if math.isfinite(v) and v > 0]

    on_demand, spot = prices("ondemand_usd_per_gpu_hr"), prices("spot_usd_per_gpu_hr")
    if not on_demand or not spot:
        raise InputError(f"{path}: no on-demand and spot prices for instance type {instance_type!r}")
    return GpuPrices(
        instance_type, statistics.median(on_demand), statistics.median(spot),
        f"median over {len(spot)} zones of {Path(path).name}",
    )
