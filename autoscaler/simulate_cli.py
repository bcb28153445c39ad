"""`fleetserve simulate`: replay a request trace (and spot traces) against our policy and the baselines."""

import argparse
import json
import logging
import math
import sys
from pathlib import Path

from tqdm import tqdm

from fleetserve.api.spec import Autoscaling, OnDemandCapacity, SpotCapacity
from fleetserve.autoscaler import sim_hindsight, sim_policies, sim_report
from fleetserve.autoscaler.control import LoopSettings
from fleetserve.autoscaler.policy import Load, SloTarget, service_time_at
from fleetserve.autoscaler.sim_cluster import ROUTING, SpotPool
from fleetserve.autoscaler.sim_profile import load_prices, load_profile
from fleetserve.autoscaler.sim_traces import InputError, busiest_offset, load_requests, load_spot_trace, superpose
from fleetserve.autoscaler.simulator import SimSetup, simulate, smallest_static_fleet
from fleetserve.autoscaler.spot import SpotSettings, spot_share


POLICIES = ["static_ondemand_peak", "hpa_queue", "knative_kpa", "skyserve_spothedge", "fleetserve"]
HINDSIGHT = "hindsight"  # a reference, not a policy (sim_hindsight): priced per spot offset, never simulated as one
STATICS = ("static_ondemand_min", "static_ondemand_peak")  # on-demand only: run once, not per spot offset
DEFAULT_PRICES = "../shared/data/gpu-prices-skypilot-aws/aws_gpu_prices_us.csv"
DEFAULT_PROFILE = "benchmarks/results/simulation_profile.json"
# The attainment static_ondemand_min must reach: the target, on feasible requests.
STATIC_MIN_TARGET = 0.99
# Default replicas.max: a budget cap set by the user, not a model's output; high enough that it never binds here.
DEFAULT_MAX_REPLICAS = 100


def _number(low: float, high: float = math.inf, low_open: bool = True, high_open: bool = True, kind=float):
    """An argparse type: a finite number in the interval, or an error message that states the interval."""
    interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a{'n integer' if kind is int else ' number'}") from None
        below = value <= low if low_open else value < low
        above = value >= high if high_open else value > high
        if not math.isfinite(value) or below or above:
            raise argparse.ArgumentTypeError(f"{text} is outside {interval}")
        return value

    return parse


POSITIVE = _number(0)
NON_NEGATIVE = _number(0, low_open=False)
COUNT = _number(0, low_open=False, kind=int)


def _offset(text: str) -> str:
    if text != "auto":
        NON_NEGATIVE(text)
    return text


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--trace", required=True, help="request trace CSV (Azure LLM trace schema)")
    parser.add_argument("--rate-scale", type=_number(1, low_open=False, kind=int), default=1, help="superpose N circularly shifted copies of the trace")
    parser.add_argument("--spot-trace", action="append", default=[], help="spot capacity trace, one per pool (repeatable)")
    parser.add_argument("--spot-offset", type=_offset, default="auto", help="seconds into the spot traces to start, or 'auto' (window with most preemptions)")
    parser.add_argument("--spot-x-unit-s", type=POSITIVE, default=1.0, help="unit of x in `x,count` spot traces (3600 for hours)")
    parser.add_argument("--policy", default="all", choices=[*POLICIES, HINDSIGHT, "all"],
                        help="one policy beside the static baselines, or all of them and the hindsight reference")
    parser.add_argument("--slo-ttft", type=POSITIVE, required=True, help="TTFT SLO in seconds")
    parser.add_argument("--slo-itl", type=POSITIVE, default=0.2, help="inter-token latency SLO in seconds (per-request mean)")
    parser.add_argument("--slo-percentile", type=_number(0, 100), default=99.0, help="percentile our policy plans for")
    parser.add_argument("--profile", default=DEFAULT_PROFILE, help="replica performance profile JSON")
    parser.add_argument("--prices", default=DEFAULT_PRICES, help="GPU price CSV (SkyPilot catalog schema)")
    parser.add_argument("--instance-type", default="g6.16xlarge", help="instance type priced from --prices")
    parser.add_argument("--min-replicas", type=COUNT, default=1)
    parser.add_argument("--max-replicas", type=_number(0, low_open=False, kind=int), default=DEFAULT_MAX_REPLICAS,
                        help="replicas.max of every autoscaling policy (a budget cap)")
    parser.add_argument("--routing", choices=ROUTING, default="round_robin", help="how requests reach replicas")
    parser.add_argument("--repeats", type=_number(1, low_open=False, kind=int), default=1,
                        help="runs over different spot offsets and seeds; mean and worst case per policy")
    # Our policy's settings default to the LLMDeployment's, so a simulation runs what a deployment left at its defaults would.
    parser.add_argument("--on-demand-min", type=COUNT, default=OnDemandCapacity().min_replicas, help="our policy's on-demand floor")
    parser.add_argument("--spot-max-share", type=_number(0, 1, low_open=False, high_open=False), default=SpotCapacity().max_share,
                        help="our policy's largest spot share")
    parser.add_argument("--scale-down-delay", type=NON_NEGATIVE, default=float(Autoscaling().scale_down_delay_seconds),
                        help="our policy's scale-down delay, s")
    parser.add_argument("--notice-s", type=NON_NEGATIVE, default=30.0, help="preemption notice before a spot replica dies")
    parser.add_argument("--step-s", type=_number(0, 60), default=0.5, help="simulation time step")
    parser.add_argument("--limit-requests", type=COUNT, default=0, help="replay only the first N requests")
    parser.add_argument("--warmup-s", type=NON_NEGATIVE, default=300.0, help="unscored replay of the trace's start before it")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", required=True, help="output JSON path")
    parser.add_argument("--plot", help="output PNG path")
    parser.add_argument("--markdown", help="output markdown table path")


