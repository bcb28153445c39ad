"""benchmarks/router_replay.py's trace reader: malformed Mooncake traces fail naming file:line."""

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "router_replay.py"
spec = importlib.util.spec_from_file_location("router_replay", SCRIPT)
router_replay = importlib.util.module_from_spec(spec)
spec.loader.exec_module(router_replay)

GOOD = {"timestamp": 0, "input_length": 600, "output_length": 5, "hash_ids": [0, 1]}


def write(tmp_path: Path, *lines: str) -> Path:
    path = tmp_path / "trace.jsonl"
    path.write_text("".join(line + "\n" for line in lines))
    return path


def test_reads_requests_in_arrival_order(tmp_path):
    later = {**GOOD, "timestamp": 1500}
    requests = router_replay.read_trace(write(tmp_path, json.dumps(later), json.dumps(GOOD)))
    assert [(r.arrival_s, r.hashes) for r in requests] == [(0.0, (0, 1)), (1.5, (0, 1))]


@pytest.mark.parametrize("bad, message", [
    ("{not json", "not JSON"),
    ("[1, 2]", "expected a JSON object, got list"),
    (json.dumps({k: v for k, v in GOOD.items() if k != "output_length"}), "missing field 'output_length'"),
    (json.dumps({**GOOD, "timestamp": -1}), "timestamp must be a non-negative integer, got -1"),
    (json.dumps({**GOOD, "input_length": "600"}), "input_length must be a non-negative integer"),
    (json.dumps({**GOOD, "hash_ids": [0, "1"]}), "hash_ids must be a list of integers"),
    (json.dumps({**GOOD, "hash_ids": [0]}), r"1 hash_ids for input_length 600 \(expected ceil"),
])
def test_malformed_lines_name_file_and_line(tmp_path, bad, message):
    path = write(tmp_path, json.dumps(GOOD), bad)
    with pytest.raises(ValueError, match=f"^{path}:2: {message}"):
        router_replay.read_trace(path)


def test_empty_trace_is_an_error(tmp_path):
    path = write(tmp_path)
    with pytest.raises(ValueError, match=f"^{path}: empty trace"):
        router_replay.read_trace(path)
