"""The hindsight reference: what a fleet that knew the load and the spot capacity in advance would cost.

No controller can run it; it is a yardstick for the policies. Each WINDOW_S of the trace gets a fixed fleet,
simulated over that window alone from the steady state of its own load (no cold starts, no preemptions, no queue
carried in from the window before). Every replica runs on spot while the pools hold one and swaps to on-demand (and
back) at no cost the moment they don't. Over the windows' fleet sizes, the cheapest plan whose late requests over
the whole trace stay within the SLO target's allowance is picked (a Lagrangian relaxation over each window's
(cost, late) options), so a window may run short where that is cheaper than a replica elsewhere.

Everything a real policy pays for is left out (reacting late, head room for bursts, cold starts, the capacity a
preemption or a lost zone takes away), so it sits close to a lower bound: where even the hindsight fleet costs more
than the cost target, a policy that has to react to what it sees can't be expected to meet that target. It is not a
strict bound: a fleet that changed within a window could be cheaper still.

`fleetserve simulate` prices it twice: with spot wherever there is room (`hindsight`), and within our policy's
on-demand floor and spot share (`hindsight_fleetserve_split`), which shows what those settings alone cost.
"""

import dataclasses
from collections.abc import Callable

from tqdm import tqdm

from fleetserve.autoscaler.sim_policies import Static
from fleetserve.autoscaler.simulator import SimSetup, Timeline, simulate, smallest_static_fleet

# The fleet may change this often: the scale-down delay and burst horizon of the policies, and the warm-up each
# window is simulated after.
WINDOW_S = 300.0
# Fleet sizes tried per window around the smallest that keeps the target within it: a few below (a window may run
# short where other windows have room) and one above (so a cheap window can make room for a dear one).
SIZES_BELOW, SIZES_ABOVE = 3, 1
# Spot capacity is read this often when pricing a plan.
PRICE_STEP_S = 5.0
# Ends of the search over the Lagrange multiplier (USD per late request).
LAMBDA_STEPS, LAMBDA_MAX = 60, 1e6


@dataclasses.dataclass(frozen=True)
class WindowOption:
    replicas: int
    late: int  # feasible requests of the window over the TTFT SLO (or never served)
    within_all: int  # requests of the window within the TTFT SLO
    rejected: int
    lost: int


@dataclasses.dataclass(frozen=True)
class Window:
    start_s: float
    end_s: float
    requests: int
    feasible: int
    options: tuple[WindowOption, ...]


def _option(replicas: int, row: dict) -> WindowOption:
    feasible = row["feasible_requests"]
    within = round(row["ttft_slo_attainment_feasible"] * feasible) if feasible else 0
    return WindowOption(replicas, feasible - within, round(row["ttft_slo_attainment"] * row["requests"]),
                        row["rejected_requests"], row["lost_requests"])