def _spot_settings(args) -> SpotSettings:
    return SpotSettings(enabled=bool(args.spot_trace), max_share=args.spot_max_share, on_demand_min=args.on_demand_min)


def _build_policies(args, profile, requests, slo: SloTarget, static_replicas: int) -> dict:
    capacity = sim_policies.profile_capacity(profile, requests, args.slo_itl)
    ours = LoopSettings(
        min_replicas=args.min_replicas,
        max_replicas=args.max_replicas,
        slo=slo,
        itl_slo_s=args.slo_itl,
        max_num_seqs=profile.max_batch,
        scale_up_stabilization_s=0.0,
        scale_down_delay_s=args.scale_down_delay,
        spot=_spot_settings(args),
    )
    # Requests/s one full replica completes at the static fleet's peak operating point (prefill stalls included).
    peak = Load(sim_policies.peak_rate(requests), 0, 1)
    replica_rate = capacity.slots_per_replica / service_time_at(peak, capacity, static_replicas)
    every = {
        "static_ondemand_peak": lambda: sim_policies.Static(static_replicas),
        "hpa_queue": lambda: sim_policies.Hpa(args.min_replicas, args.max_replicas),
        "knative_kpa": lambda: sim_policies.Kpa(args.min_replicas, args.max_replicas, target_concurrency=0.7 * capacity.slots_per_replica),
        "skyserve_spothedge": lambda: sim_policies.SkyServe(args.min_replicas, args.max_replicas, target_qps_per_replica=0.7 * replica_rate),
        "fleetserve": lambda: sim_policies.FleetServe(ours),
    }
    # Static peak provisioning always runs beside static_ondemand_min: together they are the cost references.
    names = POLICIES if args.policy == "all" else [n for n in ("static_ondemand_peak", args.policy) if n in every]
    if not args.spot_trace:
        names = [n for n in names if n != "skyserve_spothedge"]
    return {name: every[name] for name in names}


def _offsets(traces, duration: float, spot_offset: str, repeat: int, repeats: int) -> list[float]:
    """Repeat 0 starts each trace at its window with the most instances lost (adversarial); the others spread
    evenly over the rest of the trace. A number given with --spot-offset holds for every repeat."""
    if spot_offset != "auto":
        return [float(spot_offset)] * len(traces)
    if repeat == 0:
        return [busiest_offset(trace, duration) for trace in traces]
    return [repeat / repeats * max(0.0, trace.duration_s - duration) for trace in traces]


def summarise(runs: list[list[dict]]) -> list[dict]:
    """Per policy over repeats: the mean, and the worst case (lowest attainment, highest cost, most lost)."""
    by_policy: dict[str, list[dict]] = {}
    for rows in runs:
        for row in rows:
            by_policy.setdefault(row["policy"], []).append(row)
    summary = []
    for name, rows in by_policy.items():
        entry = {"policy": name, "runs": len(rows)}
        for key in ("ttft_slo_attainment_feasible", "ttft_slo_attainment", "cost_vs_static_ondemand_min",
                    "cost_vs_static_ondemand", "lost_requests", "rejected_requests", "preemptions"):
            values = [r[key] for r in rows]
            entry[f"{key}_mean"] = sum(values) / len(values)
            worst = min if key.startswith("ttft") else max
            entry[f"{key}_worst"] = worst(values)
        summary.append(entry)
    return summary


