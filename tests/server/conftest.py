"""One real engine (the built-in model) for the whole session, running on an event loop in a background thread;
each test server is a real aiohttp app on a loopback port in front of it, so tests talk plain HTTP to it."""

import asyncio
import os
import threading
from dataclasses import dataclass

import pytest

from fleetserve.engine.server import ServerOptions, build_app, start_site

MODEL = "smollm2-135m-instruct"
MAX_MODEL_LEN = 512
MAX_NUM_SEQS = 4


@dataclass
class EngineLoop:
    loop: asyncio.AbstractEventLoop
    engine: object

    def call(self, coroutine, timeout: float = 120):
        """Runs a coroutine on the engine's loop and waits for its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)


@pytest.fixture(scope="session")
def engine_loop():
    from fleetserve.engine.async_engine import AsyncEngine
    from fleetserve.engine.config import EngineConfig

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="engine-loop", daemon=True)
    thread.start()
    engine = AsyncEngine(EngineConfig(max_model_len=MAX_MODEL_LEN, max_num_seqs=MAX_NUM_SEQS, device="cpu"))
    engine_loop = EngineLoop(loop, engine)
    engine_loop.call(engine.start(), timeout=300)
    yield engine_loop
    engine_loop.call(engine.shutdown())
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout=30)


@pytest.fixture(scope="session")
def start_server(engine_loop):
    """Starts a server app with the given options in front of the shared engine; returns its base URL."""
    runners = []

    def start(**options) -> str:
        async def serve():  # port 0: the OS picks a free one, no race with other helpers' servers
            return await start_site(build_app(engine_loop.engine, ServerOptions(max_num_seqs=MAX_NUM_SEQS, **options)), "127.0.0.1", 0)

        runner = engine_loop.call(serve())
        runners.append(runner)
        host, port = runner.addresses[0][:2]
        return f"http://{host}:{port}"

    yield start
    for runner in runners:
        engine_loop.call(runner.cleanup())


@pytest.fixture(scope="session")
def server(start_server) -> str:
    """The default test server: a small queue bound so overload is cheap to provoke."""
    return start_server(max_waiting=2)
