"""Time to first token through `fleetserve router` in front of real engines on this machine (issue #15, item 2):
the prefix, least-loaded and round-robin policies in one run, on the same requests at the same arrival times, each
in front of freshly started engines (no policy inherits another's warm prefix caches).

The cores are shared with other people's work, whose load comes and goes over minutes, and a p99 of one replay
of 240 requests is its third-worst request: one burst decides it. So the replay is repeated --rounds times, the
policies taking turns within each round and the order rotating between rounds (no policy always runs first, or
always last), and the percentiles are reported pooled over the rounds and per round, so the spread between rounds
of one policy shows how large a difference between policies must be to mean anything.

Workload: the Mooncake conversation trace in arrival order, one conversation in --every kept whole. Every request
starts with the same block (a system prompt) and its second block names its conversation: later turns repeat the
earlier turns' blocks. A contiguous window of the whole trace holds almost no later turns (their gaps are minutes;
the first 120 requests reuse nothing past the first block), so it would compare the policies on load alone;
sampling conversations keeps each one's turns and their order while the window spans more of the trace.

Each 512-token block id becomes a block of BLOCK_TOKENS words drawn by an RNG seeded with the id, every word one
token of the engines' tokenizer (so a trace block is exactly BLOCK_TOKENS / 16 of the engine's cache blocks, and
equal ids are equal cache blocks). A prompt keeps its first --max-blocks ids, so this CPU prefills it in well
under a second. Arrivals keep the trace's gaps, scaled so the window arrives at --rate requests/s. Completions
stream with --max-tokens tokens (ignore_eos), so TTFT is queueing plus prefill.

Reported per policy (pooled, and per round): client TTFT percentiles, ok/failed requests, the engines' own prefix-cache hit ratio
(vllm:prefix_cache_hits / queries, in tokens, summed over replicas, from before to after the replay), the
router's estimated one (fleetserve_router_prefix_cached_blocks / prefix_blocks) and requests per replica. The
JSON keeps every request's TTFT and replica per run.

    .venv/bin/python benchmarks/router_ttft.py  # writes benchmarks/results/router-ttft.{json,md,png}
"""

import argparse
import asyncio
import contextlib
import datetime
import json
import os
import platform
import random
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from tqdm import tqdm  # noqa: E402

from fleetserve.engine.bench import free_port, percentile, wait_healthy  # noqa: E402
from fleetserve.router.policy import POLICIES, PrefixIndex  # noqa: E402
from online_bench import stop_server  # noqa: E402
from router_replay import TRACE_DIR, TraceRequest, cpu_model, read_trace, write_results  # noqa: E402

