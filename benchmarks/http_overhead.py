"""What the HTTP path costs per token, without a model: the real server and AsyncEngine in front of a stub engine
whose step takes a fixed time (as a GPU step would, releasing the GIL) and gives every running request one token.
The client runs in another process, so the server process's event loop and step thread are all that is measured.

    python benchmarks/http_overhead.py --requests 256 --tokens 256 --step-ms 10 [--profile out.txt]

Prints the engine's own rate (requests x tokens over the steps it took) beside what the streams received.
"""

import argparse
import asyncio
import cProfile
import json
import multiprocessing
import pstats
import sys
import os
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

PORT = 8931


class StubEngine:
    """LLMEngine's surface as AsyncEngine uses it; every step sleeps `step_s` and yields one token per request."""

    def __init__(self, step_s: float):
        import fleet
        from fleetserve.engine.config import EngineConfig

        self.step_s, self.requests, self.generation_tokens = step_s, {}, 0
        self.config, self.tokenizer = EngineConfig(), fleet.builtin_tokenizer()  # GET /v1/tokenizer describes them
        self.model_name, self.max_model_len, self.vocab_size = "stub", 1 << 20, 1 << 20

    def validate(self, prompt_token_ids, params):
        pass

    def add_request(self, request_id, prompt_token_ids, params, arrival=None):
        self.requests[request_id] = [params.max_tokens, len(prompt_token_ids), 0]

    def abort(self, request_id, error=None):
        from fleetserve.engine.outputs import RequestOutput

        left = self.requests.pop(request_id, None)
        return None if left is None else RequestOutput(request_id, [], "", True, "abort", left[1], left[2], error=error)

    def has_unfinished_requests(self):
        return bool(self.requests)

    def stats(self):
        from fleetserve.engine.outputs import EngineStats

        return EngineStats(len(self.requests), 0, 0.0, 0, 0, 0, 0, self.generation_tokens)

    def step(self):
        from fleetserve.engine.outputs import RequestOutput, RequestTimings

        time.sleep(self.step_s)
        outputs = []
        for request_id, state in list(self.requests.items()):
            state[2] += 1
            self.generation_tokens += 1
            out = RequestOutput(request_id, [7], " tok", False, None, state[1], state[2])
            if state[2] == state[0]:
                del self.requests[request_id]
                now = time.monotonic()
                out.finished, out.finish_reason, out.timings = True, "length", RequestTimings(now, now, now, now)
            outputs.append(out)
        return outputs


def serve(step_s: float, profile_path: str | None, ready) -> None:
    from fleetserve.engine import async_engine
    from fleetserve.engine.server import ServerOptions, build_app, start_site

    async_engine.LLMEngine = lambda config, loaded=None: StubEngine(step_s)  # the stub, for this process only

    async def main():
        engine = async_engine.AsyncEngine(None)
        await engine.start()
        await start_site(build_app(engine, ServerOptions(max_waiting=100_000)), "127.0.0.1", PORT)
        ready.set()
        await asyncio.Event().wait()

    profiler = cProfile.Profile() if profile_path else None
    if profiler:
        profiler.enable()
        import signal

        def dump(*_):
            profiler.disable()
            with open(profile_path, "w") as f:
                pstats.Stats(profiler, stream=f).sort_stats("tottime").print_stats(25)
            sys.exit(0)

        signal.signal(signal.SIGTERM, dump)
    asyncio.run(main())


async def replay(count: int, tokens: int) -> dict:
    import aiohttp

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        async def one(i):
            body = {"model": "stub", "prompt": [1, 2, 3], "max_tokens": tokens, "stream": True}
            got = 0
            async with session.post(f"http://127.0.0.1:{PORT}/v1/completions", json=body) as resp:
                async for line in resp.content:
                    if line.startswith(b"data: {"):
                        got += len(json.loads(line[6:])["choices"][0]["text"]) // 4
            return got

        start = time.perf_counter()
        got = await asyncio.gather(*(one(i) for i in range(count)))
        return {"seconds": time.perf_counter() - start, "tokens": sum(got)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=256)
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--step-ms", type=float, default=10.0)
    parser.add_argument("--profile", default=None, help="write the server's cProfile (top 25 by own time) here")
    args = parser.parse_args()
    ready = multiprocessing.Event()
    server = multiprocessing.Process(target=serve, args=(args.step_ms / 1e3, args.profile, ready))
    server.start()
    ready.wait(60)
    try:
        result = asyncio.run(replay(args.requests, args.tokens))
    finally:
        server.terminate()
        server.join(30)
    engine_rate = args.requests * 1e3 / args.step_ms  # tokens/s if every step carried every request
    result.update(requests=args.requests, step_ms=args.step_ms, engine_tok_s=engine_rate,
                  http_tok_s=result["tokens"] / result["seconds"])
    result["http_share_of_engine"] = result["http_tok_s"] / engine_rate
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
