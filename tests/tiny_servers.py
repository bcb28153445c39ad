"""Shrunken random-weight models behind real servers, for the tests that talk to them through the official `openai`
client (tests/server/test_tools.py, test_llama_tools.py, test_fim.py), and the tools those tests call."""

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import openai
from openai.lib.streaming.chat import ChatCompletionStreamState
from pydantic import BaseModel, Field

from fleetserve.engine.server import ServerOptions, build_app, start_site

# two layers of 64: loads and steps in well under a second on a CPU; SmolLM2's tokenizer (the random models') fits
TINY = {"num_hidden_layers": 2, "hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 2,
        "num_key_value_heads": 1, "head_dim": 32, "vocab_size": 49152, "eos_token_id": 2}  # SmolLM2's <|im_end|>


class Weather(BaseModel):
    city: str = Field(max_length=16)
    unit: str = Field(pattern="^(celsius|fahrenheit)$")


TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "Current weather",
                                      "parameters": Weather.model_json_schema(), "strict": True}},
    {"type": "function", "function": {"name": "get_time", "parameters": {
        "type": "object", "properties": {"zone": {"enum": ["UTC", "CET"]}}, "required": ["zone"],
        "additionalProperties": False}}},
]


@contextmanager
def tiny_engine(engine_loop, model: str, name: str, max_model_len: int = 1024, **overrides) -> Iterator[object]:
    """A started AsyncEngine for random://MODEL, shrunk to TINY (and overrides), on the tests' engine loop."""
    from fleetserve.engine.async_engine import AsyncEngine
    from fleetserve.engine.config import EngineConfig

    engine = AsyncEngine(EngineConfig(model=f"random://{model}", served_model_name=name,
                                      hf_overrides={**TINY, **overrides}, max_model_len=max_model_len, max_num_seqs=4,
                                      device="cpu", dtype="float32"))
    engine_loop.call(engine.start(), timeout=300)
    try:
        yield engine
    finally:
        engine_loop.call(engine.shutdown())


@contextmanager
def openai_servers(engine_loop) -> Iterator[Callable[[object], openai.OpenAI]]:
    """-> start(engine): a server in front of engine on a free loopback port, and an openai client for it; every
    server started stops on exit."""
    runners = []

    def start(engine) -> openai.OpenAI:
        runner = engine_loop.call(start_site(build_app(engine, ServerOptions(max_num_seqs=4)), "127.0.0.1", 0))
        runners.append(runner)
        host, port = runner.addresses[0][:2]
        return openai.OpenAI(base_url=f"http://{host}:{port}/v1", api_key="unused", timeout=120, max_retries=0)

    try:
        yield start
    finally:
        for runner in runners:
            engine_loop.call(runner.cleanup())


def accumulated(stream) -> tuple[object, int]:
    """A raw chat stream as the SDK's own accumulation builds it -> (the completion, the tool-call argument
    fragments seen after each call's first delta)."""
    state, fragments = ChatCompletionStreamState(), 0
    for chunk in stream:
        state.handle_chunk(chunk)
        fragments += sum(1 for choice in chunk.choices for call in choice.delta.tool_calls or []
                         if call.id is None and call.function.arguments)
    return state.current_completion_snapshot, fragments  # get_final_completion() refuses a cut reply


def calls_of(message) -> list[tuple[str, str]]:
    """A message's tool calls as (name, arguments)."""
    return [(call.function.name, call.function.arguments) for call in message.tool_calls or []]
