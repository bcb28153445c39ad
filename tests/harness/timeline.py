"""What happened during the scenario, on one time axis: the LLMDeployment's replicas by pool and conditions
(sampled from the apiserver), the clients' requests, and marks for each step (reclaims, scale to zero); written as a
JSON report and a PNG timeline."""

import asyncio
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from harness.trace_replay import Outcome

WINDOW_S = 30.0  # trailing window of the rate and TTFT p95 curves


@dataclass
class Sample:
    t: float
    on_demand_ready: int
    on_demand_desired: int
    spot_ready: int
    spot_desired: int
    conditions: dict[str, str]


@dataclass
class Timeline:
    started: float
    samples: list[Sample] = field(default_factory=list)
    marks: list[tuple[float, str]] = field(default_factory=list)

    def mark(self, label: str) -> None:
        self.marks.append((time.monotonic() - self.started, label))

    async def follow(self, cluster, name: str, stop: asyncio.Event, interval: float = 2.0) -> None:
        while not stop.is_set():
            body = cluster.get("fleetserve.io/v1alpha1", "LLMDeployment", name) or {}
            status = body.get("status") or {}
            replicas = status.get("replicas") or {}
            od, spot = replicas.get("onDemand") or {}, replicas.get("spot") or {}
            self.samples.append(Sample(
                time.monotonic() - self.started, od.get("ready", 0), od.get("desired", 0), spot.get("ready", 0),
                spot.get("desired", 0), {c["type"]: f"{c['status']} {c.get('reason', '')}" for c in status.get("conditions", [])}))
            try:
                await asyncio.wait_for(stop.wait(), interval)
            except TimeoutError:
                pass

    def serving_at(self, t: float) -> int:
        before = [s for s in self.samples if s.t <= t]
        return (before[-1].on_demand_ready + before[-1].spot_ready) if before else 0


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def write_report(folder: Path, timeline: Timeline, outcomes: list[Outcome], events: list[dict], checks: dict,
                 settings: dict) -> dict:
    requests = [{"sent": o.sent - timeline.started, "ttft": o.ttft, "done": None if o.done is None else o.done - timeline.started,
                 "chars": len(o.text), "finish_reason": o.finish_reason, "error": o.error} for o in outcomes]
    ttfts = [o.ttft for o in outcomes if o.ttft is not None]
    report = {
        "settings": settings,
        "summary": {"requests": len(outcomes), "errors": sum(1 for o in outcomes if o.error),
                    "incomplete": sum(1 for o in outcomes if not o.error and o.finish_reason is None),
                    "ttft_p50_s": percentile(ttfts, 0.5), "ttft_p95_s": percentile(ttfts, 0.95),
                    "ttft_p99_s": percentile(ttfts, 0.99),
                    "max_replicas": max((s.on_demand_ready + s.spot_ready for s in timeline.samples), default=0)},
        "checks": checks,
        "marks": [{"t": t, "what": label} for t, label in timeline.marks],
        "events": [{"reason": e.get("reason"), "type": e.get("type"), "message": e.get("message"),
                    "object": (e.get("involvedObject") or {}).get("name"), "count": e.get("count")} for e in events],
        "timeline": [asdict(s) for s in timeline.samples],
        "requests": requests,
    }
    (folder / "report.json").write_text(json.dumps(report, indent=1))
    plot(report, folder / "timeline.png")
    return report


def plot(report: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    requests, samples = report["requests"], report["timeline"]
    end = max([s["t"] for s in samples] + [r["sent"] for r in requests] + [1.0])
    grid = [i * 2.0 for i in range(int(end / 2.0) + 1)]
    rate = [sum(1 for r in requests if t - WINDOW_S < r["sent"] <= t) / WINDOW_S for t in grid]
    p95 = [percentile([r["ttft"] for r in requests if r["ttft"] is not None and t - WINDOW_S < r["sent"] <= t], 0.95)
           for t in grid]
    figure, (ax_rate, ax_replicas, ax_ttft) = plt.subplots(3, 1, figsize=(11, 8), sharex=True)
    ax_rate.plot(grid, rate, color="tab:blue")
    ax_rate.set_ylabel(f"requests/s\n({WINDOW_S:.0f} s window)")
    times = [s["t"] for s in samples]
    ax_replicas.step(times, [s["on_demand_ready"] for s in samples], where="post", label="on-demand ready")
    ax_replicas.step(times, [s["spot_ready"] for s in samples], where="post", label="spot ready")
    ax_replicas.step(times, [s["on_demand_desired"] + s["spot_desired"] for s in samples], where="post",
                     linestyle=":", color="grey", label="desired (both pools)")
    ax_replicas.set_ylabel("replicas")
    ax_replicas.legend(loc="upper left", fontsize=8)
    ax_ttft.plot(grid, [v if v is not None else float("nan") for v in p95], color="tab:red")
    ax_ttft.set_ylabel(f"TTFT p95 (s)\n({WINDOW_S:.0f} s window)")
    ax_ttft.set_xlabel("seconds since the load started")
    for mark in report["marks"]:
        for axis in (ax_rate, ax_replicas, ax_ttft):
            axis.axvline(mark["t"], color="black", linewidth=0.6, alpha=0.5)
        ax_rate.annotate(mark["what"], (mark["t"], 0), rotation=90, fontsize=7, va="bottom", ha="right")
    figure.suptitle("FleetServe on the local control plane: load, replicas by pool, TTFT and spot reclaims")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
