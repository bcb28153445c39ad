"""Where FleetServe's cost above the hindsight fleet comes from: the policy rerun on one workload with its
settings and margins taken away one after another (each row keeps the ones above it), attainment beside cost.

A diagnosis, not a tuning: the margins are constants with reasons (docs/autoscaler.md, "Every constant and its
reason"), not flags, so this script replaces them for its own runs only. Rows:
  as run                 the settings of the cross-workload runs (their run.sh passes them)
  spot-first settings    no on-demand floor, spot allowed for the whole fleet (--on-demand-min 0 --spot-max-share 1)
  no burst factor        plan for the current rate, not the busiest window of the last five minutes
  no TTFT feedback       the observed TTFT quantile no longer raises the planned load
  no utilisation cap     slots may be planned full (SloTarget.max_utilization 1.0)
  no headroom            plan for every late request the SLO allows (SloTarget.headroom 0)

Run from the repo root, once per workload (minutes each):
  .venv/bin/python benchmarks/policy_cost_gap.py --out benchmarks/results/cost_gap/NAME.json -- \
      <the workload's `fleetserve simulate` arguments, as in benchmarks/results/cross_workload/run.sh>
It writes NAME.json and the same rows as a table, NAME.md.
"""

import argparse
import contextlib
import functools
import json
import sys
import tempfile
from pathlib import Path
from unittest import mock

from fleetserve.autoscaler import control, simulate_cli
from fleetserve.autoscaler.policy import SloTarget

STEPS = [
    ("as run", []),
    ("spot-first settings", ["--on-demand-min", "0", "--spot-max-share", "1"]),
    ("no burst factor", []),
    ("no TTFT feedback", []),
    ("no utilisation cap", []),
    ("no headroom", []),
]


def _without(step: str, stack: contextlib.ExitStack, slo_fields: dict) -> None:
    """Takes away the margin `step` names, for the runs inside `stack`."""
    if step == "no burst factor":
        stack.enter_context(mock.patch.object(control, "_burst_factor", lambda snapshot: 1.0))
    elif step == "no TTFT feedback":
        stack.enter_context(mock.patch.object(control, "FEEDBACK_MAX", 1.0))
    elif step == "no utilisation cap":
        slo_fields["max_utilization"] = 1.0
    elif step == "no headroom":
        slo_fields["headroom"] = 0.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="JSON with one row per step")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--steps", type=int, default=len(STEPS), help="run only the first N steps")
    parser.add_argument("simulate_args", nargs=argparse.REMAINDER, help="-- then `fleetserve simulate` arguments")
    args = parser.parse_args()
    simulate_args = [a for a in args.simulate_args if a != "--"]
    cli = argparse.ArgumentParser()
    simulate_cli.add_arguments(cli)
    rows, flags, slo_fields = [], [], {}
    with contextlib.ExitStack() as stack, tempfile.TemporaryDirectory() as scratch:
        for step, step_flags in STEPS[: args.steps]:
            _without(step, stack, slo_fields)
            flags += step_flags
            result = Path(scratch) / "run.json"
            run_args = cli.parse_args([*simulate_args, *flags, "--policy", "fleetserve", "--repeats", str(args.repeats),
                                       "--json", str(result)])
            with mock.patch.object(simulate_cli, "SloTarget", functools.partial(SloTarget, **slo_fields)):
                if simulate_cli.run(run_args) != 0:
                    return 2
            report = json.loads(result.read_text())
            ours = next(s for s in report["summary"] if s["policy"] == "fleetserve")
            gpu_hours = [sum(r["gpu_hours_spot"] + r["gpu_hours_ondemand"] for r in repeat if r["policy"] == "fleetserve")
                         for repeat in report["repeats"]]
            rows.append({
                "step": step,
                "attainment_feasible_worst": ours["ttft_slo_attainment_feasible_worst"],
                "attainment_feasible_mean": ours["ttft_slo_attainment_feasible_mean"],
                "cost_vs_static_ondemand_min_worst": ours["cost_vs_static_ondemand_min_worst"],
                "cost_vs_static_ondemand_min_mean": ours["cost_vs_static_ondemand_min_mean"],
                "gpu_hours_mean": sum(gpu_hours) / len(gpu_hours),
                "static_ondemand_min_gpu_hours": next(r["gpu_hours_ondemand"] for r in report["repeats"][0]
                                                      if r["policy"] == "static_ondemand_min"),
                "lost_worst": ours["lost_requests_worst"],
            })
            print(f"{step:22s} attainment worst {rows[-1]['attainment_feasible_worst']:.2%} "
                  f"cost worst {rows[-1]['cost_vs_static_ondemand_min_worst']:.1%} "
                  f"GPU-h {rows[-1]['gpu_hours_mean']:.1f}", file=sys.stderr)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"simulate_args": simulate_args, "repeats": args.repeats, "steps": rows}, indent=2) + "\n")
    out.with_suffix(".md").write_text(_table(rows))
    return 0


def _table(rows: list[dict]) -> str:
    lines = ["| step (each keeps the ones above) | feasible within SLO, worst (mean) | cost vs static min, worst (mean) "
             "| GPU-hours, mean (static min) | lost, worst |", "|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['step']} | {row['attainment_feasible_worst']:.2%} ({row['attainment_feasible_mean']:.2%}) "
                     f"| {row['cost_vs_static_ondemand_min_worst']:.1%} ({row['cost_vs_static_ondemand_min_mean']:.1%}) "
                     f"| {row['gpu_hours_mean']:.1f} ({row['static_ondemand_min_gpu_hours']:.1f}) | {row['lost_worst']} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
