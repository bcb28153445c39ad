"""Slow or silent clients are cut off (review F11): an idle connection or one still trickling its headers after the
keep-alive timeout, a body that does not arrive within the body timeout (408), and a stream nobody reads."""

import asyncio
import socket
import time

import httpx
import pytest

from fleetserve.engine import server as server_module

MODEL = "smollm2-135m-instruct"
TIMEOUT_S = 1.0


@pytest.fixture(scope="module")
def impatient(start_server):
    return start_server(max_waiting=8, keepalive_timeout=TIMEOUT_S, body_timeout=TIMEOUT_S)


def connect(base: str) -> socket.socket:
    host, port = base.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=10 * TIMEOUT_S)


def closed_within(conn: socket.socket, seconds: float, trickle: bytes = b"") -> bool:
    """Whether the server closes the connection within `seconds`, while we send `trickle` a byte at a time."""
    deadline = time.monotonic() + seconds
    conn.settimeout(0.2)
    for byte in trickle:
        if time.monotonic() > deadline:
            break
        try:
            conn.send(bytes([byte]))
            if conn.recv(65536) == b"":
                return True
        except socket.timeout:
            continue
        except OSError:
            return True
    while time.monotonic() < deadline:
        try:
            data = conn.recv(65536)
        except socket.timeout:
            continue
        except OSError:
            return True
        if data == b"" or data.startswith(b"HTTP/1.1 4"):
            return True
    return False


def test_a_silent_connection_is_closed(impatient):
    with connect(impatient) as conn:
        assert closed_within(conn, 5 * TIMEOUT_S)


def test_a_client_trickling_its_headers_is_cut_off(impatient):
    with connect(impatient) as conn:
        assert closed_within(conn, 5 * TIMEOUT_S, b"GET /health HTTP/1.1\r\nX-Slow: " + b"a" * 1000)


def test_a_body_that_does_not_arrive_gets_408(impatient):
    with connect(impatient) as conn:
        conn.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 1000\r\n\r\n{\"model\":")
        conn.settimeout(10 * TIMEOUT_S)
        answer = conn.recv(65536)
    assert answer.startswith(b"HTTP/1.1 408") and b"request_timeout" in answer


def test_idle_keep_alive_then_new_requests_work(impatient):
    assert httpx.get(f"{impatient}/health", timeout=5).status_code == 200


async def test_a_stream_nobody_reads_is_aborted_after_the_write_timeout(monkeypatch):
    """write_sse on a response whose writes never complete (a reader that stopped reading): it gives up after the
    write timeout and closes the connection; its caller then closes the engine's stream, which aborts the request."""
    closed = asyncio.Event()

    class StuckResponse:
        async def prepare(self, request):
            pass

        async def write(self, data):
            await asyncio.Event().wait()  # the client's buffers are full for good

    class Transport:
        def close(self):
            closed.set()

    class Request:
        transport = Transport()

    async def chunks():
        yield {"choices": []}

    monkeypatch.setattr(server_module.web, "StreamResponse", lambda **kwargs: StuckResponse())
    await asyncio.wait_for(server_module.write_sse(Request(), chunks(), 0.2), 5)
    assert closed.is_set()