def window_options(setup: SimSetup, target: float, upper: int) -> list[Window]:
    """Per window, the (late, served) outcome of each fleet size near the smallest that meets `target` there."""
    duration = setup.requests[-1].arrival_s
    starts = [i * WINDOW_S for i in range(int(duration // WINDOW_S) + 1)]
    windows, hint = [], 1
    for start in tqdm(starts, desc="hindsight windows", disable=len(starts) < 10):
        end = duration + 1.0 if start == starts[-1] else start + WINDOW_S
        requests = [dataclasses.replace(r, arrival_s=r.arrival_s - start) for r in setup.requests if start <= r.arrival_s < end]
        window = dataclasses.replace(setup, requests=requests, pools=[])
        feasible = sum(1 for r in requests if setup.feasible(r))
        if not requests:
            windows.append(Window(start, end, 0, 0, (WindowOption(0, 0, 0, 0, 0),)))
            continue
        if not feasible:  # nothing to keep within the SLO; one replica serves them
            smallest, sizes, known = 1, [1], {}
        else:
            smallest, row, _ = smallest_static_fleet(window, target, hint, upper)
            sizes, known = range(max(1, smallest - SIZES_BELOW), smallest + SIZES_ABOVE + 1), {smallest: row}
        # The search already simulated the smallest size (seeded, so a rerun would give the same row).
        options = tuple(_option(n, known[n] if n in known else simulate(Static(n, name="hindsight"), window, n)[0])
                        for n in sizes)
        windows.append(Window(start, end, len(requests), feasible, options))
        hint = smallest
    return windows


def _spot_room(setup: SimSetup, start: float, end: float) -> list[int]:
    steps = max(1, round((end - start) / PRICE_STEP_S))
    return [sum(pool.capacity(start + (k + 0.5) * (end - start) / steps) for pool in setup.pools) for k in range(steps)]


def _priced(window: Window, room: list[int], setup: SimSetup, spot_allowed) -> list[tuple[float, float, float, WindowOption]]:
    """(USD, spot GPU-hours, on-demand GPU-hours, option) for each option: as many replicas on spot as the pools
    have room for and `spot_allowed` lets go there, on-demand for the rest."""
    hours_per_step = (window.end_s - window.start_s) / len(room) / 3600 * setup.profile.gpus_per_replica
    prices = setup.prices
    priced = []
    for option in window.options:
        on_spot = sum(min(spot_allowed(option.replicas), r) for r in room)
        spot, on_demand = on_spot * hours_per_step, (option.replicas * len(room) - on_spot) * hours_per_step
        priced.append((spot * prices.spot_per_gpu_hour + on_demand * prices.on_demand_per_gpu_hour, spot, on_demand, option))
    return priced


def _choose(priced, allowed_late: float, price_of_late: float):
    picks = [min(options, key=lambda o: (o[0] + price_of_late * o[3].late, o[3].late)) for options in priced]
    return picks, sum(p[3].late for p in picks) <= allowed_late


def plan(windows: list[Window], setup: SimSetup, target: float, name: str = "hindsight",
         spot_allowed: Callable[[int], int] = lambda replicas: replicas) -> tuple[dict, Timeline]:
    """The cheapest plan over `windows` that keeps `target` of all feasible requests within the SLO, priced on
    `setup`'s spot pools with at most `spot_allowed(replicas)` on spot; its result row (the simulator's keys) and
    per-minute timeline."""
    feasible = sum(w.feasible for w in windows)
    allowed_late = (1 - target) * feasible
    rooms = [_spot_room(setup, w.start_s, w.end_s) for w in windows]
    priced = [_priced(w, room, setup, spot_allowed) for w, room in zip(windows, rooms)]
    low, high = 0.0, LAMBDA_MAX  # the smallest price of a late request whose plan keeps the target
    for _ in range(LAMBDA_STEPS):
        middle = (low + high) / 2
        low, high = (low, middle) if _choose(priced, allowed_late, middle)[1] else (middle, high)
    picks, _ = _choose(priced, allowed_late, high)
    chosen = [p[3] for p in picks]
    late = sum(o.late for o in chosen)
    requests = sum(w.requests for w in windows)
    nan = float("nan")
    row = {
        "policy": name, "requests": requests,
        "ttft_slo_attainment": sum(o.within_all for o in chosen) / requests,
        "feasible_requests": feasible,
        "ttft_slo_attainment_feasible": (feasible - late) / feasible if feasible else nan,
        "itl_slo_attainment": nan, "ttft_p50_s": nan, "ttft_p99_s": nan, "itl_mean_s": nan,
        "cost_usd": sum(p[0] for p in picks), "cost_vs_static_ondemand": nan,
        "lost_requests": sum(o.lost for o in chosen), "retried_requests": 0, "unfinished_requests": 0,
        "rejected_requests": sum(o.rejected for o in chosen), "preemptions": 0,
        "gpu_hours_spot": sum(p[1] for p in picks), "gpu_hours_ondemand": sum(p[2] for p in picks),
    }
    return row, _timeline(windows, rooms, chosen, spot_allowed)


def _timeline(windows: list[Window], rooms: list[list[int]], chosen: list[WindowOption], spot_allowed) -> Timeline:
    timeline = Timeline()
    for window, room, option in zip(windows, rooms, chosen):
        replicas, minutes = option.replicas, (window.end_s - window.start_s) / 60
        per_minute = max(1, round(minutes))
        for k in range(per_minute):
            spot = min(spot_allowed(replicas), room[min(len(room) - 1, k * len(room) // per_minute)])
            timeline.minute.append(window.start_s / 60 + k * minutes / per_minute)
            timeline.arrivals_per_s.append(window.requests / (window.end_s - window.start_s))
            timeline.on_demand.append(replicas - spot)
            timeline.spot.append(spot)
    return timeline
