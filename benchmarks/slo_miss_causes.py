"""Why FleetServe misses the TTFT SLO on a workload: its repeats rerun as in the cross-workload evaluation, each late
feasible request put down to a cause, and the same repeats rerun with instant cold starts (a replica serves the
moment it has a node), which shows how much of the miss is the minutes a new replica takes to serve.

A late request's cause, checked in this order:
  preemption   a spot replica got a reclaim notice within one longest cold start before the request arrived
               (the notice takes it out of the Service; its replacement may not serve yet)
  load growth  the trace's arrival rate over the minute before the request is more than 1/max_utilization times
               its rate over the five minutes before one longest cold start earlier: more growth than the spare
               slots the policy keeps (SloTarget.max_utilization) absorb before a replica started then can serve
  steady       neither: the late share the plan allows, and estimate error
The longest cold start is the upper end of the profile's uncached range (240 s in the committed profiles).

A diagnosis, not a tuning: nothing here changes the policy. Run from the repo root, once per workload:
  .venv/bin/python benchmarks/slo_miss_causes.py --out benchmarks/results/slo_misses/NAME.json -- \
      <the workload's `fleetserve simulate` arguments, as in benchmarks/results/cross_workload/run.sh>
It writes NAME.json, a table NAME.md and NAME.png (the worst repeat: arrivals, serving replicas with and without
cold starts, notices, and late requests per minute by cause).
"""

import argparse
import bisect
import dataclasses
import json
import sys
import tempfile
from pathlib import Path
from unittest import mock

from fleetserve.autoscaler import simulate_cli, simulator
from fleetserve.autoscaler.policy import SloTarget
from fleetserve.autoscaler.sim_cluster import ON_DEMAND, SPOT

CAUSES = ("preemption", "load growth", "steady")
RATE_WINDOW_S = 60.0  # the arrival rate at a late request: the minute before it
REFERENCE_WINDOW_S = 300.0  # the rate it is compared with: five minutes, so one noisy minute is no reference
VARIANTS = ("as run", "instant cold starts")


class LateCauses:
    """Puts late requests down to a cause, from every request's arrival time (sorted) and the spot reclaim notices'
    times; `window_s` is one longest cold start, `spare` the load growth the spare slots absorb."""

    def __init__(self, arrivals: list[float], notices: list[float], window_s: float, spare: float):
        self.arrivals, self.notices = arrivals, sorted(notices)
        self.window_s, self.spare = window_s, spare

    def _rate(self, end_s: float, length_s: float) -> float:
        count = bisect.bisect_right(self.arrivals, end_s) - bisect.bisect_right(self.arrivals, end_s - length_s)
        return count / length_s

    def cause(self, arrival_s: float) -> str:
        first = bisect.bisect_left(self.notices, arrival_s - self.window_s)
        if first < len(self.notices) and self.notices[first] <= arrival_s:
            return "preemption"
        before = self._rate(arrival_s - self.window_s, REFERENCE_WINDOW_S)
        if self._rate(arrival_s, RATE_WINDOW_S) > self.spare * before:
            return "load growth"
        return "steady"


