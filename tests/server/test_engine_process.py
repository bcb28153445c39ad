"""The engine core in a process of its own (`fleetserve serve`'s default): what the official `openai` client gets
through it matches the in-thread engine's answers; a client that hangs up frees its request in the other process;
bad requests are refused before anything crosses; an engine process that dies ends every stream with an error and
turns the probes unhealthy; and no engine process outlives its server."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import psutil
import pytest
from pydantic import BaseModel, Field

from fleetserve.engine.config import EngineConfig
from fleetserve.engine.engine_process import EngineProcess
from fleetserve.engine.sampling_params import SamplingParams
from fleetserve.engine.server import ServerOptions, build_app, start_site
from tiny_servers import TINY

MODEL = "smollm2-135m-instruct"
MAX_MODEL_LEN = 512
MAX_NUM_SEQS = 4
TINY_LLAMA = Path(__file__).parents[1] / "tp" / "tiny-llama.json"


class Person(BaseModel):
    name: str = Field(max_length=12)
    age: int = Field(ge=0, le=120)


def serve_engine(engine_loop, engine) -> tuple[str, object]:
    """A server in front of a started engine on the tests' loop -> (base URL, its runner)."""
    runner = engine_loop.call(start_site(build_app(engine, ServerOptions(max_num_seqs=MAX_NUM_SEQS, max_waiting=8)),
                                         "127.0.0.1", 0))
    host, port = runner.addresses[0][:2]
    return f"http://{host}:{port}", runner


def client_for(base: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base}/v1", api_key="unused", timeout=120, max_retries=0)


@pytest.fixture(scope="module")
def split(engine_loop):
    """The built-in model in an engine process, a server in front of it -> (base URL, the EngineProcess)."""
    engine = EngineProcess(EngineConfig(max_model_len=MAX_MODEL_LEN, max_num_seqs=MAX_NUM_SEQS, device="cpu"))
    engine_loop.call(engine.start())
    base, runner = serve_engine(engine_loop, engine)
    yield base, engine
    engine_loop.call(runner.cleanup())
    engine_loop.call(engine.shutdown())
    assert not engine._process.is_alive()


@pytest.fixture
def client(split):
    return client_for(split[0])


@pytest.fixture
def in_thread(server):
    """The same model on the in-thread engine (the session's), for reference answers."""
    return client_for(server)


def test_completion_chat_and_n_match_the_in_thread_engine(client, in_thread):
    def complete(c):
        return [choice.text for choice in c.completions.create(
            model=MODEL, prompt="The capital of France is", max_tokens=12, temperature=0, n=2).choices]

    def chat(c):
        return c.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Name a colour."}],
                                         max_tokens=12, temperature=0).choices[0].message.content

    texts = complete(client)
    assert texts == complete(in_thread) and texts[0] == texts[1] and texts[0]
    assert chat(client) == chat(in_thread)


def test_streaming_with_usage(client, in_thread):
    def stream(c):
        chunks = list(c.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=16, temperature=0,
                                           stream=True, stream_options={"include_usage": True}))
        return "".join(chunk.choices[0].text for chunk in chunks if chunk.choices), chunks[-1].usage

    text, usage = stream(client)
    assert (text, usage) == stream(in_thread) and usage.completion_tokens == 16


