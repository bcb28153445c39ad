"""Tools through the official `openai` client: a model whose chat template takes tools (random://qwen3-0.6b, shrunk,
random weights: what it says does not matter where the grammar decides), an agent loop (call, tool result, final
answer), tool_choice auto/none/required/named, tool calls streamed as argument fragments that the SDK accumulates
into the non-streamed answer, and the parsers of every format on known text, in pieces of any size."""

import json

import openai
import pytest
from tiny_servers import TOOLS, Weather, accumulated, calls_of, openai_servers, tiny_engine

from fleetserve.engine.tool_calls import ChoiceToolCalls, stream_deltas

MODEL = "tiny-qwen3"


@pytest.fixture(scope="module")
def client(engine_loop):
    with tiny_engine(engine_loop, "qwen3-0.6b", MODEL) as engine, openai_servers(engine_loop) as serve:
        yield serve(engine)


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


def test_named_function_is_forced_and_streamed_in_fragments(client):
    named = {"type": "function", "function": {"name": "get_weather"}}
    params = dict(model=MODEL, messages=[{"role": "user", "content": "Weather?"}], tools=TOOLS, tool_choice=named,
                  max_tokens=60, temperature=0)
    reply = client.chat.completions.create(**params)
    [call] = reply.choices[0].message.tool_calls
    assert call.function.name == "get_weather" and reply.choices[0].finish_reason == "stop"
    Weather.model_validate_json(call.function.arguments)
    first = next(chunk.choices[0].delta.tool_calls[0] for chunk in client.chat.completions.create(**params, stream=True)
                 if chunk.choices[0].delta.tool_calls)
    assert (first.index, first.type, first.function.name, first.function.arguments) == (
        0, "function", "get_weather", "")
    streamed, fragments = accumulated(client.chat.completions.create(**params, stream=True))
    assert calls_of(streamed.choices[0].message) == calls_of(reply.choices[0].message)
    assert fragments > 3 and streamed.choices[0].finish_reason == "stop"  # the arguments came as they were generated


def test_required_parallel_calls_stream_into_the_same_calls(client):
    params = dict(model=MODEL, messages=[{"role": "user", "content": "Weather and time?"}], tools=TOOLS,
                  tool_choice="required", max_tokens=200, temperature=1.0)
    for seed in range(6):  # random weights: find a seed whose reply holds several calls
        reply = client.chat.completions.create(**params, seed=seed)
        if len(reply.choices[0].message.tool_calls) > 1:
            break
    calls = calls_of(reply.choices[0].message)
    assert len(calls) > 1 and reply.choices[0].finish_reason == "tool_calls"
    assert all(json.loads(arguments) is not None for _, arguments in calls)
    streamed, fragments = accumulated(client.chat.completions.create(**params, seed=seed, stream=True))
    assert calls_of(streamed.choices[0].message) == calls and fragments > len(calls)
    assert streamed.choices[0].finish_reason == "tool_calls"
    assert [call.index for call in streamed.choices[0].message.tool_calls] == list(range(len(calls)))


def test_the_sdk_stream_helper_parses_a_strict_tool(client):
    tool = openai.pydantic_function_tool(Weather, name="get_weather")
    params = dict(model=MODEL, messages=[{"role": "user", "content": "Weather?"}], tools=[tool], max_tokens=60,
                  temperature=0, tool_choice={"type": "function", "function": {"name": "get_weather"}})
    parsed = client.chat.completions.parse(**params).choices[0].message.tool_calls[0].function
    with client.chat.completions.stream(**params) as stream:
        events = [event.type for event in stream]
        final = stream.get_final_completion().choices[0].message.tool_calls[0].function
    assert isinstance(final.parsed_arguments, Weather) and final.parsed_arguments == parsed.parsed_arguments
    assert final.arguments == parsed.arguments
    assert events.count("tool_calls.function.arguments.delta") > 3 and "tool_calls.function.arguments.done" in events


def test_a_call_cut_by_max_tokens_keeps_its_partial_arguments(client):
    params = dict(model=MODEL, messages=[{"role": "user", "content": "Weather?"}], tools=TOOLS, max_tokens=6,
                  temperature=0, tool_choice={"type": "function", "function": {"name": "get_weather"}})
    reply = client.chat.completions.create(**params)
    [call] = reply.choices[0].message.tool_calls
    assert reply.choices[0].finish_reason == "length" and call.function.arguments.startswith("{")
    streamed, _ = accumulated(client.chat.completions.create(**params, stream=True))
    assert calls_of(streamed.choices[0].message) == calls_of(reply.choices[0].message)


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


