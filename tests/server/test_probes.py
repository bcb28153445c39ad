"""Kubernetes probes: /livez fails only when a restart is the fix, /readyz (and its older name /health) whenever the
server does not admit requests; none of them needs the API key."""

import httpx
import pytest

from fleetserve.engine.server import STATE, ServerOptions, build_app, start_site

PROBES = ("/livez", "/readyz", "/health")


class BrokenEngine:
    """The shared engine as it looks once its step loop has died: `healthy` turns false for good."""

    healthy = False

    def __init__(self, engine):
        self._engine = engine

    def __getattr__(self, name):
        return getattr(self._engine, name)


@pytest.fixture
def serve_app(engine_loop):
    """Starts an app in front of the given engine; yields (base URL, app) and stops it afterwards."""
    runners = []

    def start(engine, **options):
        app = build_app(engine, ServerOptions(**options))
        runner = engine_loop.call(start_site(app, "127.0.0.1", 0))
        runners.append(runner)
        host, port = runner.addresses[0][:2]
        return f"http://{host}:{port}", app

    yield start
    for runner in runners:
        engine_loop.call(runner.cleanup())


def statuses(base: str) -> dict[str, int]:
    return {path: httpx.get(f"{base}{path}", timeout=5).status_code for path in PROBES}


def test_a_serving_engine_is_live_and_ready_without_the_api_key(serve_app, engine_loop):
    base, _ = serve_app(engine_loop.engine, api_key="s3cret")
    assert statuses(base) == {"/livez": 200, "/readyz": 200, "/health": 200}
    assert httpx.get(f"{base}/v1/models", timeout=5).status_code == 401  # the API itself stays locked


def test_a_draining_server_is_not_ready_but_stays_live(serve_app, engine_loop):
    base, app = serve_app(engine_loop.engine)
    assert engine_loop.call(app[STATE].admission.drain(5))  # nothing in flight: drained at once, still draining
    assert statuses(base) == {"/livez": 200, "/readyz": 503, "/health": 503}
    assert httpx.get(f"{base}/readyz", timeout=5).json()["error"]["code"] == "server_draining"


def test_a_broken_engine_fails_liveness_so_the_pod_restarts(serve_app, engine_loop):
    base, _ = serve_app(BrokenEngine(engine_loop.engine))
    assert statuses(base) == {"/livez": 503, "/readyz": 503, "/health": 503}
    assert httpx.get(f"{base}/livez", timeout=5).json()["error"]["code"] == "engine_unhealthy"
