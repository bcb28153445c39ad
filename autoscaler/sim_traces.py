"""Loads the simulator's inputs: a request trace (arrivals and token lengths) and spot capacity traces.

Request trace: CSV with a header; Azure LLM trace schema `TIMESTAMP,ContextTokens,GeneratedTokens` (arrival
wall-clock time, prompt tokens, output tokens) or `arrival_s,prompt_tokens,output_tokens` (seconds from start).

Spot trace: how many spot replicas a pool (zone / instance pool) can hold over time, as a step function. Formats:
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
from pathlib import Path


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


def load_requests(path: str | Path) -> list[TraceRequest]:
    """Requests sorted by arrival, with arrival times shifted so the first one arrives at 0 s."""
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    header, body = rows[0], rows[1:]
    if len(header) != 3:
        raise ValueError(f"{path}: expected 3 columns (arrival, prompt tokens, output tokens), got {header}")
    parsed = [(_parse_time(r[0]), int(r[1]), int(r[2])) for r in body if r]
    if not parsed:
        raise ValueError(f"{path}: no requests")
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


def _from_events(name: str, rows: list[list[str]]) -> SpotTrace:
    times, counts, live = [], [], 0
    for time_ms, event, _node in sorted(rows, key=lambda r: float(r[0])):
        live += 1 if event.strip() == "add" else -1
        times.append(float(time_ms) / 1000)
        counts.append(live)
    return SpotTrace(name, times, counts)


def load_spot_trace(path: str | Path, x_unit_s: float = 1.0) -> SpotTrace:
    path = Path(path)
    if path.suffix == ".json":
        data = json.loads(path.read_text())
        gap = float(data["metadata"]["gap_seconds"])
        return SpotTrace(path.stem, [i * gap for i in range(len(data["data"]))], [int(c) for c in data["data"]])
    with open(path, newline="") as handle:
        rows = [r for r in csv.reader(handle) if r]
    if len(rows[0]) == 3:
        return _from_events(path.stem, rows)
    if len(rows[0]) != 2:
        raise ValueError(f"{path}: expected `time_ms,event,node` or `x,count` rows")
    # Stable sort on time only: a change is written as two rows at one x (old value, then new value).
    points = sorted(((float(x) * x_unit_s, int(float(c))) for x, c in rows), key=lambda point: point[0])
    return SpotTrace(path.stem, [t for t, _ in points], [c for _, c in points])


def busiest_offset(trace: SpotTrace, duration_s: float, step_s: float = 300.0) -> float:
    """Start of the `duration_s` window with the most instances lost: the adversarial default for replays."""
    candidates = [i * step_s for i in range(int(max(0.0, trace.duration_s - duration_s) // step_s) + 1)]
    return max(candidates, key=lambda start: (trace.drops_between(start, start + duration_s), -start))
