"""Tools through the official `openai` client: a model whose chat template takes tools (random://qwen3-0.6b, shrunk,
random weights: what it says does not matter where the grammar decides), an agent loop (call, tool result, final
answer), tool_choice auto/none/required/named, streamed tool calls, and the Hermes parser on known text."""

import json

import openai
import pytest
from pydantic import BaseModel, Field

from fleetserve.engine.tool_calls import ChoiceToolCalls, HermesStream
from fleetserve.engine.server import ServerOptions, build_app, start_site

MODEL = "tiny-qwen3"
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


@pytest.fixture(scope="module")
def client(engine_loop):
    from fleetserve.engine.async_engine import AsyncEngine
    from fleetserve.engine.config import EngineConfig

    engine = AsyncEngine(EngineConfig(model="random://qwen3-0.6b", served_model_name=MODEL, hf_overrides=TINY,
                                      max_model_len=1024, max_num_seqs=4, device="cpu", dtype="float32"))
    engine_loop.call(engine.start(), timeout=300)

    async def serve():
        return await start_site(build_app(engine, ServerOptions(max_num_seqs=4)), "127.0.0.1", 0)

    runner = engine_loop.call(serve())
    host, port = runner.addresses[0][:2]
    yield openai.OpenAI(base_url=f"http://{host}:{port}/v1", api_key="unused", timeout=120, max_retries=0)
    engine_loop.call(runner.cleanup())
    engine_loop.call(engine.shutdown())


def test_agent_loop_call_tool_result_final_answer(client):
    messages = [{"role": "user", "content": "What is the weather in Paris?"}]
    first = client.chat.completions.create(model=MODEL, messages=messages, tools=TOOLS, tool_choice="required",
                                           max_tokens=80, temperature=1.0, seed=1, parallel_tool_calls=False)
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    [call] = choice.message.tool_calls
    assert call.id.startswith("call_") and call.function.name in ("get_weather", "get_time")
    arguments = json.loads(call.function.arguments)
    if call.function.name == "get_weather":
        Weather.model_validate(arguments)
    messages.append(choice.message.model_dump(exclude_none=True))
    messages.append({"role": "tool", "tool_call_id": call.id, "content": json.dumps({"temperature": 21})})
    final = client.chat.completions.create(model=MODEL, messages=messages, tools=TOOLS, tool_choice="none",
                                           max_tokens=8, temperature=0)
    assert final.choices[0].message.tool_calls is None
    assert isinstance(final.choices[0].message.content, str)


def test_named_function_is_forced_and_streamed(client):
    named = {"type": "function", "function": {"name": "get_weather"}}
    reply = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Weather?"}],
                                           tools=TOOLS, tool_choice=named, max_tokens=60, temperature=0)
    [call] = reply.choices[0].message.tool_calls
    assert call.function.name == "get_weather" and reply.choices[0].finish_reason == "stop"
    Weather.model_validate_json(call.function.arguments)
    deltas = [chunk.choices[0].delta for chunk in client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Weather?"}], tools=TOOLS, tool_choice=named,
        max_tokens=60, temperature=0, stream=True)]
    [streamed] = [call for delta in deltas for call in delta.tool_calls or []]
    assert (streamed.index, streamed.function.name, streamed.function.arguments) == (
        0, "get_weather", call.function.arguments)


def test_auto_renders_tools_through_the_template_and_returns_text(client, engine_loop):
    reply = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}], tools=TOOLS,
                                           max_tokens=6, temperature=0)
    assert reply.choices[0].finish_reason in ("stop", "length")
    with_tools = reply.usage.prompt_tokens
    without = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}],
                                             max_tokens=6, temperature=0).usage.prompt_tokens
    assert with_tools > without + 50  # the signatures went into the prompt


@pytest.mark.parametrize("fields, param", [
    ({"tool_choice": "required"}, "tool_choice"),
    ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}},
     "tool_choice.function.name"),
    ({"tools": [{"type": "function", "function": {"name": "bad name!"}}]}, "tools[0].function.name"),
    ({"tools": TOOLS, "tool_choice": "required", "response_format": {"type": "json_object"}}, "response_format"),
    ({"functions": []}, "functions"),
])
def test_bad_tool_requests_are_named(client, fields, param):
    with pytest.raises(openai.BadRequestError) as error:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=4,
                                       **fields)
    assert error.value.body["param"] == param


def test_hermes_stream_splits_content_and_calls_across_any_pieces():
    text = ('Let me check.<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
            '<tool_call>{"name": "get_time", "arguments": {"zone": "UTC"}}</tool_call> <tool_ca')
    for size in (1, 3, 7, len(text)):
        stream, content, calls = HermesStream(), "", []
        for start in range(0, len(text), size):
            piece_content, piece_calls = stream.feed(text[start:start + size])
            content, calls = content + piece_content, calls + piece_calls
        content += stream.finish()
        assert content == "Let me check. <tool_ca"
        assert [(c.name, json.loads(c.arguments)) for c in calls] == [
            ("get_weather", {"city": "Paris"}), ("get_time", {"zone": "UTC"})]


def test_auto_without_a_tool_call_format_and_truncated_calls_stay_content():
    plain = ChoiceToolCalls("auto", hermes=False)
    assert plain.feed("<tool_call>{}</tool_call>") == ("<tool_call>{}</tool_call>", [])
    cut = ChoiceToolCalls("required", hermes=True)
    cut.feed('[{"name": "get_ti')
    assert cut.finish("length") == ('[{"name": "get_ti', [], "length")
