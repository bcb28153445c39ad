"""A user starts `fleetserve serve` with the built-in model and talks to it with the official `openai` client."""

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import openai
import pytest

MODEL = "smollm2-135m-instruct"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """`fleetserve serve` in a subprocess, exactly as the README starts it; yields (base_url, log path)."""
    fleetserve = shutil.which("fleetserve") or str(Path(sys.executable).with_name("fleetserve"))
    port = free_port()
    log_path = tmp_path_factory.mktemp("serve") / "serve.log"
    process = subprocess.Popen([fleetserve, "serve", "--port", str(port), "--max-model-len", "1024"],
                               stdout=log_path.open("w"), stderr=subprocess.STDOUT,
                               env={**os.environ, "HF_HUB_OFFLINE": "1"})
    base_url = f"http://127.0.0.1:{port}/v1"
    probe = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=2)
    deadline = time.monotonic() + 180
    while True:
        assert process.poll() is None, log_path.read_text()[-3000:]
        assert time.monotonic() < deadline, "fleetserve serve did not come up"
        try:
            probe.models.list()
            break
        except openai.APIConnectionError:
            time.sleep(0.5)
    yield base_url, log_path
    process.terminate()
    assert process.wait(timeout=60) == 0


@pytest.fixture
def client(served):
    return openai.OpenAI(base_url=served[0], api_key="unused", max_retries=0, timeout=120)


def test_the_commands_the_startup_log_prints_work(served):
    log = served[1].read_text().splitlines()
    start = next(i for i, line in enumerate(log) if f"serving '{MODEL}'" in line)
    curl, python = "\n".join(log[start + 1:start + 3]), log[start + 3]
    assert curl.strip().startswith("curl ") and python.strip().startswith("python -c ")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}  # `python`: this venv's
    for command in (curl, python):
        result = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=120, env=env)
        assert result.returncode == 0 and result.stdout.strip(), (command, result.stderr)
    assert '"choices"' in subprocess.run(["bash", "-c", curl], capture_output=True, text=True, timeout=120).stdout


def test_list_models(client):
    assert client.models.list().data[0].id == MODEL


def test_chat(client):
    reply = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "What is 2+2?"}],
                                           max_tokens=24, temperature=0)
    assert reply.choices[0].message.content
    assert reply.usage.prompt_tokens > 0 and 0 < reply.usage.completion_tokens <= 24


def test_completion(client):
    completion = client.completions.create(model=MODEL, prompt="The sky is", max_tokens=8, temperature=0)
    assert completion.choices[0].text and completion.usage.completion_tokens <= 8


def test_streaming_chat_with_usage(client):
    stream = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Name a colour."}],
                                            max_tokens=16, temperature=0, stream=True,
                                            stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert text and chunks[-1].usage.completion_tokens >= 1


def test_bad_request_is_a_bad_request_error(client):
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model=MODEL, prompt="hi", max_tokens=0)
    assert caught.value.body["param"] == "max_tokens"
