"""Loads the simulator's inputs: a request trace (arrivals and token lengths) and spot capacity traces.

Every loader checks what it reads and raises `InputError` naming the file and line (or field) at fault: a bad
input ends the run with one line, never a traceback or a hang.

Request trace, one of:
- CSV with a header: Azure LLM trace schema `TIMESTAMP,ContextTokens,GeneratedTokens` (arrival wall-clock time,
  prompt tokens, output tokens) or `arrival_s,prompt_tokens,output_tokens` (seconds from start);
- JSON lines (`.jsonl`) in the Mooncake schema: `timestamp` (ms), `input_length`, `output_length`.

Spot trace: how many spot instances a pool (one zone / instance pool) holds over time, as a step function, in
absolute instances (a zone that never has capacity is a valid input). Formats:
- `time_ms,event,node` rows with event add/remove (Bamboo's cluster-membership traces): count of live nodes;
- `x,count` rows (Bamboo's aws-spot-instances-*.csv; x in seconds, except the multi-day p2 file whose x is in
  hours: pass x_unit_s=3600 for it);
- SkyPilot spot-traces JSON `{"metadata": {"gap_seconds": G}, "data": [...]}`.
"""

import bisect
import csv
import dataclasses
import datetime
import json
import math
from pathlib import Path


class InputError(ValueError):
    """An input file or flag the simulator cannot use; the message names the file:line, field or flag."""


@dataclasses.dataclass(frozen=True)
class TraceRequest:
    arrival_s: float
    prompt_tokens: int
    output_tokens: int


def _parse_time(value: str) -> float:
    try:
        return float(value)
    except ValueError:
        # Azure timestamps carry 7 fractional digits; Python parses at most 6.
        head, _, fraction = value.partition(".")
        stamp = datetime.datetime.strptime(head, "%Y-%m-%d %H:%M:%S")
        return stamp.timestamp() + (float(f"0.{fraction}") if fraction else 0.0)


def _finite(value: float, where: str, field: str) -> float:
    if not math.isfinite(value):
        raise InputError(f"{where}: {field} is {value}, not a finite number")
    return value


def _whole(value, where: str, field: str) -> int:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{where}: {field} {value!r} is not a number") from None
    if not math.isfinite(number) or number < 0 or not number.is_integer():
        raise InputError(f"{where}: {field} {value!r} is not a whole number >= 0")
    return int(number)


def _csv_requests(path: Path) -> list[tuple[float, int, int]]:
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    if not rows:
        raise InputError(f"{path}: empty file, expected a header and one request per row")
    if len(rows[0]) != 3:
        raise InputError(f"{path}:1: expected 3 columns (arrival, prompt tokens, output tokens), got {rows[0]}")
    parsed = []
    for number, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        where = f"{path}:{number}"
        if len(row) != 3:
            raise InputError(f"{where}: expected 3 fields, got {len(row)}")
        try:
            arrival = _parse_time(row[0])
        except ValueError:
            raise InputError(f"{where}: arrival {row[0]!r} is neither seconds nor a timestamp") from None
        parsed.append((_finite(arrival, where, "arrival"), _whole(row[1], where, "prompt tokens"),
                       _whole(row[2], where, "output tokens")))
    return parsed


def _jsonl_requests(path: Path) -> list[tuple[float, int, int]]:
    parsed = []
    with open(path) as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                row = json.loads(line)
                stamp, prompt, output = row["timestamp"], row["input_length"], row["output_length"]
            except json.JSONDecodeError as error:
                raise InputError(f"{where}: not JSON ({error.msg})") from None
            except (KeyError, TypeError) as missing:
                raise InputError(f"{where}: expected an object with timestamp, input_length, output_length; "
                                 f"missing {missing}") from None
            try:
                arrival = float(stamp) / 1000
            except (TypeError, ValueError):
                raise InputError(f"{where}: timestamp {stamp!r} is not a number of milliseconds") from None
            parsed.append((_finite(arrival, where, "timestamp"), _whole(prompt, where, "input_length"),
                           _whole(output, where, "output_length")))
    return parsed