def run(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except InputError as error:
        print(f"fleetserve simulate: error: {error}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.min_replicas > args.max_replicas:
        raise InputError(f"--min-replicas {args.min_replicas} is above --max-replicas {args.max_replicas}")
    requests = load_requests(args.trace)
    if args.limit_requests:
        requests = requests[: args.limit_requests]
    requests = superpose(requests, args.rate_scale)
    profile = load_profile(args.profile)
    prices = load_prices(args.prices, args.instance_type)
    slo = SloTarget(ttft_s=args.slo_ttft, quantile=args.slo_percentile / 100)
    capacity = sim_policies.profile_capacity(profile, requests, args.slo_itl)
    static_replicas = sim_policies.static_peak_replicas(capacity, requests, slo, max_replicas=1000)
    duration = requests[-1].arrival_s
    traces = [load_spot_trace(path, args.spot_x_unit_s) for path in args.spot_trace]
    policies = _build_policies(args, profile, requests, slo, static_replicas)

    def setup_for(repeat: int) -> SimSetup:
        offsets = _offsets(traces, duration, args.spot_offset, repeat, args.repeats)
        return SimSetup(
            requests, profile, prices, [SpotPool(t, o) for t, o in zip(traces, offsets)], args.slo_ttft, args.slo_itl,
            initial_replicas, notice_s=args.notice_s, warmup_s=args.warmup_s, step_s=args.step_s, seed=args.seed + repeat,
            routing=args.routing, quantile=slo.quantile,
        )

    initial_replicas = 0  # the static runs start with their own fleet
    base = setup_for(0)
    minimum, minimum_row, minimum_timeline = smallest_static_fleet(base, STATIC_MIN_TARGET, static_replicas, 10 * static_replicas)
    # Every autoscaling policy starts serving with static_ondemand_min's count (split by its own rules): a fleet
    # known to hold the SLO on this trace, so no policy starts from a shortage or a surplus of the others' making.
    initial_replicas = minimum
    statics = {"static_ondemand_min": (minimum_row, minimum_timeline)}
    if "static_ondemand_peak" in policies:
        statics["static_ondemand_peak"] = simulate(policies["static_ondemand_peak"](), base, static_replicas)
    runs, timelines = [], {}
    jobs = [(repeat, name) for repeat in range(args.repeats) for name in policies if name not in STATICS]
    results: dict[int, list[dict]] = {repeat: [statics[n][0] for n in statics] for repeat in range(args.repeats)}
    for repeat, name in tqdm(jobs, desc="policy runs", disable=len(jobs) < 2):
        row, timeline = simulate(policies[name](), setup_for(repeat), initial_replicas)
        results[repeat].append(dict(row, repeat=repeat))
        if repeat == 0:
            timelines[name] = timeline
    timelines = {**{n: statics[n][1] for n in statics}, **timelines}
    if args.policy in ("all", HINDSIGHT):
        windows = sim_hindsight.window_options(base, STATIC_MIN_TARGET, 10 * static_replicas)
        # Twice: spot wherever there is room, and within our policy's on-demand floor and spot share, which shows
        # what those settings alone cost.
        ours = _spot_settings(args)
        splits = {HINDSIGHT: lambda replicas: replicas, f"{HINDSIGHT}_fleetserve_split": lambda replicas: spot_share(replicas, ours)}
        for repeat in range(args.repeats):
            for name, spot_allowed in splits.items():
                row, timeline = sim_hindsight.plan(windows, setup_for(repeat), STATIC_MIN_TARGET, name, spot_allowed)
                results[repeat].append(dict(row, repeat=repeat))
                if repeat == 0 and name == HINDSIGHT:
                    timelines[name] = timeline
    for rows in results.values():
        for row in rows:
            row["cost_vs_static_ondemand_min"] = row["cost_usd"] / minimum_row["cost_usd"]
            row["cost_vs_static_ondemand"] = row["cost_usd"] / statics.get("static_ondemand_peak", statics["static_ondemand_min"])[0]["cost_usd"]
        runs.append(rows)
    summary = summarise(runs)

    report = {
        "setup": {
            "trace": args.trace, "rate_scale": args.rate_scale, "requests": len(requests), "duration_s": duration,
            "feasible_requests": sum(1 for r in requests if base.feasible(r)),
            "spot_traces": [{"path": p, "offsets_s": [setup_for(i).pools[k].offset_s for i in range(args.repeats)]}
                            for k, p in enumerate(args.spot_trace)],
            "slo_ttft_s": args.slo_ttft, "slo_itl_s": args.slo_itl, "slo_percentile": args.slo_percentile,
            "profile": {"path": args.profile, "name": profile.name, "source": profile.source},
            "prices": {"instance_type": prices.instance_type, "on_demand_per_gpu_hour": prices.on_demand_per_gpu_hour,
                       "spot_per_gpu_hour": prices.spot_per_gpu_hour, "source": prices.source},
            "static_peak_replicas": static_replicas, "static_ondemand_min_replicas": minimum,
            "static_ondemand_min_target": STATIC_MIN_TARGET, "initial_replicas": initial_replicas,
            "max_replicas": args.max_replicas, "routing": args.routing, "repeats": args.repeats,
            "notice_s": args.notice_s, "warmup_s": args.warmup_s, "step_s": args.step_s, "seed": args.seed,
            "fleetserve": {"on_demand_min": args.on_demand_min, "spot_max_share": args.spot_max_share,
                           "scale_down_delay_s": args.scale_down_delay, "min_replicas": args.min_replicas},
        },
        "results": runs[0],
        "summary": summary,
        "repeats": runs,
    }
    Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    table = sim_report.markdown_table(runs[0]) + "\n" + sim_report.summary_table(summary)
    if args.markdown:
        Path(args.markdown).write_text(table)
    if args.plot:
        title = f"{Path(args.trace).name} on {profile.name}: TTFT SLO {args.slo_ttft}s, {len(traces)} spot pool(s)"
        sim_report.plot(runs, timelines, title, args.plot)
    print(table)
    return 0
