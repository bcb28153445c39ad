"""A request trace from ServeGen's per-client arrival statistics (Alibaba Bailian, shared/data/servegen-alibaba-bailian)
driving a mix of request lengths taken from recorded traces: diurnal, bursty traffic for the simulator.

ServeGen publishes, per anonymous client and 10-minute window, the mean request rate, the inter-arrival pattern
(Gamma or Weibull) and its (shape, scale); not single requests. As upstream's generator does, each client's
inter-arrival times in a window are drawn from its distribution and rescaled to the window's rate. Absolute rates are
the publisher's (possibly scaled), so the whole span is scaled to a chosen mean rate; the shape over time (the
diurnal ramp, each client's burstiness) is ServeGen's. ServeGen's per-client length distributions are mostly absent
from the snapshot, so request lengths come from recorded traces instead: each client sends requests drawn from one of
the given length traces (clients assigned in turn by id), so a client keeps its kind of request and the mix follows
which clients are active.

  python -m fleetserve.autoscaler.sim_servegen \\
      --clients ../shared/data/servegen-alibaba-bailian/m-small_client_windows.csv.gz --start-h 29 --hours 4 \\
      --mean-rate 4 --lengths ../shared/data/azure-llm-2023/conv.csv --out /tmp/servegen.csv
"""

import argparse
import csv
import gzip
import math
import sys

import numpy as np

from fleetserve.autoscaler.sim_traces import InputError, load_requests

WINDOW_S = 600.0  # ServeGen's window


def _client_windows(path: str, start_s: float, end_s: float) -> list[tuple[int, float, float, str, float, float]]:
    """(client, window start, rate, pattern, shape, scale) of every active client-window in [start_s, end_s)."""
    try:
        handle = gzip.open(path, "rt", newline="") if path.endswith(".gz") else open(path, newline="")
    except OSError as error:
        raise InputError(f"{path}: cannot read the ServeGen client windows ({error.strerror})") from None
    rows = []
    with handle:
        for number, row in enumerate(csv.DictReader(handle), start=2):
            try:
                start, rate = float(row["window_start_s"]), float(row["rate_rps"])
                if not start_s <= start < end_s or rate <= 0:
                    continue
                shape, scale = float(row["pattern_param1"]), float(row["pattern_param2"])
                pattern = row["arrival_pattern"]
            except (KeyError, ValueError, TypeError):
                raise InputError(f"{path}:{number}: expected ServeGen client-window columns client_id,"
                                 "window_start_s,rate_rps,cv,arrival_pattern,pattern_param1,pattern_param2") from None
            if pattern not in ("Gamma", "Weibull") or not all(math.isfinite(v) and v > 0 for v in (rate, shape, scale)):
                raise InputError(f"{path}:{number}: pattern {pattern!r} ({shape}, {scale}) at rate {rate} "
                                 "is not usable")
            rows.append((int(row["client_id"]), start, rate, pattern, shape, scale))
    if not rows:
        raise InputError(f"{path}: no active client window between {start_s:g} s and {end_s:g} s")
    return rows


def _gaps(rng: np.random.Generator, pattern: str, shape: float, scale: float, count: int) -> np.ndarray:
    return rng.gamma(shape, scale, count) if pattern == "Gamma" else scale * rng.weibull(shape, count)


def generate(client_windows: str, start_s: float, end_s: float, mean_rate: float, length_traces: list[str],
             seed: int = 0) -> list[tuple[float, int, int]]:
    """(arrival s from the span's start, prompt tokens, output tokens), sorted by arrival."""
    windows = _client_windows(client_windows, start_s, end_s)
    pools = [np.array([(r.prompt_tokens, r.output_tokens) for r in load_requests(path)]) for path in length_traces]
    windows_in_span = math.ceil((end_s - start_s) / WINDOW_S)
    scale_rate = mean_rate / (sum(rate for _, _, rate, *_ in windows) / windows_in_span)
    rng = np.random.default_rng(seed)
    clients = sorted({client for client, *_ in windows})
    pool_of = {client: pools[i % len(pools)] for i, client in enumerate(clients)}
    out = []
    for client, window, rate, pattern, shape, scale in windows:
        rate *= scale_rate
        expected = rate * WINDOW_S
        # Enough gaps to cover the window even when the draw runs short, rescaled to the window's rate.
        gaps = _gaps(rng, pattern, shape, scale, max(4, int(2 * expected) + 8))
        gaps *= (1 / rate) / gaps.mean()
        times = rng.uniform(0, gaps[0]) + np.concatenate(([0.0], np.cumsum(gaps[1:])))
        times = times[times < min(WINDOW_S, end_s - window)] + window - start_s
        pool = pool_of[client]
        for t, (prompt, output) in zip(times, pool[rng.integers(0, len(pool), len(times))]):
            out.append((float(t), int(prompt), int(output)))
    out.sort()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", required=True, help="ServeGen *_client_windows.csv(.gz)")
    parser.add_argument("--start-h", type=float, required=True, help="span start, hours from 00:00 of day 1")
    parser.add_argument("--hours", type=float, required=True, help="span length in hours")
    parser.add_argument("--mean-rate", type=float, required=True, help="requests/s the span is scaled to on average")
    parser.add_argument("--lengths", action="append", required=True, help="trace whose (prompt, output) lengths a "
                        "client's requests are drawn from (repeatable: clients take them in turn)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, help="output CSV (arrival_s,prompt_tokens,output_tokens)")
    args = parser.parse_args(argv)
    try:
        if not (args.hours > 0 and args.mean_rate > 0 and math.isfinite(args.start_h) and args.start_h >= 0):
            raise InputError("--start-h must be >= 0, --hours and --mean-rate > 0")
        start = args.start_h * 3600
        requests = generate(args.clients, start, start + args.hours * 3600, args.mean_rate, args.lengths, args.seed)
    except InputError as error:
        print(f"sim_servegen: error: {error}", file=sys.stderr)
        return 2
    with open(args.out, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["arrival_s", "prompt_tokens", "output_tokens"])
        writer.writerows((f"{t:.3f}", p, o) for t, p, o in requests)
    print(f"{len(requests)} requests over {args.hours:g} h written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