def load_requests(path: str | Path) -> list[TraceRequest]:
    """Requests sorted by arrival, with arrival times shifted so the first one arrives at 0 s."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such trace file")
    parsed = _jsonl_requests(path) if path.suffix == ".jsonl" else _csv_requests(path)
    if not parsed:
        raise InputError(f"{path}: no requests")
    parsed.sort()
    start = parsed[0][0]
    return [TraceRequest(t - start, max(1, p), max(1, o)) for t, p, o in parsed]


def superpose(requests: list[TraceRequest], copies: int) -> list[TraceRequest]:
    """`copies` copies of the trace, copy i shifted circularly by i/copies of its span: the same span and burst
    shapes at `copies` times the rate, for fleets larger than the trace was recorded on."""
    if copies <= 1:
        return requests
    span = requests[-1].arrival_s + 1e-6
    shifted = [
        dataclasses.replace(r, arrival_s=(r.arrival_s + i * span / copies) % span)
        for i in range(copies) for r in requests
    ]
    return sorted(shifted, key=lambda r: r.arrival_s)


@dataclasses.dataclass(frozen=True)
class SpotTrace:
    """Step function: `counts[i]` spot instances obtainable from `times_s[i]` on."""

    name: str
    times_s: list[float]
    counts: list[int]

    @property
    def max_count(self) -> int:
        return max(self.counts)

    @property
    def duration_s(self) -> float:
        return self.times_s[-1]

    def count_at(self, t: float) -> int:
        return self.counts[max(0, bisect.bisect_right(self.times_s, t) - 1)]

    def drops_between(self, start: float, end: float) -> int:
        """Instances lost (sum of decreases) at times in [start, end)."""
        first = bisect.bisect_left(self.times_s, start)
        previous = self.counts[max(0, first - 1)]
        lost = 0
        for t, count in zip(self.times_s[first:], self.counts[first:]):
            if t >= end:
                break
            lost += max(0, previous - count)
            previous = count
        return lost


def _from_events(path: Path, rows: list[tuple[int, list[str]]]) -> SpotTrace:
    events = []
    for number, (time_ms, event, _node) in rows:
        where = f"{path}:{number}"
        try:
            stamp = float(time_ms)
        except ValueError:
            raise InputError(f"{where}: time_ms {time_ms!r} is not a number") from None
        _finite(stamp, where, "time_ms")
        if event.strip() not in ("add", "remove"):
            raise InputError(f"{where}: event {event!r} is neither add nor remove")
        events.append((stamp, event.strip()))
    times, counts, live = [], [], 0
    for stamp, event in sorted(events, key=lambda e: e[0]):
        live = max(0, live + (1 if event == "add" else -1))
        times.append(stamp / 1000)
        counts.append(live)
    return SpotTrace(path.stem, times, counts)


def _from_skypilot_json(path: Path) -> SpotTrace:
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise InputError(f"{path}:{error.lineno}: not JSON ({error.msg})") from None
    try:
        gap, values = data["metadata"]["gap_seconds"], data["data"]
    except (KeyError, TypeError):
        raise InputError(f"{path}: expected SkyPilot spot-trace JSON "
                         '{"metadata": {"gap_seconds": G}, "data": [counts]}') from None
    if not isinstance(gap, (int, float)) or not math.isfinite(gap) or gap <= 0:
        raise InputError(f"{path}: metadata.gap_seconds {gap!r} is not a positive number")
    if not isinstance(values, list) or not values:
        raise InputError(f"{path}: data is empty, expected one instance count per {gap} s")
    counts = [_whole(c, f"{path}: data[{i}]", "instance count") for i, c in enumerate(values)]
    return SpotTrace(path.stem, [i * float(gap) for i in range(len(counts))], counts)


def load_spot_trace(path: str | Path, x_unit_s: float = 1.0) -> SpotTrace:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such spot trace file")
    if path.suffix == ".json":
        return _from_skypilot_json(path)
    with open(path, newline="") as handle:
        rows = [(n, r) for n, r in enumerate(csv.reader(handle), start=1) if r]
    if not rows:
        raise InputError(f"{path}: empty spot trace, expected `time_ms,event,node` or `x,count` rows")
    width = len(rows[0][1])
    for number, row in rows:
        if len(row) != width or width not in (2, 3):
            raise InputError(f"{path}:{number}: expected `time_ms,event,node` or `x,count` rows, got {row}")
    if width == 3:
        return _from_events(path, rows)
    points = []
    for number, (x, count) in rows:
        where = f"{path}:{number}"
        try:
            stamp = float(x) * x_unit_s
        except ValueError:
            raise InputError(f"{where}: x {x!r} is not a number") from None
        _finite(stamp, where, "x")
        points.append((stamp, _whole(count, where, "instance count")))
    # Stable sort on time only: a change is written as two rows at one x (old value, then new value).
    points.sort(key=lambda point: point[0])
    return SpotTrace(path.stem, [t for t, _ in points], [c for _, c in points])


def busiest_offset(trace: SpotTrace, duration_s: float, step_s: float = 300.0) -> float:
    """Start of the `duration_s` window with the most instances lost: the adversarial default for replays."""
    candidates = [i * step_s for i in range(int(max(0.0, trace.duration_s - duration_s) // step_s) + 1)]
    return max(candidates, key=lambda start: (trace.drops_between(start, start + duration_s), -start))
