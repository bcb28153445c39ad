"""SIGTERM on `fleetserve serve`: new requests, /readyz and /health get 503 while /livez stays 200, the in-flight
request completes, exit 0."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

MODEL = "smollm2-135m-instruct"
MAX_TOKENS = 150  # long enough that the drain is observable while it runs


@pytest.fixture
def serve_process(tmp_path, free_port, wait_until_ready):
    port = free_port()
    log = (tmp_path / "serve.log").open("w")
    process = subprocess.Popen(
        [str(Path(sys.executable).with_name("fleetserve")), "serve", "--port", str(port), "--max-model-len", "256",
         "--max-num-seqs", "4", "--drain-seconds", "60"],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    base = f"http://127.0.0.1:{port}"
    wait_until_ready(process, f"{base}/health", tmp_path / "serve.log", timeout=180)
    yield process, base, tmp_path / "serve.log"
    if process.poll() is None:
        process.kill()
        process.wait(timeout=30)


def test_sigterm_drains_in_flight_requests_then_exits_zero(serve_process):
    process, base, log_path = serve_process
    with httpx.stream("POST", f"{base}/v1/completions", timeout=120, json={
            "model": MODEL, "prompt": "Tell me about the moon.", "max_tokens": MAX_TOKENS, "temperature": 0,
            "ignore_eos": True, "stream": True, "stream_options": {"include_usage": True}}) as response:
        lines = response.iter_lines()
        first = next(line for line in lines if line.startswith("data: "))
        process.send_signal(signal.SIGTERM)

        deadline = time.monotonic() + 30
        while httpx.get(f"{base}/health", timeout=5).status_code != 503:
            assert time.monotonic() < deadline, "/health never turned 503 after SIGTERM"
            time.sleep(0.1)
        assert httpx.get(f"{base}/readyz", timeout=5).status_code == 503
        assert httpx.get(f"{base}/livez", timeout=5).status_code == 200  # draining is no reason to restart
        refused = httpx.post(f"{base}/v1/completions", json={"model": MODEL, "prompt": "hi"}, timeout=30)
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "server_draining"

        chunks = [json.loads(line[len("data: "):]) for line in [first, *lines] if line.startswith("data: {")]
    assert chunks[-1]["usage"]["completion_tokens"] == MAX_TOKENS
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "length"
    assert process.wait(timeout=60) == 0, log_path.read_text()[-3000:]
