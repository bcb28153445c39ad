"""The hindsight reference: per-window fleets that keep the SLO target over the whole trace, priced on spot where
the pools have room, and reported beside the policies by `fleetserve simulate`."""

import json
import random

import pytest

from fleetserve import cli
from fleetserve.autoscaler import sim_hindsight
from fleetserve.autoscaler.sim_cluster import SpotPool
from fleetserve.autoscaler.sim_hindsight import Window, WindowOption
from fleetserve.autoscaler.sim_traces import SpotTrace, TraceRequest
from fleetserve.autoscaler.simulator import smallest_static_fleet

from .test_sim_engine_model import PRICES, setup, simulate_inputs


def _step_then_quiet(seed=3):
    """Ten minutes at 4 req/s, ten without a request, five at 1 req/s."""
    rng = random.Random(seed)
    busy = [TraceRequest(i * 0.25, rng.randint(100, 600), rng.randint(20, 200)) for i in range(2400)]
    quiet = [TraceRequest(1200 + i * 1.0, rng.randint(100, 600), rng.randint(20, 200)) for i in range(300)]
    return busy + quiet


@pytest.fixture(scope="module")
def windows():
    return sim_hindsight.window_options(setup(_step_then_quiet()), 0.99, upper=32)


def test_each_window_gets_its_own_fleet_and_an_empty_window_none(windows):
    assert [w.start_s for w in windows] == [0, 300, 600, 900, 1200]
    sizes = {w.start_s: [o.replicas for o in w.options] for w in windows}
    assert sizes[600] == sizes[900] == [0]
    assert max(sizes[1200]) < max(sizes[0])  # 1 req/s needs fewer than 4 req/s


def test_the_plan_keeps_the_target_over_the_trace_for_less_than_the_static_minimum(windows):
    requests = _step_then_quiet()
    replicas, static_row, _ = smallest_static_fleet(setup(requests), 0.99, start=1, upper=32)
    row, timeline = sim_hindsight.plan(windows, setup(requests), 0.99)
    assert row["ttft_slo_attainment_feasible"] >= 0.99 and row["lost_requests"] == 0
    assert row["gpu_hours_ondemand"] < 0.7 * static_row["gpu_hours_ondemand"]  # idle and quiet windows are cheap
    assert row["gpu_hours_spot"] == 0 and row["cost_usd"] == pytest.approx(row["gpu_hours_ondemand"] * PRICES.on_demand_per_gpu_hour)
    assert max(a + b for a, b in zip(timeline.on_demand, timeline.spot)) <= replicas + sim_hindsight.SIZES_ABOVE


def test_spot_is_used_wherever_the_pools_have_room_and_an_empty_zone_prices_on_demand(windows):
    requests = _step_then_quiet()
    plenty = [SpotPool(SpotTrace("plenty", [0.0], [100]), 0.0)]
    empty = [SpotPool(SpotTrace("empty", [0.0], [0]), 0.0)]
    on_spot, _ = sim_hindsight.plan(windows, setup(requests, plenty), 0.99)
    on_demand, _ = sim_hindsight.plan(windows, setup(requests, empty), 0.99)
    assert on_spot["gpu_hours_ondemand"] == pytest.approx(0) and on_demand["gpu_hours_spot"] == 0
    assert on_spot["cost_usd"] == pytest.approx(on_demand["cost_usd"] * PRICES.spot_per_gpu_hour / PRICES.on_demand_per_gpu_hour)
    # Two spot instances for the first five minutes only: spot there, on-demand for the rest.
    brief = [SpotPool(SpotTrace("brief", [0.0, 300.0], [2, 0]), 0.0)]
    mixed, _ = sim_hindsight.plan(windows, setup(requests, brief), 0.99)
    assert mixed["gpu_hours_spot"] == pytest.approx(2 * 300 / 3600)


def test_a_window_runs_short_where_that_is_cheaper_than_elsewhere():
    # Two windows of 100 feasible requests each: a 2 % allowance (4 late) can be spent on either; a replica of the
    # longer window costs more, so that is the one that runs short.
    short = Window(0, 300, 100, 100, (WindowOption(1, 4, 96, 0, 0), WindowOption(2, 0, 100, 0, 0)))
    long = Window(300, 1500, 100, 100, (WindowOption(2, 4, 96, 0, 0), WindowOption(3, 0, 100, 0, 0)))
    row, _ = sim_hindsight.plan([short, long], setup([TraceRequest(0, 100, 10)]), 0.98)
    assert row["ttft_slo_attainment_feasible"] == pytest.approx(0.98)
    assert row["gpu_hours_ondemand"] == pytest.approx((2 * 300 + 2 * 1200) / 3600)


def test_simulate_reports_the_hindsight_row_beside_the_statics(tmp_path):
    out, table = tmp_path / "out.json", tmp_path / "out.md"
    assert cli.main([*simulate_inputs(tmp_path, 1500, [2, 2, 0, 2, 1, 2] * 10, seed=4), "--slo-ttft", "2",
                     "--repeats", "2", "--policy", "hindsight", "--json", str(out), "--markdown", str(table),
                     "--plot", str(tmp_path / "out.png")]) == 0
    report = json.loads(out.read_text())
    assert [s["policy"] for s in report["summary"]] == ["static_ondemand_min", "static_ondemand_peak", "hindsight",
                                                        "hindsight_fleetserve_split"]
    rows = [row for rows in report["repeats"] for row in rows if row["policy"] == "hindsight"]
    assert len(rows) == 2 and all(r["ttft_slo_attainment_feasible"] >= 0.99 and r["gpu_hours_spot"] > 0 for r in rows)
    assert all(r["cost_vs_static_ondemand_min"] < 1 for r in rows)
    # Within our policy's on-demand floor (1), one replica stays on-demand throughout and costs more.
    split = [row for rows in report["repeats"] for row in rows if row["policy"] == "hindsight_fleetserve_split"]
    assert all(s["gpu_hours_ondemand"] >= report["setup"]["duration_s"] / 3600 * 0.99 for s in split)
    assert all(s["cost_usd"] > r["cost_usd"] for s, r in zip(split, rows))
    assert "| hindsight |" in table.read_text() and (tmp_path / "out.png").stat().st_size > 0
