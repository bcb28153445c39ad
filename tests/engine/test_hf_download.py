"""hf:// sources download for real: `fleetserve serve` in a subprocess, with the environment the operator renders into
engine pods (HF_HOME on the model-cache volume, HOME=/tmp, no HF_HUB_OFFLINE), fetches a tiny model from a stand-in
Hugging Face Hub and serves it.

The real hub can't be reached from the test machines, so the stand-in is a small aiohttp server on 127.0.0.1 (found
through HF_ENDPOINT) answering what huggingface_hub's snapshot_download asks: the revision's model info, the file
tree, and HEAD/GET of each file under /resolve/. With a token required it answers 401 like the hub does for a gated
or private repo, so the HF_TOKEN path is exercised too.
"""

import asyncio
import hashlib
import os
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest
import torch
import transformers
from aiohttp import web

from fleetserve.engine import loader
from fleetserve.engine.config import default_hub_offline

REPO = "acme/tiny-llama"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
TOKEN = "hf_stand_in_token"


@pytest.fixture(scope="module")
def model_files(tmp_path_factory) -> dict[str, bytes]:
    """A tiny random Llama as the hub stores it: config, safetensors, generation config and tokenizer files."""
    folder = tmp_path_factory.mktemp("tiny-llama")
    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=49152, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=256,
                                      tie_word_embeddings=True)
    transformers.LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer = transformers.AutoTokenizer.from_pretrained(loader.builtin_dir(), gguf_file=loader.BUILTIN_GGUF)
    tokenizer.save_pretrained(folder)
    return {path.name: path.read_bytes() for path in folder.iterdir() if path.is_file()}


def stand_in_hub(files: dict[str, bytes], token: str | None) -> web.Application:
    blob_ids = {name: hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest() for name, data in files.items()}

    @web.middleware
    async def auth(request: web.Request, handler):
        if token is not None and request.headers.get("Authorization") != f"Bearer {token}":
            raise web.HTTPUnauthorized(headers={"X-Error-Code": "GatedRepo", "X-Error-Message":
                                                f"Access to model {REPO} is restricted. Please log in."})
        return await handler(request)

    def repo_of(request: web.Request) -> str:
        repo = f"{request.match_info['org']}/{request.match_info['name']}"
        if repo != REPO:
            raise web.HTTPNotFound(headers={"X-Error-Code": "RepoNotFound"})
        return repo

    async def revision(request: web.Request) -> web.Response:
        return web.json_response({"id": repo_of(request), "sha": COMMIT,
                                  "siblings": [{"rfilename": name} for name in files]})

    async def tree(request: web.Request) -> web.Response:
        repo_of(request)
        return web.json_response([{"type": "file", "path": name, "size": len(data), "oid": blob_ids[name]}
                                  for name, data in files.items()])

    async def resolve(request: web.Request) -> web.Response:
        repo_of(request)
        name = request.match_info["file"]
        if name not in files:
            raise web.HTTPNotFound(headers={"X-Error-Code": "EntryNotFound", "X-Repo-Commit": COMMIT})
        headers = {"X-Repo-Commit": COMMIT, "ETag": f'"{blob_ids[name]}"'}
        if request.method == "HEAD":
            return web.Response(headers={**headers, "Content-Length": str(len(files[name]))})
        return web.Response(body=files[name], headers=headers)

    app = web.Application(middlewares=[auth])
    app.router.add_get("/api/models/{org}/{name}/revision/{revision}", revision)
    app.router.add_get("/api/models/{org}/{name}/tree/{revision}", tree)
    app.router.add_get("/{org}/{name}/resolve/{revision}/{file}", resolve)  # aiohttp answers HEAD from GET routes
    return app


