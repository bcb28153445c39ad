"""Online serving: replay a trace's arrivals through the HTTP server (streaming completions), measuring time to
first token, inter-token latency and goodput under a stated SLO."""

import asyncio
import json
import os
import signal
import subprocess
import sys
import time

import aiohttp

from fleetserve.engine.bench import percentile, wait_healthy
from workloads import BenchRequest

SLO_TTFT_S = 0.5  # interactive chat: first token within half a second...
SLO_TPOT_S = 0.05  # ...then at least 20 tokens/s for the rest of the answer


def start_server(model: str, port: int, log_path: str, extra: list[str]) -> subprocess.Popen:
    cmd = [sys.executable, "-P", "-m", "fleetserve", "serve", "--model", model, "--device", "cuda", "--port",
           str(port), *extra]
    log = open(log_path, "w")
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def stop_server(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


async def _one(session, base: str, model: str, r: BenchRequest) -> dict:
    body = {"model": model, "prompt": r.prompt_ids, "max_tokens": r.output_len, "temperature": 0.0,
            "ignore_eos": True, "stream": True}
    sent = time.perf_counter()
    stamps, error = [], None
    try:
        async with session.post(f"{base}/v1/completions", json=body) as resp:
            if resp.status != 200:
                return {"error": f"HTTP {resp.status}"}
            async for raw in resp.content:
                line = raw.decode().strip()
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                if "error" in chunk:
                    error = chunk["error"]
                elif chunk.get("choices"):
                    stamps.append(time.perf_counter())
    except aiohttp.ClientError as e:
        error = repr(e)
    if error or not stamps:
        return {"error": error or "no tokens"}
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]
    tpot = (stamps[-1] - stamps[0]) / max(1, r.output_len - 1)
    return {"ttft": stamps[0] - sent, "gaps": gaps, "tpot": tpot, "done": stamps[-1]}


async def replay(base: str, model: str, requests: list[BenchRequest], per_request: bool = False) -> dict:
    """`per_request`: also each request's arrival, prompt and output lengths and TTFT (None if it failed)."""
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=600)) as session:
        start = time.perf_counter()

        async def at_arrival(r: BenchRequest):
            await asyncio.sleep(max(0.0, start + r.arrival_s - time.perf_counter()))
            return await _one(session, base, model, r)

        results = await asyncio.gather(*(at_arrival(r) for r in requests))
    ok = [x for x in results if "error" not in x]
    duration = max(x["done"] for x in ok) - start if ok else float("nan")
    good = [x for x in ok if x["ttft"] <= SLO_TTFT_S and x["tpot"] <= SLO_TPOT_S]
    gaps = [g for x in ok for g in x["gaps"]]
    detail = {}
    if per_request:
        detail["per_request"] = [[round(r.arrival_s, 4), len(r.prompt_ids), r.output_len,
                                  round(x["ttft"], 4) if "ttft" in x else None] for r, x in zip(requests, results)]
    return detail | {
        "requests": len(requests), "completed": len(ok), "errors": len(results) - len(ok),
        "duration_s": duration, "offered_rate": len(requests) / max(r.arrival_s for r in requests),
        "ttft_p50_ms": 1e3 * percentile([x["ttft"] for x in ok], 50),
        "ttft_p99_ms": 1e3 * percentile([x["ttft"] for x in ok], 99),
        "itl_p50_ms": 1e3 * percentile(gaps, 50), "itl_p99_ms": 1e3 * percentile(gaps, 99),
        "tpot_p50_ms": 1e3 * percentile([x["tpot"] for x in ok], 50),
        "tpot_p99_ms": 1e3 * percentile([x["tpot"] for x in ok], 99),
        "slo": {"ttft_s": SLO_TTFT_S, "tpot_s": SLO_TPOT_S},
        "goodput_rps": len(good) / duration, "slo_attainment": len(good) / len(requests),
    }


def online_bench(model: str, requests: list[BenchRequest], port: int, log_dir: str, served_name: str,
                 extra_args: list[str]) -> dict:
    proc = start_server(model, port, os.path.join(log_dir, "server.log"), extra_args)
    base = f"http://127.0.0.1:{port}"
    try:
        asyncio.run(wait_healthy(base, proc))
        return asyncio.run(replay(base, served_name, requests))
    finally:
        stop_server(proc)