def parse_in_pieces(parser_args: tuple, text: str, size: int, finish_reason: str = "stop"):
    """Feeds text in pieces of `size`; -> (content, calls accumulated from the stream's deltas, finish reason)
    after checking that the deltas accumulate into the parser's own calls (the non-streamed answer)."""
    tools, content, streamed = ChoiceToolCalls(*parser_args), "", []
    pieces = [tools.feed(text[start:start + size]) for start in range(0, len(text), size)]
    rest, deltas, reason = tools.finish(finish_reason)
    for piece_content, piece_deltas in pieces + [(rest, deltas)]:
        content += piece_content
        for chunk in stream_deltas(piece_content, piece_deltas):
            assert len({entry["index"] for entry in chunk.get("tool_calls", [])}) == len(chunk.get("tool_calls", []))
            for entry in chunk.get("tool_calls", []):
                if "id" in entry:  # a call's first delta: id, type and name, no arguments yet
                    assert entry["function"]["arguments"] == "" and entry["index"] == len(streamed)
                    streamed.append([entry["function"]["name"], ""])
                else:
                    streamed[entry["index"]][1] += entry["function"]["arguments"]
    assert streamed == [[call.name, call.arguments] for call in tools.calls]
    return content, [(name, arguments) for name, arguments in streamed], reason


HERMES_TEXT = ('Let me check.<tool_call>\n{"name": "get_weather", "arguments": {"city": "Pa}r<is\\"", "n": [1]}}\n'
               '</tool_call><tool_call>{"arguments": {"zone": "UTC"}, "name": "get_time"}</tool_call>x<tool_call>no'
               '</tool_call> <tool_ca')


@pytest.mark.parametrize("parser_args, text, finish, expected", [
    (("auto", "hermes"), HERMES_TEXT, "stop", (
        "Let me check.x<tool_call>no</tool_call> <tool_ca",
        [("get_weather", '{"city": "Pa}r<is\\"", "n": [1]}'), ("get_time", '{"zone": "UTC"}')], "tool_calls")),
    (("auto", "hermes"), 'Hi <tool_call>{"name": "get_time", "arguments": {"zo', "length", (
        "Hi ", [("get_time", '{"zo')], "length")),
    (("auto", "hermes"), 'Hi <tool_call>{"name": "get_ti', "length", ('Hi <tool_call>{"name": "get_ti', [], "length")),
    (("auto", "hermes"), '<tool_call>{"name": "get_time", "arguments": {}}\n then</tool_call>', "stop", (
        "\n then</tool_call>", [("get_time", "{}")], "tool_calls")),
    (("auto", "hermes"), '<tool_call>{"name": "get_\\x", "arguments": {}}</tool_call>', "stop", (
        '<tool_call>{"name": "get_\\x", "arguments": {}}</tool_call>', [], "stop")),
    (("auto", "llama_json"), '<|python_tag|>{"name": "get_weather", "parameters": {"city": "Paris"}}; '
                             '{"name": "get_time", "parameters": {}}', "stop", (
        "", [("get_weather", '{"city": "Paris"}'), ("get_time", "{}")], "tool_calls")),
    (("auto", "llama_json"), ' {"answer": 42}', "stop", (' {"answer": 42}', [], "stop")),
    (("auto", "llama_json"), 'Call {"name": "get_time", "parameters": {}}', "stop", (
        'Call {"name": "get_time", "parameters": {}}', [], "stop")),
    (("required", None), '[{"name":"get_weather","arguments":{"city":"Paris"}},{"name":"get_time","arguments":{}}]',
     "stop", ("", [("get_weather", '{"city":"Paris"}'), ("get_time", "{}")], "tool_calls")),
    (("required", None), '[{"name":"get_wea', "length", ('[{"name":"get_wea', [], "length")),
    (("named", None, "get_time"), '{"zone":"CET"}', "stop", ("", [("get_time", '{"zone":"CET"}')], "stop")),
    (("none", "hermes"), "<tool_call>{}</tool_call>", "stop", ("<tool_call>{}</tool_call>", [], "stop")),
    (("auto", None), '<tool_call>{"name": "f", "arguments": {}}</tool_call>', "stop", (
        '<tool_call>{"name": "f", "arguments": {}}</tool_call>', [], "stop")),
])
def test_parsers_give_the_same_calls_in_pieces_of_any_size(parser_args, text, finish, expected):
    for size in (1, 2, 3, 7, len(text)):
        assert parse_in_pieces(parser_args, text, size, finish) == expected
