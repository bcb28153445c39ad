"""Bad simulator input ends in one clear line naming the file:line, field or flag: never a traceback or a hang."""

import argparse
import json
from pathlib import Path

import pytest
import yaml

from fleetserve import cli
from fleetserve.autoscaler import simulate_cli
from fleetserve.autoscaler.sim_profile import load_profile

CRD = Path(__file__).parents[2] / "crds" / "llmdeployments.fleetserve.io.yaml"

PROFILE = {"name": "p", "source": "test", "device": "cpu", "max_batch": 8, "kv_cache_tokens": 4000, "prefill_tokens_per_s": 5000,
           "decode_step_s": {"batch": [1, 8], "seconds": [0.02, 0.03]}, "cold_start_s": 10}


@pytest.fixture
def inputs(tmp_path):
    trace = tmp_path / "trace.csv"
    trace.write_text("arrival_s,prompt_tokens,output_tokens\n" + "".join(f"{i * 0.5},200,20\n" for i in range(120)))
    spot = tmp_path / "spot.csv"
    spot.write_text("0,2\n30,2\n30,1\n")
    profile = tmp_path / "profile.json"
    profile.write_text(json.dumps(PROFILE))
    prices = tmp_path / "prices.csv"
    prices.write_text("instance_type,ondemand_usd_per_gpu_hr,spot_usd_per_gpu_hr\ngpu.x,2.0,0.6\n")
    return tmp_path, ["--trace", str(trace), "--spot-trace", str(spot), "--profile", str(profile), "--prices",
                      str(prices), "--instance-type", "gpu.x", "--slo-ttft", "2", "--json", str(tmp_path / "o.json"),
                      "--warmup-s", "0", "--policy", "fleetserve"]


def simulate(args: list[str], capsys) -> tuple[int, str]:
    try:
        code = cli.main(["simulate", *args])
    except SystemExit as exit_:  # argparse's own flag errors
        code = exit_.code
    return code, capsys.readouterr().err


def replace_flag(args: list[str], flag: str, value: str) -> list[str]:
    args = list(args)
    args[args.index(flag) + 1] = value
    return args


@pytest.mark.parametrize("flag,value,message", [
    ("--step-s", "0", "argument --step-s: 0 is outside (0, 60)"),
    ("--step-s", "nan", "argument --step-s: nan is outside"),
    ("--slo-ttft", "-1", "argument --slo-ttft: -1 is outside (0, inf)"),
    ("--slo-percentile", "100", "argument --slo-percentile: 100 is outside (0, 100)"),
    ("--slo-percentile", "0", "argument --slo-percentile: 0 is outside"),
    ("--spot-max-share", "1.5", "argument --spot-max-share: 1.5 is outside [0, 1]"),
    ("--rate-scale", "0", "argument --rate-scale: 0 is outside [1, inf)"),
    ("--spot-offset", "soon", "argument --spot-offset: 'soon' is not a number"),
    ("--max-replicas", "-2", "argument --max-replicas: -2 is outside [0, inf)"),
])
def test_out_of_range_flags_name_the_flag(inputs, capsys, flag, value, message):
    _, args = inputs
    code, err = simulate([*args, flag, value], capsys)
    assert code == 2 and message in err and "Traceback" not in err


@pytest.mark.parametrize("content,message", [
    ("", "trace.csv: empty file"),
    ("arrival_s,prompt_tokens,output_tokens\n", "trace.csv: no requests"),
    ("arrival_s,prompt_tokens\n1,2\n", "trace.csv:1: expected 3 columns"),
    ("arrival_s,prompt_tokens,output_tokens\n0,10,10\n1,ten,10\n", "trace.csv:3: prompt tokens 'ten' is not a number"),
    ("arrival_s,prompt_tokens,output_tokens\n0,10,10\ninf,10,10\n", "trace.csv:3: arrival is inf, not a finite number"),
    ("arrival_s,prompt_tokens,output_tokens\n0,nan,10\n", "trace.csv:2: prompt tokens 'nan' is not a whole number"),
    ("arrival_s,prompt_tokens,output_tokens\n0,10,-3\n", "trace.csv:2: output tokens '-3' is not a whole number"),
    ("arrival_s,prompt_tokens,output_tokens\n0,10\n", "trace.csv:2: expected 3 fields"),
    ("arrival_s,prompt_tokens,output_tokens\nyesterday,10,10\n", "trace.csv:2: arrival 'yesterday' is neither"),
])
def test_malformed_traces_name_the_file_and_line(inputs, capsys, content, message):
    tmp_path, args = inputs
    (tmp_path / "trace.csv").write_text(content)
    code, err = simulate(args, capsys)
    assert code == 2 and message in err and "Traceback" not in err


@pytest.mark.parametrize("content,message", [
    ('{"timestamp": 0, "input_length": 5, "output_length": 1}\n{"timestamp": 1\n', "trace.jsonl:2: not JSON"),
    ('{"timestamp": 0, "input_length": 5}\n', "trace.jsonl:1: expected an object with timestamp"),
    ('{"timestamp": "later", "input_length": 5, "output_length": 1}\n', "trace.jsonl:1: timestamp 'later' is not"),
    ("\n", "trace.jsonl: no requests"),
])
def test_malformed_mooncake_traces_name_the_line(inputs, capsys, content, message):
    tmp_path, args = inputs
    (tmp_path / "trace.jsonl").write_text(content)
    code, err = simulate(replace_flag(args, "--trace", str(tmp_path / "trace.jsonl")), capsys)
    assert code == 2 and message in err


