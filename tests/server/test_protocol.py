"""The OpenAI request models: what they accept, what they reject (naming the field), and the SamplingParams made."""

import pytest

from fleetserve.engine.protocol import (ApiError, ChatCompletionRequest, CompletionRequest, chat_logprobs,
                                        completion_logprobs, parse_request)
from fleetserve.engine.outputs import TokenLogprob


def completion(**fields):
    return parse_request(CompletionRequest, {"model": "m", "prompt": "hi", **fields})


def chat(**fields):
    return parse_request(ChatCompletionRequest, {"model": "m", "messages": [{"role": "user", "content": "hi"}],
                                                 **fields})


@pytest.mark.parametrize("fields, param", [
    ({"max_tokens": 0}, "max_tokens"),
    ({"max_tokens": "5"}, "max_tokens"),
    ({"temperature": -0.1}, "temperature"),
    ({"temperature": True}, "temperature"),
    ({"top_p": 0}, "top_p"),
    ({"n": 0}, "n"),
    ({"n": 129}, "n"),
    ({"prompt": ["a"] * 65, "n": 2}, "n"),
    ({"logprobs": 21}, "logprobs"),
    ({"echo": True, "logprobs": 1}, "echo"),
    ({"best_of": 2}, "best_of"),
    ({"suffix": 3}, "suffix"),  # whether the model takes a suffix at all is the server's check (test_fim.py)
    ({"presence_penalty": 2.5}, "presence_penalty"),
    ({"frequency_penalty": -3}, "frequency_penalty"),
    ({"repetition_penalty": 0}, "repetition_penalty"),
    ({"repetition_penalty": float("inf")}, "repetition_penalty"),
    ({"logit_bias": {"abc": 1}}, "logit_bias"),
    ({"logit_bias": {"5": 101}}, "logit_bias"),
    ({"prompt": ["a", ""]}, "prompt"),
    ({"stop": ""}, "stop"),
    ({"stop": [1]}, "stop[0]"),
    ({"stream": "yes"}, "stream"),
    ({"stream_options": {"include_usage": True}}, "stream_options"),
    ({"stream": True, "stream_options": {"bogus": True}}, "stream_options.bogus"),
    ({"prompt": ""}, "prompt"),
    ({"prompt": []}, "prompt"),
    ({"prompt": [1, "a"]}, "prompt"),
    ({"prompt": None}, "prompt"),
    ({"frobnicate": 1}, "frobnicate"),
    ({"model": 3}, "model"),
    ({"seed": 2**64}, "seed"),
])
def test_bad_completion_fields_are_named(fields, param):
    with pytest.raises(ApiError) as caught:
        completion(**fields)
    assert caught.value.status == 400
    assert caught.value.body()["error"]["param"] == param
    assert caught.value.body()["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize("fields, param", [
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]}, "messages[0].content"),
    ({"messages": [{"role": "user"}, {"role": "user", "content": "x", "extra": 1}]}, "messages[1].extra"),
    ({"max_completion_tokens": 0}, "max_completion_tokens"),
    ({"top_logprobs": 2}, "top_logprobs"),
    ({"logprobs": 3}, "logprobs"),
    ({"tools": [{"type": "function"}]}, "tools[0].function"),
    ({"tool_choice": "required"}, "tool_choice"),
    ({"response_format": {"type": "json_object", "json_schema": {"name": "x"}}}, "response_format.json_schema"),
])
def test_bad_chat_fields_are_named(fields, param):
    with pytest.raises(ApiError) as caught:
        chat(**fields)
    assert caught.value.body()["error"]["param"] == param


def test_missing_model_and_non_object_body():
    with pytest.raises(ApiError) as caught:
        parse_request(CompletionRequest, {"prompt": "x"})
    assert caught.value.param == "model" and "Missing" in caught.value.message
    with pytest.raises(ApiError) as caught:
        parse_request(CompletionRequest, ["not", "an", "object"])
    assert caught.value.status == 400


def test_client_nulls_mean_defaults():
    params = completion(temperature=None, top_p=None, max_tokens=None, stop=None, seed=None).sampling_params(5, 100)
    assert (params.temperature, params.top_p, params.max_tokens, params.stop) == (1.0, 1.0, 16, [])


def test_completion_sampling_params():
    params = completion(max_tokens=7, temperature=0, top_k=-1, seed=3, stop="END", stop_token_ids=[2],
                        logprobs=2, ignore_eos=True).sampling_params(5, 100)
    assert (params.max_tokens, params.greedy, params.top_k, params.seed) == (7, True, 0, 3)
    assert (params.stop, params.stop_token_ids, params.logprobs, params.ignore_eos) == (["END"], [2], 2, True)


def test_prompts_are_a_batch():
    assert completion(prompt=[1, 2, 3]).prompt == [[1, 2, 3]]
    assert completion(prompt="hello").prompt == ["hello"]
    assert completion(prompt=["hello", [1, 2]]).prompt == ["hello", [1, 2]]


def test_chat_max_completion_tokens_wins_and_default_fills_the_window():
    assert chat(max_tokens=5, max_completion_tokens=9).sampling_params(10, 100).max_tokens == 9
    assert chat().sampling_params(10, 100).max_tokens == 90
    assert chat(logprobs=True, top_logprobs=3).sampling_params(10, 100).logprobs == 3
    assert chat(logprobs=True).sampling_params(10, 100).logprobs == 0
    assert chat().sampling_params(10, 100).logprobs is None


def test_chat_text_parts_are_joined():
    request = chat(messages=[{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}])
    assert request.chat_messages() == [{"role": "user", "content": "ab"}]


def test_context_window_is_checked():
    with pytest.raises(ApiError) as caught:
        completion().sampling_params(prompt_len=100, max_model_len=100)
    assert (caught.value.param, caught.value.code) == ("prompt", "context_length_exceeded")
    with pytest.raises(ApiError) as caught:
        completion(max_tokens=50).sampling_params(prompt_len=60, max_model_len=100)
    assert caught.value.param == "max_tokens"
    with pytest.raises(ApiError) as caught:
        chat(max_completion_tokens=50).sampling_params(prompt_len=60, max_model_len=100)
    assert caught.value.param == "max_completion_tokens"
    with pytest.raises(ApiError) as caught:
        chat().sampling_params(prompt_len=100, max_model_len=100)
    assert caught.value.param == "messages"
    assert completion().sampling_params(prompt_len=95, max_model_len=100).max_tokens == 5


def test_logprob_shapes():
    entries = [TokenLogprob(1, "He", -0.5, {"He": -0.5, "We": -1.5}), TokenLogprob(2, "llo", -0.1, {})]
    legacy = completion_logprobs(entries, text_offset=3)
    assert legacy == {"tokens": ["He", "llo"], "token_logprobs": [-0.5, -0.1],
                      "top_logprobs": [{"He": -0.5, "We": -1.5}, {}], "text_offset": [3, 5]}
    content = chat_logprobs(entries)["content"]
    assert content[0]["bytes"] == list(b"He")
    assert content[0]["top_logprobs"][1] == {"token": "We", "logprob": -1.5, "bytes": list(b"We")}
