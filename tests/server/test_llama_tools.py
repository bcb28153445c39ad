"""Llama 3.1's JSON tool calls through the official `openai` client. random://llama-3.1-8b (Llama 3.1's config,
shrunk, random weights) carries a Llama 3.1-style template, `engine_image/configs/llama-3.1-8b.jinja`: tools go into
the first user turn and the model is taught to answer `{"name": ..., "parameters": {...}}`. Where the grammar
decides (required, named) the real engine generates; for `auto`, whose output only a trained model would shape into
calls, the same engine answers with a scripted reply, token by token, so the server's whole path (template, parser,
stream) runs on known text, for the Hermes format too."""

import copy
import json
import os

import openai
import pytest
from tiny_servers import TOOLS, Weather, accumulated, calls_of, openai_servers, tiny_engine

from fleetserve.engine.loader import CONFIG_DIR
from fleetserve.engine.outputs import RequestOutput
from fleetserve.engine.tool_calls import tool_call_format

MODEL = "tiny-llama-3.1"


class ScriptedEngine:
    """The Llama engine with its generation replaced by a fixed reply, one token per output as the engine streams
    them; optionally with another chat template (which also picks the tool-call parser)."""

    def __init__(self, engine, reply: str, chat_template: str | None = None):
        self._engine, self.reply = engine, reply
        self.tokenizer = copy.copy(engine.tokenizer)
        if chat_template is not None:
            self.tokenizer.chat_template = chat_template

    def __getattr__(self, name):
        return getattr(self._engine, name)

    async def generate(self, request_id: str, prompt_ids: list[int], params):
        ids = self.tokenizer.encode(self.reply, add_special_tokens=False)
        text = ""
        for i, token in enumerate(ids):
            now = self.tokenizer.decode(ids[:i + 1])
            last = i == len(ids) - 1
            yield RequestOutput(request_id, [token], now[len(text):], last, "stop" if last else None,
                                len(prompt_ids), i + 1)
            text = now


@pytest.fixture(scope="module")
def llama(engine_loop):
    with tiny_engine(engine_loop, "llama-3.1-8b", MODEL, max_model_len=2048) as engine:
        yield engine


@pytest.fixture(scope="module")
def serve(engine_loop):
    with openai_servers(engine_loop) as start:
        yield start


@pytest.fixture(scope="module")
def client(llama, serve):
    return serve(llama)


def test_the_template_takes_the_tools_and_teaches_json_calls(client, llama):
    assert tool_call_format(llama.tokenizer.chat_template) == "llama_json"
    hi = [{"role": "user", "content": "Hi"}]
    with_tools = client.chat.completions.create(model=MODEL, messages=hi, tools=TOOLS, max_tokens=2, temperature=0)
    without = client.chat.completions.create(model=MODEL, messages=hi, max_tokens=2, temperature=0)
    assert with_tools.usage.prompt_tokens > without.usage.prompt_tokens + 100
    rendered = llama.tokenizer.apply_chat_template(hi, tools=TOOLS, tokenize=False, add_generation_prompt=True)
    assert '"parameters": dictionary of argument name' in rendered and '"name": "get_time"' in rendered


@pytest.mark.parametrize("tool_choice", ["required", {"type": "function", "function": {"name": "get_weather"}}])
def test_constrained_calls_stream_into_the_non_streamed_answer(client, tool_choice):
    params = dict(model=MODEL, messages=[{"role": "user", "content": "Weather in Rome?"}], tools=TOOLS,
                  tool_choice=tool_choice, max_tokens=120, temperature=0, parallel_tool_calls=False)
    reply = client.chat.completions.create(**params)
    [(name, arguments)] = calls_of(reply.choices[0].message)
    if name == "get_weather":
        Weather.model_validate_json(arguments)
    snapshot, fragments = accumulated(client.chat.completions.create(**params, stream=True))
    assert calls_of(snapshot.choices[0].message) == [(name, arguments)] and fragments > 3
    assert snapshot.choices[0].finish_reason == reply.choices[0].finish_reason


def test_agent_loop_through_the_llama_template(client):
    messages = [{"role": "user", "content": "What time is it in Paris?"}]
    first = client.chat.completions.create(model=MODEL, messages=messages, tools=TOOLS, max_tokens=40, temperature=0,
                                           tool_choice={"type": "function", "function": {"name": "get_time"}})
    [call] = first.choices[0].message.tool_calls
    assert json.loads(call.function.arguments)["zone"] in ("UTC", "CET")
    messages.append(first.choices[0].message.model_dump(exclude_none=True))
    messages.append({"role": "tool", "tool_call_id": call.id, "content": "12:00"})
    final = client.chat.completions.create(model=MODEL, messages=messages, tools=TOOLS, max_tokens=4, temperature=0)
    assert final.choices[0].finish_reason in ("stop", "length", "tool_calls")


def template(name: str) -> str:
    with open(os.path.join(CONFIG_DIR, name)) as f:
        return f.read()


LLAMA_CALLS = ('<|python_tag|>{"name": "get_weather", "parameters": {"city": "Paris", "unit": "celsius"}}; '
               '{"name": "get_time", "parameters": {"zone": "CET"}}')
HERMES_CALLS = ('Checking.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}\n'
                '</tool_call>\n<tool_call>\n{"name": "get_time", "arguments": {"zone": "CET"}}\n</tool_call>')
EXPECTED = [("get_weather", '{"city": "Paris", "unit": "celsius"}'), ("get_time", '{"zone": "CET"}')]


@pytest.mark.parametrize("chat_template, reply, content, calls", [
    (None, LLAMA_CALLS, None, EXPECTED),
    (None, ' {"city": "Paris"} is JSON, not a call.', ' {"city": "Paris"} is JSON, not a call.', []),
    ("qwen3-0.6b.jinja", HERMES_CALLS, "Checking.\n\n", EXPECTED),
])
def test_auto_calls_parse_and_stream_alike(llama, serve, chat_template, reply, content, calls):
    client = serve(ScriptedEngine(llama, reply, template(chat_template) if chat_template else None))
    params = dict(model=MODEL, messages=[{"role": "user", "content": "Weather and time in Paris?"}], tools=TOOLS)
    answer = client.chat.completions.create(**params)
    choice = answer.choices[0]
    assert (choice.message.content, calls_of(choice.message)) == (content, calls)
    assert choice.finish_reason == ("tool_calls" if calls else "stop")
    snapshot, fragments = accumulated(client.chat.completions.create(**params, stream=True))
    assert calls_of(snapshot.choices[0].message) == calls and snapshot.choices[0].finish_reason == choice.finish_reason
    assert (snapshot.choices[0].message.content or None) == content
    assert fragments > 2 * len(calls) or not calls  # the arguments came a few tokens at a time


def test_the_sdk_stream_helper_parses_llama_calls_under_auto(llama, serve):
    client = serve(ScriptedEngine(llama, '{"name": "get_weather", "parameters": {"city": "Paris", "unit": "celsius"}}'))
    tools = [openai.pydantic_function_tool(Weather, name="get_weather")]
    with client.chat.completions.stream(model=MODEL, messages=[{"role": "user", "content": "Weather?"}],
                                        tools=tools) as stream:
        done = [event for event in stream if event.type == "tool_calls.function.arguments.done"]
    assert done[0].name == "get_weather" and done[0].parsed_arguments == Weather(city="Paris", unit="celsius")