MODEL = "smollm2-135m-instruct"  # the default model's served name
BLOCK_TOKENS = 32  # tokens per trace block: two of the engine's 16-token cache blocks
ENGINE_ARGS = ("--device", "cpu", "--max-model-len", "1024")
# Three engines share two cores: one thread each, so their OpenMP workers don't spin against each other.
ENGINE_ENV = {"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
# Saturation, measured with this script at an offered 10 req/s (least-loaded, 3 replicas, the first 120 and 90
# requests of the trace, --every 1): 2.31 req/s completed at load average ~4 from other work, 1.81 at ~6; call it
# 2. The default workload reuses more (cheaper prefills), so its default rate offers at most 70% of saturation:
# busy enough that queueing shows in TTFT, not so busy that every policy only measures an ever-growing queue.
SATURATION_RPS = 2.0
DEFAULT_RATE = 1.4
COUNTERS = ("vllm:prefix_cache_queries_total", "vllm:prefix_cache_hits_total", "fleetserve_router_prefix_blocks_total",
            "fleetserve_router_prefix_cached_blocks_total")


def block_words(tokenizer_json: str) -> list[str]:
    """Lowercase words that the tokenizer keeps as one token after a space ("Ġword"), sorted: a block of n of
    them, each after a space, is n tokens whatever comes before it."""
    from tokenizers import Tokenizer
    vocab = Tokenizer.from_str(tokenizer_json).get_vocab()
    return sorted(t[1:] for t in vocab if t.startswith("Ġ") and t[1:].isalpha() and t[1:].islower() and len(t) > 3)


def prompt_text(hashes: tuple[int, ...], words: list[str], seed: int) -> str:
    return "".join(" " + " ".join(random.Random(f"{seed}:{h}").choices(words, k=BLOCK_TOKENS)) for h in hashes)


def arrivals(requests: list[TraceRequest], rate: float) -> list[float]:
    """The trace's arrival offsets, stretched or squeezed so the window arrives at `rate` requests/s on average."""
    first, span = requests[0].arrival_s, requests[-1].arrival_s - requests[0].arrival_s
    scale = (len(requests) - 1) / rate / span if span else 0.0
    return [(r.arrival_s - first) * scale for r in requests]


def window_reuse(window: list[TraceRequest]) -> dict:
    """What one cache would reuse of the window (the ceiling), and how many requests reuse more than their first
    block: that one is the system prompt nearly every request shares, which every replica soon holds."""
    seen, cached, deeper = PrefixIndex(), 0, 0
    for request in window:
        hit = seen.cached_prefix("one", request.hashes)
        seen.record("one", request.hashes)
        cached += hit
        deeper += hit > 1
    return {"ceiling_hit_ratio": cached / sum(len(r.hashes) for r in window), "requests_reusing_past_block_0": deeper}


def counters(text: str) -> dict[str, float]:
    """COUNTERS out of a Prometheus text exposition, summed over label sets."""
    found = dict.fromkeys(COUNTERS, 0.0)
    for line in text.splitlines():
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in found:
            found[name] += float(line.rsplit(" ", 1)[1])
    return found


async def scrape(session: aiohttp.ClientSession, urls: list[str]) -> dict[str, float]:
    total = dict.fromkeys(COUNTERS, 0.0)
    for url in urls:
        async with session.get(f"{url}/metrics") as answer:
            for name, value in counters(await answer.text()).items():
                total[name] += value
    return total


async def one(session: aiohttp.ClientSession, router: str, prompt: str, max_tokens: int, delay: float) -> dict:
    await asyncio.sleep(delay)
    body = {"model": MODEL, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "ignore_eos": True,
            "stream": True}
    sent = time.perf_counter()
    first = replica = error = None
    try:
        async with session.post(f"{router}/v1/completions", json=body) as answer:
            replica = answer.headers.get("X-FleetServe-Replica")
            if answer.status != 200:
                return {"error": f"HTTP {answer.status}: {(await answer.text())[:200]}", "replica": replica}
            async for line in answer.content:
                if not line.startswith(b"data: ") or line.strip() == b"data: [DONE]":
                    continue
                chunk = json.loads(line[len(b"data: "):])
                if "error" in chunk:
                    error = chunk["error"].get("message", "error event")
                elif first is None and any(c.get("text") for c in chunk.get("choices", [])):
                    first = time.perf_counter()
    except (aiohttp.ClientError, TimeoutError) as e:
        error = repr(e)
    if error or first is None:
        return {"error": error or "no content token", "replica": replica}
    return {"ttft_s": first - sent, "replica": replica, "done_s": time.perf_counter()}


def rotated(policies: list[str], round_index: int) -> list[str]:
    """The order the policies run in this round: each round starts one policy later."""
    shift = round_index % len(policies)
    return policies[shift:] + policies[:shift]


def start(command: list[str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(command, stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, **ENGINE_ENV})


@contextlib.asynccontextmanager
async def fleet(policy: str, replicas: int, logs: Path):
    """Fresh engines and a router with this policy, each engine and the router warmed by one request; yields
    (engine URLs, router URL, client session) and stops them all after."""
    fleetserve = [sys.executable, "-m", "fleetserve"]
    logs.mkdir(parents=True, exist_ok=True)
    engines = {f"http://127.0.0.1:{port}": start([*fleetserve, "serve", "--host", "127.0.0.1", "--port", str(port),
                                                  *ENGINE_ARGS], logs / f"{policy}-engine-{i}.log")
               for i, port in enumerate(free_port() for _ in range(replicas))}
    port = free_port()
    router = f"http://127.0.0.1:{port}"
    processes = list(engines.values())
    try:
        for url, process in engines.items():
            await wait_healthy(url, process)
        processes.append(start([*fleetserve, "router", "--port", str(port), "--policy", policy,
                                *[a for url in engines for a in ("--backend", url)]], logs / f"{policy}-router.log"))
        await wait_healthy(router, processes[-1])
        timeout = aiohttp.ClientTimeout(total=300)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), timeout=timeout) as session:
            # An engine's first request pays torch's lazy start, and the router's first learns the tokenizer:
            # neither belongs in the measured TTFTs. A prompt under one cache block leaves nothing cached.
            for url in [*engines, router]:
                warm = await one(session, url, "Hello there", 2, 0)
                if "error" in warm:
                    raise RuntimeError(f"warm-up request to {url} failed: {warm['error']} (logs in {logs})")
            yield list(engines), router, session
    finally:
        for process in reversed(processes):  # the router first, so it doesn't log the engines going away
            stop_server(process)


