"""Issue 17 through the official `openai` client: what SDKs and agent frameworks send beyond a bare prompt."""

import json
from concurrent.futures import ThreadPoolExecutor
from typing import Literal

import openai
import pytest
from pydantic import BaseModel, Field

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


def test_n_choices_streamed_equal_unstreamed_and_count_the_prompt_once(client):
    params = dict(model=MODEL, messages=[{"role": "user", "content": "Tell me a story"}], max_tokens=6,
                  temperature=1.0, seed=5, n=3)
    reply = client.chat.completions.create(**params)
    assert [choice.index for choice in reply.choices] == [0, 1, 2]
    texts = [choice.message.content for choice in reply.choices]
    assert len(set(texts)) > 1  # copies draw with seeds 5, 6, 7
    single = client.chat.completions.create(**{**params, "n": 1})
    assert reply.usage.prompt_tokens == single.usage.prompt_tokens
    streamed = ["", "", ""]
    usage = None
    for chunk in client.chat.completions.create(**params, stream=True, stream_options={"include_usage": True}):
        for choice in chunk.choices:
            streamed[choice.index] += choice.delta.content or ""
        usage = chunk.usage or usage
    assert streamed == texts and usage == reply.usage


def test_batch_prompts_with_n_and_echo(client):
    reply = client.completions.create(model=MODEL, prompt=["The sky is", "Water is"], n=2, max_tokens=4,
                                      temperature=0, echo=True)
    assert [choice.index for choice in reply.choices] == [0, 1, 2, 3]
    assert [choice.text.startswith(prompt) for choice, prompt in
            zip(reply.choices, ["The sky is"] * 2 + ["Water is"] * 2)] == [True] * 4
    assert reply.choices[0].text == reply.choices[1].text  # greedy copies agree
    stream = client.completions.create(model=MODEL, prompt="The sky is", max_tokens=4, temperature=0, echo=True,
                                       stream=True)
    assert "".join(chunk.choices[0].text for chunk in stream) == reply.choices[0].text


def test_logit_bias_and_penalties_steer_greedy_output(client, engine_loop):
    token = engine_loop.engine.tokenizer.encode(" banana")[0]
    forced = client.completions.create(model=MODEL, prompt="I like", max_tokens=3, temperature=0,
                                       logit_bias={str(token): 100}, extra_body={"ignore_eos": True})
    assert forced.choices[0].text == engine_loop.engine.tokenizer.decode([token] * 3)
    base = dict(model=MODEL, prompt="The cat sat on the mat. The cat sat on the", max_tokens=16, temperature=0)
    plain = client.completions.create(**base).choices[0].text
    assert client.completions.create(**base, presence_penalty=2.0).choices[0].text != plain
    assert client.completions.create(**base, frequency_penalty=2.0).choices[0].text != plain
    assert client.completions.create(**base, extra_body={"repetition_penalty": 3.0}).choices[0].text != plain


@pytest.mark.parametrize("fields, param", [
    ({"n": 0}, "n"), ({"presence_penalty": 3}, "presence_penalty"), ({"logit_bias": {"x": 1}}, "logit_bias"),
    ({"logit_bias": {"99999999": 1}}, "logit_bias"), ({"best_of": 3}, "best_of"), ({"suffix": "end"}, "suffix"),
    ({"echo": True, "logprobs": 2}, "echo"),
])
def test_bad_sampling_fields_are_named(client, fields, param):
    with pytest.raises(openai.BadRequestError) as error:
        client.completions.create(model=MODEL, prompt="hi", max_tokens=2, **fields)
    assert error.value.body["param"] == param


class City(BaseModel):
    name: str = Field(max_length=24)
    country: Literal["France", "Germany", "Italy", "Spain"]
    population_millions: int = Field(ge=0, le=100)
    capital: bool


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_parse_with_a_pydantic_model_always_validates(client, seed):
    reply = client.chat.completions.parse(
        model=MODEL, messages=[{"role": "user", "content": "Describe a European city as JSON."}],
        response_format=City, max_tokens=120, temperature=1.0, seed=seed)
    choice = reply.choices[0]
    assert choice.finish_reason == "stop" and isinstance(choice.message.parsed, City)


def test_constrained_and_free_requests_share_a_batch(client):
    free = dict(model=MODEL, messages=[{"role": "user", "content": "Name three colours."}], max_tokens=24,
                temperature=0)
    alone = client.chat.completions.create(**free).choices[0].message.content
    with ThreadPoolExecutor(4) as pool:
        constrained = [pool.submit(client.chat.completions.parse, model=MODEL, response_format=City, max_tokens=120,
                                   messages=[{"role": "user", "content": f"City number {i} as JSON"}], temperature=0)
                       for i in range(2)]
        mixed = [pool.submit(client.chat.completions.create, **free) for _ in range(2)]
        assert [f.result().choices[0].message.content for f in mixed] == [alone] * 2  # the mask never touched them
        assert all(isinstance(f.result().choices[0].message.parsed, City) for f in constrained)


def test_json_object_and_streamed_json_schema(client):
    reply = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": 'Reply with the JSON {"ok": true}'}], max_tokens=60,
        temperature=0, response_format={"type": "json_object"})
    assert isinstance(json.loads(reply.choices[0].message.content), dict)
    schema = {"name": "city", "strict": True, "schema": City.model_json_schema()}
    text = "".join(chunk.choices[0].delta.content or "" for chunk in client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "A city as JSON"}], max_tokens=120, temperature=0,
        response_format={"type": "json_schema", "json_schema": schema}, stream=True) if chunk.choices)
    City.model_validate_json(text)


@pytest.mark.parametrize("response_format, param", [
    ({"type": "json_schema"}, "response_format.json_schema"),
    ({"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "no-such-type"}}},
     "response_format.json_schema.schema"),
    ({"type": "yaml"}, "response_format.type"),
])
def test_bad_response_formats_are_named(client, response_format, param):
    with pytest.raises(openai.BadRequestError) as error:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=4,
                                       response_format=response_format)
    assert error.value.body["param"] == param


def test_n_copies_take_the_prompt_blocks_from_the_prefix_cache(client, engine_loop):
    engine = engine_loop.engine
    prompt = " ".join(["alpha beta gamma delta"] * 25)  # 100 tokens: 6 full blocks of 16
    before = engine.stats().prefix_cache_hits
    client.completions.create(model=MODEL, prompt=prompt, max_tokens=2, n=4, temperature=1.0, seed=3)
    assert engine.stats().prefix_cache_hits - before >= 3 * 96  # copies 2-4 computed none of the full blocks