@pytest.mark.parametrize("name,content,message", [
    ("spot.json", "{not json", "spot.json:1: not JSON"),
    ("spot.json", '{"data": [1, 2]}', "spot.json: expected SkyPilot spot-trace JSON"),
    ("spot.json", '{"metadata": {"gap_seconds": 0}, "data": [1]}', "spot.json: metadata.gap_seconds 0 is not"),
    ("spot.json", '{"metadata": {"gap_seconds": 60}, "data": []}', "spot.json: data is empty"),
    ("spot.json", '{"metadata": {"gap_seconds": 60}, "data": [1, NaN]}', "spot.json: data[1]: instance count nan"),
    ("spot.csv", "", "spot.csv: empty spot trace"),
    ("spot.csv", "0,2\n10,two\n", "spot.csv:2: instance count 'two' is not a number"),
    ("spot.csv", "0,2\ninf,1\n", "spot.csv:2: x is inf"),
    ("spot.csv", "0,2\n1,2,3,4\n", "spot.csv:2: expected `time_ms,event,node` or `x,count` rows"),
    ("spot.csv", "0,add,n1\n10,vanish,n1\n", "spot.csv:2: event 'vanish' is neither add nor remove"),
    ("missing.csv", None, "missing.csv: no such spot trace file"),
])
def test_malformed_spot_traces_name_the_file(inputs, capsys, name, content, message):
    tmp_path, args = inputs
    if content is not None:
        (tmp_path / name).write_text(content)
    code, err = simulate(replace_flag(args, "--spot-trace", str(tmp_path / name)), capsys)
    assert code == 2 and message in err and "Traceback" not in err


@pytest.mark.parametrize("change,message", [
    ({"prefill_tokens_per_s": 0}, "profile field 'prefill_tokens_per_s' is 0"),
    ({"decode_step_s": {"batch": [1], "seconds": [float("inf")]}}, "'decode_step_s' needs distinct batch sizes"),
    ({"max_batch": None}, "profile is missing field 'max_batch'"),
    ({"cold_start": {"cached_s": [5, 1], "uncached_s": [1, 2], "cached_share": 0.5}}, "'cold_start.cached_s' is [5, 1]"),
    ({"device": None}, "profile field 'device' is None"),
    ({"device": "cuda"}, "profile is missing field 'gpu_memory_gib'"),
])
def test_bad_profiles_name_the_field(inputs, capsys, change, message):
    tmp_path, args = inputs
    profile = {**PROFILE, **change}
    (tmp_path / "profile.json").write_text(json.dumps({k: v for k, v in profile.items() if v is not None}))
    code, err = simulate(args, capsys)
    assert code == 2 and message in err


def test_a_zero_capacity_zone_is_valid_input(inputs, capsys):
    tmp_path, args = inputs
    (tmp_path / "zero.json").write_text('{"metadata": {"gap_seconds": 60}, "data": [0, 0, 0, 0]}')
    code, err = simulate([*args, "--spot-trace", str(tmp_path / "zero.json")], capsys)
    assert code == 0, err


def test_a_prompt_larger_than_the_kv_cache_is_rejected_not_queued_forever(inputs, capsys):
    tmp_path, args = inputs
    (tmp_path / "trace.csv").write_text("arrival_s,prompt_tokens,output_tokens\n0,100,10\n1,9000,10\n2,100,10\n")
    code, err = simulate(args, capsys)
    assert code == 0, err
    rows = json.loads((tmp_path / "o.json").read_text())["results"]
    assert all(r["rejected_requests"] == 1 and r["unfinished_requests"] == 0 for r in rows)


@pytest.mark.parametrize("fields,budget", [
    ({"device": "cuda", "gpu_memory_gib": 79.18}, 8192),  # H100: the engine's large-card budget
    ({"device": "cuda", "gpu_memory_gib": 22.0}, 2048),  # L4
    ({"device": "cpu"}, 2048),
    ({"device": "cuda", "gpu_memory_gib": 79.18, "max_num_batched_tokens": 1024}, 1024),  # given: kept
])
def test_the_token_budget_follows_the_engine_default(tmp_path, fields, budget):
    profile = {k: v for k, v in PROFILE.items() if k != "device"}
    (tmp_path / "profile.json").write_text(json.dumps({**profile, **fields}))
    assert load_profile(tmp_path / "profile.json").max_num_batched_tokens == budget


def test_our_policy_settings_default_to_an_llmdeployments(inputs):
    """`fleetserve simulate` runs what a deployment left at its defaults runs: the defaults the CRD publishes."""
    crd = yaml.safe_load(CRD.read_text())
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    capacity = spec["capacity"]["properties"]
    parser = argparse.ArgumentParser()
    simulate_cli.add_arguments(parser)
    args = parser.parse_args(inputs[1])
    assert args.spot_max_share == capacity["spot"]["properties"]["maxShare"]["default"]
    assert args.on_demand_min == capacity["onDemand"]["properties"]["minReplicas"]["default"]
    assert args.scale_down_delay == spec["autoscaling"]["properties"]["scaleDownDelaySeconds"]["default"]