async def replay(policy: str, round_index: int, engines: list[str], router: str, session: aiohttp.ClientSession,
                 prompts: list[str], delays: list[float], max_tokens: int) -> dict:
    before = await scrape(session, [*engines, router])
    load_before = os.getloadavg()
    with tqdm(total=len(prompts), desc=f"round {round_index + 1} {policy}", unit="req") as progress:
        async def tracked(prompt: str, delay: float) -> dict:
            result = await one(session, router, prompt, max_tokens, delay)
            progress.update()
            return result
        started = time.perf_counter()
        results = await asyncio.gather(*(tracked(p, d) for p, d in zip(prompts, delays)))
    after = await scrape(session, [*engines, router])
    delta = {name: after[name] - before[name] for name in COUNTERS}
    ok = [r for r in results if "error" not in r]
    ttfts = [r["ttft_s"] for r in ok]
    per_replica = [sum(r["replica"] == url for r in results) for url in engines]
    return {
        "policy": policy, "round": round_index, "ok": len(ok), "failed": len(results) - len(ok),
        "errors": sorted({r["error"] for r in results if "error" in r})[:5],
        **ttft_summary(ttfts),
        "completed_per_s": len(ok) / (max(r["done_s"] for r in ok) - started) if ok else 0.0,
        "engine_hit_ratio": delta["vllm:prefix_cache_hits_total"] / max(1.0, delta["vllm:prefix_cache_queries_total"]),
        "router_estimated_hit_ratio": (delta["fleetserve_router_prefix_cached_blocks_total"]
                                       / max(1.0, delta["fleetserve_router_prefix_blocks_total"])),
        "counters_before": before, "counters_after": after,
        "requests_per_replica": per_replica, "imbalance": max(per_replica) / (sum(per_replica) / len(engines)),
        "load_average_before": load_before, "load_average_after": os.getloadavg(),
        # Per request, in arrival order: its TTFT (None if it failed) and the replica (index into the engines).
        "request_ttft_s": [r.get("ttft_s") for r in results],
        "request_replica": [engines.index(r["replica"]) if r.get("replica") in engines else None for r in results],
    }


def ttft_summary(ttfts: list[float]) -> dict:
    return {"ttft_p50_s": percentile(ttfts, 50), "ttft_p95_s": percentile(ttfts, 95),
            "ttft_p99_s": percentile(ttfts, 99), "ttft_mean_s": sum(ttfts) / len(ttfts) if ttfts else float("nan")}


def pooled(runs: list[dict], policy: str) -> dict:
    """One policy's runs over all rounds: TTFT percentiles of all their requests together, each round's p99, and
    the engines' hit ratio over all of them."""
    mine = [run for run in runs if run["policy"] == policy]
    ttfts = [t for run in mine for t in run["request_ttft_s"] if t is not None]
    delta = {name: sum(run["counters_after"][name] - run["counters_before"][name] for run in mine) for name in COUNTERS}
    return {"policy": policy, "rounds": len(mine), "ok": sum(run["ok"] for run in mine),
            "failed": sum(run["failed"] for run in mine), **ttft_summary(ttfts),
            "round_p99_s": [run["ttft_p99_s"] for run in sorted(mine, key=lambda run: run["round"])],
            "engine_hit_ratio": delta["vllm:prefix_cache_hits_total"] / max(1.0, delta["vllm:prefix_cache_queries_total"]),
            "requests_per_replica": [sum(c) for c in zip(*(run["requests_per_replica"] for run in mine))]}


