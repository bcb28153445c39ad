"""Issue 17 through the official `openai` client: what SDKs and agent frameworks send beyond a bare prompt."""

import openai
import pytest

MODEL = "smollm2-135m-instruct"


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=f"{server}/v1", api_key="unused", timeout=120, max_retries=0)


def test_fields_sdks_send_by_default_are_accepted(client):
    first = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Say hi"}], max_tokens=4, temperature=0,
        store=False, metadata={"app": "test"}, service_tier="auto", reasoning_effort="low",
        response_format={"type": "text"}, parallel_tool_calls=True, stream=True,
        stream_options={"include_usage": True, "include_obfuscation": False})
    assert [chunk for chunk in first][-1].usage.completion_tokens <= 4


def test_history_round_trips_sdk_messages_and_the_tool_role(client):
    messages = [{"role": "user", "content": "What is the weather in Paris?"}]
    reply = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=4, temperature=0)
    messages.append(reply.choices[0].message.model_dump())  # refusal, annotations, audio, ... all null
    messages.append({"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": '{"city": "Paris"}'}}]})
    messages.append({"role": "tool", "tool_call_id": "call_1", "content": "sunny"})
    again = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=4, temperature=0)
    assert again.choices[0].finish_reason in ("stop", "length")


@pytest.mark.parametrize("message, param", [
    ({"role": "assistant", "content": "x", "audio": {"id": "a1"}}, "messages[0].audio"),
    ({"role": "assistant", "content": None, "tool_calls": [{"id": "c", "type": "function"}]},
     "messages[0].tool_calls[0].function"),
])
def test_meaningful_values_in_sdk_only_fields_are_named(client, message, param):
    with pytest.raises(openai.BadRequestError) as error:
        client.chat.completions.create(model=MODEL, messages=[message], max_tokens=4)
    assert error.value.body["param"] == param