def test_structured_output_is_the_in_thread_engines(client, in_thread):
    """The grammar crosses as EBNF text and is compiled again in the engine process: the same masks, so greedy
    decoding gives the same document."""
    def person(c):
        return c.chat.completions.parse(model=MODEL, messages=[{"role": "user", "content": "A person as JSON."}],
                                        max_tokens=60, temperature=0, response_format=Person).choices[0]

    choice = person(client)
    assert choice.finish_reason == "stop" and isinstance(choice.message.parsed, Person)
    assert choice.message.content == person(in_thread).message.content
    with pytest.raises(openai.BadRequestError) as refused:  # compiled in the API process, before anything is sent
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}], response_format={
            "type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "no-such-type"}}})
    assert refused.value.body["param"] == "response_format.json_schema.schema"


def test_closing_a_stream_aborts_the_request_in_the_engine_process(client, split):
    engine = split[1]
    before = engine.stats().generation_tokens
    with client.completions.create(model=MODEL, prompt="Write a very long essay about the sea.", max_tokens=400,
                                   temperature=0, stream=True, extra_body={"ignore_eos": True}) as stream:
        for _ in zip(range(4), stream):
            pass
        assert engine.stats().num_running == 1
    deadline = time.monotonic() + 30
    while (engine.stats().num_running, engine.stats().kv_cache_usage) != (0, 0.0):
        assert time.monotonic() < deadline, f"the request was not aborted: {engine.stats()}"
        time.sleep(0.1)
    assert engine.stats().generation_tokens - before < 400


def test_the_engines_checks_refuse_a_request_before_it_is_sent(split, engine_loop):
    engine = split[1]

    async def first_output(prompt, params):
        async for output in engine.generate("refused", prompt, params):
            return output

    sent = engine._adds_sent
    for prompt, params, message in [([], SamplingParams(), "prompt: must not be empty"),
                                    ([1] * MAX_MODEL_LEN, SamplingParams(), "prompt: 512 tokens leave no room"),
                                    ([10**6], SamplingParams(), "prompt: token ids must be in"),
                                    ([1, 2], SamplingParams(top_p=0), "top_p: must be in")]:
        with pytest.raises(ValueError, match=message):
            engine_loop.call(first_output(prompt, params))
    assert engine._adds_sent == sent


def test_a_dead_engine_process_ends_every_stream_with_an_error(engine_loop):
    engine = EngineProcess(EngineConfig(model="random://qwen3-0.6b", served_model_name="tiny", hf_overrides=TINY,
                                        max_model_len=4096, max_num_seqs=MAX_NUM_SEQS, device="cpu"))
    engine_loop.call(engine.start())
    base, runner = serve_engine(engine_loop, engine)
    client = client_for(base)
    try:
        long = {"model": "tiny", "prompt": "Once upon a time", "max_tokens": 4000, "extra_body": {"ignore_eos": True}}
        streams = [client.completions.create(stream=True, **long) for _ in range(2)]
        for stream in streams:
            next(iter(stream))  # generating
        os.kill(engine._process.pid, signal.SIGKILL)
        for stream in streams:
            with pytest.raises(openai.APIError, match="the engine process exited"):
                for _ in stream:
                    pass
        for probe in ("/readyz", "/livez", "/health"):
            assert httpx.get(base + probe, timeout=10).status_code == 503
        with pytest.raises(openai.APIStatusError) as refused:
            client.completions.create(model="tiny", prompt="hi", max_tokens=2)
        assert refused.value.status_code == 503
    finally:
        engine_loop.call(runner.cleanup())
        engine_loop.call(engine.shutdown())


def serve_tiny(tmp_path: Path, port: int) -> subprocess.Popen:
    log = (tmp_path / "serve.log").open("w")
    return subprocess.Popen([str(Path(sys.executable).with_name("fleetserve")), "serve", "--model",
                             f"random://{TINY_LLAMA}", "--device", "cpu", "--engine-process", "on",
                             "--port", str(port)],
                            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "HF_HUB_OFFLINE": "1"})


def engine_child(process: subprocess.Popen) -> psutil.Process:
    [child] = [p for p in psutil.Process(process.pid).children() if "resource_tracker" not in " ".join(p.cmdline())]
    return child


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "server-killed"])
def test_no_engine_process_outlives_its_server(tmp_path, free_port, wait_until_ready, stop):
    port = free_port()
    process = serve_tiny(tmp_path, port)
    try:
        wait_until_ready(process, f"http://127.0.0.1:{port}/readyz", tmp_path / "serve.log")
        completion = httpx.post(f"http://127.0.0.1:{port}/v1/completions", timeout=60, json={
            "model": "tiny-llama", "prompt": [5, 6, 7], "max_tokens": 3, "ignore_eos": True}).json()
        assert completion["usage"]["completion_tokens"] == 3, json.dumps(completion)
        child = engine_child(process)
        process.send_signal(stop)
        code = process.wait(timeout=60)
        assert code == (0 if stop == signal.SIGTERM else -signal.SIGKILL), (tmp_path / "serve.log").read_text()
        child.wait(timeout=30)  # gone (a SIGKILLed server's engine sees the pipe's EOF), not orphaned
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)
