"""A replica's performance profile (what the simulator knows about the engine) and GPU prices.

Profile JSON format (all times in seconds):
{
  "name": "...", "source": "how and where it was measured",
  "gpus_per_replica": 1,
  "max_batch": 64,                                  # engine max_num_seqs
  "kv_cache_tokens": 200000,                        # prompt+output tokens the KV cache holds (optional)
  "prefill_tokens_per_s": 4000.0,                   # prompt processing speed
  "decode_step_s": {"batch": [1, 8, 32], "seconds": [0.02, 0.025, 0.04]},   # ITL vs running batch
  "cold_start_s": 90.0                              # pod scheduled -> serving (node, image, weights)
}
Decode step time is linearly interpolated between the listed batch sizes and extrapolated from the last two.
"""

import bisect
import csv
import dataclasses
import json
import statistics
from pathlib import Path


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
    cold_start_s: float

    def decode_step_s(self, batch: int) -> float:
        xs, ys = self.decode_batches, self.decode_seconds
        if len(xs) == 1:
            return ys[0]
        i = min(max(bisect.bisect_left(xs, batch), 1), len(xs) - 1)
        x0, x1, y0, y1 = xs[i - 1], xs[i], ys[i - 1], ys[i]
        return max(1e-4, y0 + (y1 - y0) * (batch - x0) / (x1 - x0))

    def prefill_s(self, prompt_tokens: int) -> float:
        return prompt_tokens / self.prefill_tokens_per_s

    def largest_batch_within(self, itl_s: float) -> int:
        """Most sequences a replica may batch while each still gets a token every `itl_s`."""
        best = 1
        for batch in range(1, self.max_batch + 1):
            if self.decode_step_s(batch) <= itl_s:
                best = batch
        return best


def load_profile(path: str | Path) -> ReplicaProfile:
    data = json.loads(Path(path).read_text())
    try:
        decode = data["decode_step_s"]
        pairs = sorted(zip(decode["batch"], decode["seconds"]))
        return ReplicaProfile(
            name=data["name"],
            source=data["source"],
            gpus_per_replica=int(data.get("gpus_per_replica", 1)),
            max_batch=int(data["max_batch"]),
            kv_cache_tokens=int(data.get("kv_cache_tokens", 10**9)),
            prefill_tokens_per_s=float(data["prefill_tokens_per_s"]),
            decode_batches=tuple(int(b) for b, _ in pairs),
            decode_seconds=tuple(float(s) for _, s in pairs),
            cold_start_s=float(data["cold_start_s"]),
        )
    except KeyError as missing:
        raise ValueError(f"{path}: profile is missing field {missing}") from None


@dataclasses.dataclass(frozen=True)
class GpuPrices:
    instance_type: str
    on_demand_per_gpu_hour: float
    spot_per_gpu_hour: float
    source: str


def load_prices(path: str | Path, instance_type: str) -> GpuPrices:
    """Median per-GPU-hour on-demand and spot price of `instance_type` over the zones in a SkyPilot-style CSV."""
    with open(path, newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["instance_type"] == instance_type]
    on_demand = [float(r["ondemand_usd_per_gpu_hr"]) for r in rows if r["ondemand_usd_per_gpu_hr"]]
    spot = [float(r["spot_usd_per_gpu_hr"]) for r in rows if r["spot_usd_per_gpu_hr"]]
    if not on_demand or not spot:
        raise ValueError(f"{path}: no on-demand and spot prices for instance type {instance_type!r}")
    return GpuPrices(
        instance_type, statistics.median(on_demand), statistics.median(spot),
        f"median over {len(spot)} zones of {Path(path).name}",
    )