def _per_minute(times, minutes: int) -> list[int]:
    counts = [0] * minutes
    for t in times:
        if 0 <= t < minutes * 60:
            counts[int(t // 60)] += 1
    return counts


def _serving(cluster, kind: str, t: float) -> int:
    return sum(1 for r in cluster.replicas if r.kind == kind and r.ready_s is not None and r.ready_s <= t
               and (r.ended_s is None or r.ended_s > t) and (r.noticed_s is None or r.noticed_s > t))


_score = simulator.score  # the simulator's own scoring, which the recorder wraps


class _Recorder:
    """Stands in for simulator.score: scores as it does, and keeps what the causes and the plot need of each
    FleetServe run."""

    def __init__(self, window_s: float, spare: float):
        self.window_s, self.spare = window_s, spare
        self.runs: list[dict] = []

    def __call__(self, policy_name, setup, cluster, end_s):
        row = _score(policy_name, setup, cluster, end_s)
        if policy_name != "fleetserve":
            return row
        arrivals = [r.arrival_s for r in setup.requests]
        late = [r.trace.arrival_s for r in cluster.finished
                if r.scored and r.ttft_s > setup.slo_ttft_s and setup.feasible(r.trace)]
        notices = [r.noticed_s for r in cluster.replicas if r.noticed_s is not None]
        minutes = int(arrivals[-1] // 60) + 1
        causes = LateCauses(arrivals, notices, self.window_s, self.spare)
        by_cause = {cause: [] for cause in CAUSES}
        for t in late:
            by_cause[causes.cause(t)].append(t)
        self.runs.append({
            "causes": {cause: len(times) for cause, times in by_cause.items()},
            "minutes": {
                "arrivals_per_s": [n / 60 for n in _per_minute(arrivals, minutes)],
                "late": {cause: _per_minute(times, minutes) for cause, times in by_cause.items()},
                "notices": _per_minute(notices, minutes),
                "spot_serving": [_serving(cluster, SPOT, 60 * m + 30) for m in range(minutes)],
                "on_demand_serving": [_serving(cluster, ON_DEMAND, 60 * m + 30) for m in range(minutes)],
            },
        })
        return row


def _worst(rows: list[dict]) -> dict:
    """The repeat with the lowest share of feasible requests within the SLO."""
    return min(rows, key=lambda r: r["ttft_slo_attainment_feasible"])


def _run_variant(cli, simulate_args: list[str], repeats: int, instant: bool, recorder: _Recorder, scratch: str) -> dict:
    result = Path(scratch) / "run.json"
    run_args = cli.parse_args([*simulate_args, "--policy", "fleetserve", "--repeats", str(repeats), "--json", str(result)])
    load_profile = simulate_cli.load_profile

    def profile(path):
        loaded = load_profile(path)
        return dataclasses.replace(loaded, cold_start_s=0.0, cold_start_cached_s=None) if instant else loaded

    with mock.patch.object(simulator, "score", recorder), mock.patch.object(simulate_cli, "load_profile", profile):
        if simulate_cli.run(run_args) != 0:
            raise SystemExit(2)
    report = json.loads(result.read_text())
    rows = [row for repeat in report["repeats"] for row in repeat if row["policy"] == "fleetserve"]
    return {"rows": rows, "feasible_requests": report["setup"]["feasible_requests"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="JSON with the causes per repeat and both variants' rows")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("simulate_args", nargs=argparse.REMAINDER, help="-- then `fleetserve simulate` arguments")
    args = parser.parse_args()
    simulate_args = [a for a in args.simulate_args if a != "--"]
    cli = argparse.ArgumentParser()
    simulate_cli.add_arguments(cli)
    profile = simulate_cli.load_profile(cli.parse_args([*simulate_args, "--json", "-"]).profile)
    window_s = profile.cold_start_uncached_s[1] if profile.cold_start_uncached_s else profile.cold_start_s
    spare = 1 / SloTarget.max_utilization  # the default every run here uses
    variants = {}
    with tempfile.TemporaryDirectory() as scratch:
        for name in VARIANTS:
            recorder = _Recorder(window_s, spare)
            variants[name] = _run_variant(cli, simulate_args, args.repeats, name != "as run", recorder, scratch)
            for row, run in zip(variants[name]["rows"], recorder.runs):
                row.update(run)
            worst = _worst(variants[name]["rows"])
            print(f"{name:20s} worst {worst['ttft_slo_attainment_feasible']:.2%} causes {worst['causes']}", file=sys.stderr)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    report = {"simulate_args": simulate_args, "repeats": args.repeats, "longest_cold_start_s": window_s,
              "growth_absorbed": spare, "variants": variants}
    out.write_text(json.dumps(report, indent=1) + "\n")
    out.with_suffix(".md").write_text(_table(report))
    _plot(report, out.with_suffix(".png"), out.stem)
    return 0


def _table(report: dict) -> str:
    rows = report["variants"]["as run"]["rows"]
    instant = report["variants"]["instant cold starts"]["rows"]
    lines = ["| repeat | feasible within SLO | late: preemption | late: load growth | late: steady "
             "| with instant cold starts | cost vs static min (instant) |", "|---|---|---|---|---|---|---|"]
    for row, other in zip(rows, instant):
        causes = row["causes"]
        lines.append(f"| {row['repeat']} | {row['ttft_slo_attainment_feasible']:.2%} | {causes['preemption']} "
                     f"| {causes['load growth']} | {causes['steady']} | {other['ttft_slo_attainment_feasible']:.2%} "
                     f"| {row['cost_vs_static_ondemand_min']:.1%} ({other['cost_vs_static_ondemand_min']:.1%}) |")
    worst = [_worst(v["rows"])["ttft_slo_attainment_feasible"] for v in report["variants"].values()]
    lines.append(f"| worst | {worst[0]:.2%} | | | | {worst[1]:.2%} | |")
    return "\n".join(lines) + "\n"


def _plot(report: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["variants"]["as run"]["rows"]
    worst = rows.index(_worst(rows))
    run, instant = rows[worst]["minutes"], report["variants"]["instant cold starts"]["rows"][worst]["minutes"]
    minutes = range(len(run["arrivals_per_s"]))
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(11, 7), sharex=True)
    serving = [a + b for a, b in zip(run["spot_serving"], run["on_demand_serving"])]
    top.step(minutes, serving, where="post", color="tab:blue", label="replicas serving, as run")
    top.step(minutes, run["spot_serving"], where="post", color="tab:blue", linestyle=":", label="of them spot")
    top.step(minutes, [a + b for a, b in zip(instant["spot_serving"], instant["on_demand_serving"])], where="post",
             color="tab:green", alpha=0.7, label="replicas serving, instant cold starts")
    for m, n in enumerate(run["notices"]):
        if n:
            top.axvline(m, color="tab:red", alpha=0.3)
    top.set_ylabel("replicas serving")
    top.set_ylim(bottom=0)
    top.legend(loc="upper left", fontsize=8)
    rate = top.twinx()
    rate.plot(minutes, run["arrivals_per_s"], color="grey", alpha=0.6)
    rate.set_ylabel("arrivals per second (grey)")
    rate.set_ylim(bottom=0)
    top.set_title(f"{title}: worst repeat ({rows[worst]['ttft_slo_attainment_feasible']:.2%} within SLO); red lines: reclaim notices")
    bottom_of = [0] * len(minutes)
    for cause, color in zip(CAUSES, ("tab:red", "tab:orange", "tab:grey")):
        bottom.bar(minutes, run["late"][cause], bottom=bottom_of, width=1.0, color=color, label=f"late: {cause}")
        bottom_of = [a + b for a, b in zip(bottom_of, run["late"][cause])]
    bottom.set_ylabel("late feasible requests per minute")
    bottom.set_xlabel("minute of the trace")
    bottom.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
