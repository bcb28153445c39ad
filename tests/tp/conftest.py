"""Tensor-parallel test fixtures: `fleetserve serve` processes over a tiny random-weight Llama whose 8 query heads,
4 KV heads and 256 MLP columns divide by 2 and 4, and the same model's greedy outputs at TP=1 as the reference.

The model is a real HF checkpoint folder (transformers' own random init, saved with a tokenizer.json), so every rank
loads its shard through the same path as real weights, and a server starts without re-parsing the GGUF tokenizer.
"""

import concurrent.futures
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import openai
import pytest

from harness.ports import free_port

os.environ.setdefault("HF_HUB_OFFLINE", "1")

TINY_CONFIG = Path(__file__).with_name("tiny-llama.json")
MODEL_NAME = "tiny-llama"
MAX_MODEL_LEN = 256
MAX_NUM_BATCHED_TOKENS = 64  # below the longest prompt, so prefills are chunked over several broadcast steps
MAX_TOKENS = 16
NUM_KV_BLOCKS = 128
ENGINE_SETTINGS = dict(device="cpu", max_model_len=MAX_MODEL_LEN, max_num_batched_tokens=MAX_NUM_BATCHED_TOKENS,
                       max_num_seqs=8, num_kv_blocks=NUM_KV_BLOCKS)
# token-id prompts of mixed lengths (ids 0-2 are BOS/EOS-like and stay out)
PROMPTS = [list(range(3 + i, 3 + i + n)) for i, n in enumerate((5, 17, 40, 90, 8, 130))]
START_SECONDS = 120


def fleetserve_binary() -> str:
    return shutil.which("fleetserve") or str(Path(sys.executable).with_name("fleetserve"))


@dataclass
class Served:
    process: subprocess.Popen
    port: int
    log_path: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def health(self) -> int:
        """HTTP status of /health; 0 when nothing answers."""
        try:
            with urllib.request.urlopen(f"{self.base_url}/health", timeout=2) as response:
                return response.status
        except urllib.error.HTTPError as error:
            return error.code
        except OSError:
            return 0

    def wait_healthy(self, timeout: float = START_SECONDS) -> None:
        deadline = time.monotonic() + timeout
        while self.health() != 200:
            assert self.process.poll() is None, f"fleetserve serve exited early:\n{self.log()}"
            assert time.monotonic() < deadline, f"fleetserve serve not healthy within {timeout}s:\n{self.log()}"
            time.sleep(0.3)

    def spawned_ranks(self) -> list[int]:
        """PIDs of the local ranks this process spawned (multiprocessing's resource tracker is not one)."""
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text().split()
        return [int(pid) for pid in children
                if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()
                and b"resource_tracker" not in Path(f"/proc/{pid}/cmdline").read_bytes()]


@pytest.fixture(scope="module")
def start_serve(tmp_path_factory):
    """Starts `fleetserve serve ARGS` (env added to ours); every process it started is killed after the module."""
    started: list[Served] = []
    tmp_path = tmp_path_factory.mktemp("serve")

    def start(args: list[str], env: dict | None = None, port: int | None = None) -> Served:
        port = port or free_port()
        log_path = tmp_path / f"serve-{port}.log"
        process = subprocess.Popen([fleetserve_binary(), "serve", *args, "--port", str(port)],
                                   stdout=log_path.open("w"), stderr=subprocess.STDOUT,
                                   env={**os.environ, **(env or {})})
        served = Served(process, port, log_path)
        started.append(served)
        return served

    yield start
    for served in started:  # spawned ranks die with their parent (PR_SET_PDEATHSIG)
        if served.process.poll() is None:
            served.process.send_signal(signal.SIGKILL)
        served.process.wait(timeout=30)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    import torch
    from transformers import AutoConfig, AutoTokenizer, LlamaForCausalLM

    from fleetserve.engine import loader

    path = tmp_path_factory.mktemp("models") / MODEL_NAME
    torch.manual_seed(0)
    LlamaForCausalLM(AutoConfig.from_pretrained(TINY_CONFIG)).save_pretrained(path)
    AutoTokenizer.from_pretrained(loader.builtin_dir(), gguf_file=loader.BUILTIN_GGUF).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tp1_outputs(tiny_model_dir) -> list[list[str]]:
    """Greedy tokens of every prompt from the same model in one process, no group: the reference."""
    from fleetserve.engine.config import EngineConfig
    from fleetserve.engine.llm_engine import LLMEngine
    from fleetserve.engine.sampling_params import SamplingParams

    engine = LLMEngine(EngineConfig(model=str(tiny_model_dir), **ENGINE_SETTINGS))
    params = SamplingParams(max_tokens=MAX_TOKENS, temperature=0.0, ignore_eos=True)
    outputs = engine.generate(PROMPTS, params)
    return [[engine.tokenizer.decode([t]) for t in out.new_token_ids] for out in outputs]


def complete_concurrently(base_url: str, prompts: list[list[int]], max_tokens: int = MAX_TOKENS) -> list[list[str]]:
    """Greedy completions of all prompts sent at once (so they share steps); each as its list of token texts."""
    client = openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0, timeout=120)

    def one(prompt: list[int]) -> list[str]:
        response = client.completions.create(model=MODEL_NAME, prompt=prompt, max_tokens=max_tokens, temperature=0,
                                             logprobs=0, extra_body={"ignore_eos": True})
        return response.choices[0].logprobs.tokens

    with concurrent.futures.ThreadPoolExecutor(len(prompts)) as pool:
        return list(pool.map(one, prompts))


@dataclass(frozen=True)
class TinyModel:
    """What the tests need of the tiny model (tests can't import conftest in importlib mode)."""

    path: Path
    name: str = MODEL_NAME
    prompts: tuple = tuple(PROMPTS)

    complete_concurrently = staticmethod(complete_concurrently)

    @property
    def engine_args(self) -> list[str]:
        """`fleetserve serve` flags for the same engine settings as the reference."""
        flags = ["--model", str(self.path)]
        for key, value in ENGINE_SETTINGS.items():
            flags += [f"--{key.replace('_', '-')}", str(value)]
        return flags


@pytest.fixture(scope="session")
def tiny(tiny_model_dir) -> TinyModel:
    return TinyModel(tiny_model_dir)