async def run_all(args: argparse.Namespace, window: list[TraceRequest], delays: list[float], logs: Path) -> list[dict]:
    prompts, runs = None, []
    for round_index in range(args.rounds):
        for policy in rotated(args.policies, round_index):
            async with fleet(policy, args.replicas, logs / f"round-{round_index + 1}") as (engines, router, session):
                if prompts is None:  # the words come from the engines' own tokenizer, as the router's blocks do
                    async with session.get(f"{engines[0]}/v1/tokenizer") as answer:
                        words = block_words((await answer.json())["tokenizer"])
                    prompts = [prompt_text(r.hashes, words, args.seed) for r in window]
                runs.append(await replay(policy, round_index, engines, router, session, prompts, delays,
                                         args.max_tokens))
    return runs


def markdown(report: dict) -> str:
    setup = report["setup"]
    summary = {row["policy"]: row for row in report["summary"]}
    lines = [
        "# TTFT through the router, real engines on this machine (issue #15, item 2)", "",
        f"Command: `{setup['command']}` at commit {setup['commit']}"
        + (f" (uncommitted in the tree at the start, which others work in too: {', '.join(setup['uncommitted'])})"
           if setup["uncommitted"] else "") + "  ",
        f"Machine: {setup['cpu']} ({setup['cpu_count']} cores, shared with other work), Python {setup['python']}; "
        f"{setup['date']}. Load average (1/5/15 min) at the start {'/'.join(f'{x:.1f}' for x in setup['load_start'])}"
        f", at the end {'/'.join(f'{x:.1f}' for x in setup['load_end'])}.", "",
        f"Setup: {setup['replicas']} `fleetserve serve` engines ({MODEL}, CPU, `{' '.join(ENGINE_ARGS)}`, "
        f"OMP_NUM_THREADS=1: one torch thread each, so {setup['replicas']} engines share the {setup['cpu_count']} "
        "cores with the router, the client and other people's work), restarted for every run, behind "
        f"`fleetserve router --policy P`. Workload: "
        f"{Path(setup['trace']).name} in arrival order, one conversation in {setup['every']} kept whole (second block "
        f"id a multiple of {setup['every']}), kept requests "
        f"{setup['offset']}..{setup['offset'] + setup['requests'] - 1}"
        f" ({setup['trace_span_s']:.0f} s of the trace), each hash id a block of {BLOCK_TOKENS} one-token words "
        f"(seed {setup['seed']}), at most "
        f"{setup['max_blocks']} blocks ({setup['mean_prompt_tokens']:.0f} prompt tokens on average; "
        f"{setup['ceiling_hit_ratio']:.1%} of blocks were seen earlier in the window: the one-cache ceiling; "
        f"{setup['requests_reusing_past_block_0']} requests reuse more than the first block, which nearly all "
        "share), "
        f"arrivals scaled to {setup['rate']:g} req/s ({setup['rate_reason']}), streamed, {setup['max_tokens']} "
        "tokens each (ignore_eos).", "",
        f"{setup['rounds']} rounds; in each, every policy replays the same requests at the same times, the order "
        "rotating between rounds (" + "; ".join(f"round {i + 1}: {', '.join(order)}"
                                                   for i, order in enumerate(setup['orders'])) + ").", "",
        f"## Pooled over the rounds ({setup['rounds']} x {setup['requests']} requests per policy)", "",
        "| policy | ok | failed | TTFT p50 (ms) | p95 (ms) | p99 (ms) | mean (ms) | p99 per round (ms) "
        "| engines' hit ratio | requests per replica |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in report["summary"]:
        lines.append(
            f"| {row['policy']} | {row['ok']} | {row['failed']} | {1e3 * row['ttft_p50_s']:.0f} "
            f"| {1e3 * row['ttft_p95_s']:.0f} | {1e3 * row['ttft_p99_s']:.0f} | {1e3 * row['ttft_mean_s']:.0f} "
            f"| {' / '.join(f'{1e3 * p:.0f}' for p in row['round_p99_s'])} | {row['engine_hit_ratio']:.1%} "
            f"| {' / '.join(map(str, row['requests_per_replica']))} |")
    lines += ["", "## Each run", "",
              "| round | policy | ok | failed | TTFT p50 (ms) | p95 (ms) | p99 (ms) | mean (ms) | engines' hit ratio "
              "| router's estimate | requests per replica | imbalance (max/mean) | completed/s | load avg during |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for run in report["runs"]:
        lines.append(
            f"| {run['round'] + 1} | {run['policy']} | {run['ok']} | {run['failed']} | {1e3 * run['ttft_p50_s']:.0f} "
            f"| {1e3 * run['ttft_p95_s']:.0f} | {1e3 * run['ttft_p99_s']:.0f} | {1e3 * run['ttft_mean_s']:.0f} "
            f"| {run['engine_hit_ratio']:.1%} | {run['router_estimated_hit_ratio']:.1%} "
            f"| {' / '.join(map(str, run['requests_per_replica']))} | {run['imbalance']:.2f}x "
            f"| {run['completed_per_s']:.2f} "
            f"| {run['load_average_before'][0]:.1f} -> {run['load_average_after'][0]:.1f} |")
    lines.append("")
    lines += [f"Failures in round {run['round'] + 1} under {run['policy']}: {'; '.join(run['errors'])}"
              for run in report["runs"] if run["errors"]]
    if "prefix" in summary and "least-loaded" in summary:
        p, ll = summary["prefix"], summary["least-loaded"]
        wins = sum(a <= b for a, b in zip(p["round_p99_s"], ll["round_p99_s"]))
        lines += [f"Target (p99 TTFT of prefix no worse than least-loaded), pooled: {1e3 * p['ttft_p99_s']:.0f} ms "
                  f"vs {1e3 * ll['ttft_p99_s']:.0f} ms: **{'met' if p['ttft_p99_s'] <= ll['ttft_p99_s'] else 'missed'}**"
                  f"; prefix's p99 was no worse in {wins} of {len(p['round_p99_s'])} rounds. Prefix served "
                  f"{p['engine_hit_ratio']:.1%} of prompt tokens from the engines' caches (least-loaded "
                  f"{ll['engine_hit_ratio']:.1%}, ceiling {setup['ceiling_hit_ratio']:.1%} of blocks).", "",
                  "Noise: between rounds, one policy's p99 moved by up to "
                  f"{1e3 * max(max(row['round_p99_s']) - min(row['round_p99_s']) for row in report['summary']):.0f} ms "
                  f"(its highest round's p99 less its lowest), against {1e3 * abs(p['ttft_p99_s'] - ll['ttft_p99_s']):.0f}"
                  " ms between prefix's and least-loaded's pooled p99.", ""]
    return "\n".join(lines) + "\n"


def plot(report: dict, path: Path) -> None:
    fig, (cdf, by_request) = plt.subplots(1, 2, figsize=(13, 4.5))
    arrivals_s = report["setup"]["arrival_s"]
    for row in report["summary"]:
        runs = [run for run in report["runs"] if run["policy"] == row["policy"]]
        ttfts = sorted(1e3 * t for run in runs for t in run["request_ttft_s"] if t is not None)
        cdf.step(ttfts, [(i + 1) / len(ttfts) for i in range(len(ttfts))], where="post",
                 label=f"{row['policy']} (p99 {1e3 * row['ttft_p99_s']:.0f} ms)")
        worst = [max((1e3 * run["request_ttft_s"][i] for run in runs if run["request_ttft_s"][i] is not None),
                     default=float("nan")) for i in range(len(arrivals_s))]
        by_request.plot(arrivals_s, worst, marker=".", linewidth=0.6, label=row["policy"])
    cdf.set(xscale="log", xlabel="TTFT (ms)", ylabel="fraction of requests",
            title=f"TTFT CDF over {report['setup']['rounds']} rounds, {report['setup']['replicas']} CPU replicas, "
                  f"{report['setup']['rate']:g} req/s")
    by_request.set(yscale="log", xlabel="arrival (s into the replay)", ylabel="TTFT (ms), worst of the rounds",
                   title="each request's worst TTFT over the rounds")
    for ax in (cdf, by_request):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trace", type=Path, default=TRACE_DIR / "conversation_trace.jsonl")
    parser.add_argument("--every", type=int, default=20,
                        help="keep the conversations whose second block id is a multiple of this (1: all)")
    parser.add_argument("--offset", type=int, default=0, help="the window starts at this kept request")
    parser.add_argument("--requests", type=int, default=240, help="requests in the window")
    parser.add_argument("--rounds", type=int, default=3,
                        help="replays of the window per policy, the policies' order rotating between rounds")
    parser.add_argument("--rate", type=float, default=DEFAULT_RATE, help="mean arrival rate, requests/s")
    parser.add_argument("--max-blocks", type=int, default=8,
                        help=f"trace blocks kept per prompt ({BLOCK_TOKENS} tokens each)")
    parser.add_argument("--max-tokens", type=int, default=8, help="tokens generated per request")
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--policies", nargs="+", default=list(POLICIES), choices=POLICIES)
    parser.add_argument("--seed", type=int, default=0, help="seeds the words of every block")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/router-ttft"),
                        help="writes OUT.json, OUT.md and OUT.png")
    args = parser.parse_args()
    for flag, value in (("--every", args.every), ("--requests", args.requests), ("--max-blocks", args.max_blocks),
                        ("--max-tokens", args.max_tokens), ("--replicas", args.replicas), ("--rounds", args.rounds)):
        if value < 1:
            parser.error(f"{flag}: must be at least 1, got {value}")
    if args.offset < 0:
        parser.error(f"--offset: must be at least 0, got {args.offset}")
    if not args.rate > 0:
        parser.error(f"--rate: must be a positive number of requests/s, got {args.rate}")
    if not args.trace.is_file():
        parser.error(f"--trace: {args.trace} is not a readable file")
    try:
        trace = read_trace(args.trace)
    except ValueError as e:
        parser.error(f"--trace: {e}")
    kept = [r for r in trace if len(r.hashes) < 2 or r.hashes[1] % args.every == 0]
    window = [TraceRequest(r.arrival_s, r.input_tokens, r.output_tokens, r.hashes[:args.max_blocks])
              for r in kept[args.offset:args.offset + args.requests]]
    if len(window) < 2:
        parser.error(f"--offset {args.offset}: {len(kept)} requests kept of the trace's {len(trace)}, leaving "
                     f"{len(window)} to replay")

    delays = arrivals(window, args.rate)
    reuse = window_reuse(window)
    load_start = os.getloadavg()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    # Others work in the same tree: what differed from the commit when the engines and the router started.
    uncommitted = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                                 text=True).stdout.split("\n")
    logs = Path(tempfile.mkdtemp(prefix="router-ttft-"))  # kept: the router's log explains failed requests
    try:
        runs = asyncio.run(run_all(args, window, delays, logs))
    except (RuntimeError, TimeoutError) as e:  # an engine or the router that didn't come up: its log says why
        print(f"router_ttft: {e}; logs in {logs}", file=sys.stderr)
        return 1
    report = {
        "setup": {
            "command": shlex.join([os.path.relpath(sys.executable), *sys.argv]), "commit": commit,
            "uncommitted": [line[3:] for line in uncommitted if line],
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "cpu": cpu_model(), "cpu_count": os.cpu_count(), "python": platform.python_version(),
            "load_start": load_start, "load_end": os.getloadavg(),  # others' jobs share these cores
            "trace": str(args.trace), "every": args.every, "offset": args.offset, "requests": len(window),
            "trace_span_s": window[-1].arrival_s - window[0].arrival_s, "rate": args.rate,
            "rate_reason": (f"about {args.rate / SATURATION_RPS:.0%} of the {SATURATION_RPS:g} req/s measured at "
                            "saturation"),
            "max_blocks": args.max_blocks, "max_tokens": args.max_tokens, "replicas": args.replicas,
            "policies": args.policies, "rounds": args.rounds,
            "orders": [rotated(args.policies, i) for i in range(args.rounds)], "seed": args.seed,
            "block_tokens": BLOCK_TOKENS, "arrival_s": delays,
            "mean_prompt_tokens": BLOCK_TOKENS * sum(len(r.hashes) for r in window) / len(window),
            **reuse, "engine_args": ENGINE_ARGS, "engine_env": ENGINE_ENV,
        },
        "summary": [pooled(runs, policy) for policy in args.policies],
        "runs": runs,
    }
    write_results(args.out, report, markdown, plot)
    print(f"engine and router logs: {logs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