@pytest.fixture
def hub(model_files, free_port):
    """Starts the stand-in hub (optionally requiring a token) in its own thread; returns its base URL."""
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, name="stand-in-hub", daemon=True).start()
    runners = []

    def start(token: str | None = None) -> str:
        async def serve(port: int) -> web.AppRunner:
            runner = web.AppRunner(stand_in_hub(model_files, token))
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", port).start()
            return runner

        port = free_port()
        runners.append(asyncio.run_coroutine_threadsafe(serve(port), loop).result(30))
        return f"http://127.0.0.1:{port}"

    yield start
    for runner in runners:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(30)
    loop.call_soon_threadsafe(loop.stop)


def pod_env(tmp_path: Path, endpoint: str, **extra: str) -> dict[str, str]:
    """The engine pod's environment (operator pod template: HF_HOME on the model-cache volume, HOME=/tmp), with the
    paths moved under tmp_path; offline switches and tokens from the test process are dropped."""
    inherited = {k: v for k, v in os.environ.items()
                 if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_TOKEN", "HF_HOME", "HOME")}
    return {**inherited, "HF_HOME": str(tmp_path / "model-cache" / "huggingface"), "HOME": str(tmp_path / "home"),
            "HF_ENDPOINT": endpoint, **extra}


def serve(tmp_path: Path, port: int, env: dict[str, str]) -> subprocess.Popen:
    log = (tmp_path / "serve.log").open("w")
    return subprocess.Popen(
        [str(Path(sys.executable).with_name("fleetserve")), "serve", "--model", f"hf://{REPO}@main", "--device", "cpu",
         "--port", str(port), "--num-kv-blocks", "16", "--max-model-len", "128", "--max-num-seqs", "2"],
        stdout=log, stderr=subprocess.STDOUT, env=env)


@pytest.mark.parametrize("token", [None, TOKEN], ids=["public", "with-HF_TOKEN"])
def test_serve_downloads_an_hf_model_and_serves_it(tmp_path, hub, free_port, wait_until_ready, token):
    port = free_port()
    env = pod_env(tmp_path, hub(token), **({"HF_TOKEN": token} if token else {}))
    process = serve(tmp_path, port, env)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until_ready(process, f"{base}/readyz", tmp_path / "serve.log")
        assert httpx.get(f"{base}/v1/models", timeout=5).json()["data"][0]["id"] == REPO
        completion = httpx.post(f"{base}/v1/completions", timeout=60, json={
            "model": REPO, "prompt": [5, 6, 7], "max_tokens": 3, "ignore_eos": True}).json()
        assert completion["usage"]["completion_tokens"] == 3
    finally:
        process.kill()
        process.wait(timeout=30)
    snapshot = tmp_path / "model-cache" / "huggingface" / "hub" / "models--acme--tiny-llama" / "snapshots" / COMMIT
    assert (snapshot / "config.json").is_file() and (snapshot / "model.safetensors").is_file()


def test_a_gated_model_without_hf_token_fails_with_one_clear_line(tmp_path, hub, free_port):
    process = serve(tmp_path, free_port(), pod_env(tmp_path, hub(TOKEN)))
    assert process.wait(timeout=240) == 2
    log = (tmp_path / "serve.log").read_text()
    assert f"model: hf://{REPO}@main: " in log and "HF_TOKEN is not set" in log, log[-3000:]
    assert "Traceback" not in log, log[-3000:]


@pytest.mark.parametrize("source, environ, offline", [
    ("builtin://smollm2-135m-instruct", {}, "1"), ("random://qwen3-0.6b", {}, "1"), ("/models/x", {}, "1"),
    (f"hf://{REPO}@main", {}, None),
    (f"hf://{REPO}@main", {"HF_HUB_OFFLINE": "1"}, "1"),  # the user's choice: serve from a pre-filled cache
    ("builtin://smollm2-135m-instruct", {"HF_HUB_OFFLINE": "0"}, "0"),
])
def test_only_local_sources_default_to_offline(source, environ, offline):
    default_hub_offline(source, environ)
    assert environ.get("HF_HUB_OFFLINE") == offline
