"""Every bad request gets a 4xx in OpenAI's error JSON naming the field, and the server keeps serving."""

import json

import httpx
import pytest

MODEL = "smollm2-135m-instruct"
MAX_MODEL_LEN = 512  # tests/server/conftest.py
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
COMPLETION = {"model": MODEL, "prompt": "hi"}

# (path, body (dict, or raw bytes sent as-is), status, param)
CASES = [
    ("/v1/completions", b"{not json", 400, None),
    ("/v1/completions", b"\xff\xfe", 400, None),
    ("/v1/completions", b"[1, 2]", 400, None),
    ("/v1/chat/completions", b"", 400, None),
    ("/v1/completions", {"prompt": "hi"}, 400, "model"),
    ("/v1/completions", {**COMPLETION, "model": "gpt-4"}, 400, "model"),
    ("/v1/chat/completions", {**CHAT, "model": "gpt-4"}, 400, "model"),
    ("/v1/completions", {**COMPLETION, "max_tokens": 0}, 400, "max_tokens"),
    ("/v1/completions", {**COMPLETION, "max_tokens": -3}, 400, "max_tokens"),
    ("/v1/completions", {**COMPLETION, "max_tokens": "10"}, 400, "max_tokens"),
    ("/v1/completions", {**COMPLETION, "max_tokens": 10.5}, 400, "max_tokens"),
    ("/v1/chat/completions", {**CHAT, "max_completion_tokens": 0}, 400, "max_completion_tokens"),
    ("/v1/completions", {**COMPLETION, "temperature": "hot"}, 400, "temperature"),
    ("/v1/completions", {**COMPLETION, "temperature": 5}, 400, "temperature"),
    ("/v1/completions", {**COMPLETION, "top_p": 1.5}, 400, "top_p"),
    ("/v1/completions", {**COMPLETION, "top_k": -2}, 400, "top_k"),
    ("/v1/completions", {**COMPLETION, "n": 300}, 400, "n"),
    ("/v1/completions", {**COMPLETION, "stream": "true"}, 400, "stream"),
    ("/v1/completions", {**COMPLETION, "stop": 42}, 400, "stop"),
    ("/v1/completions", {**COMPLETION, "logprobs": 100}, 400, "logprobs"),
    ("/v1/completions", {**COMPLETION, "echo": True, "logprobs": 2}, 400, "echo"),
    ("/v1/completions", {**COMPLETION, "frequency_penalty": 2.5}, 400, "frequency_penalty"),
    ("/v1/completions", {**COMPLETION, "logit_bias": {"999999": 1}}, 400, "logit_bias"),
    ("/v1/completions", {**COMPLETION, "seed": "abc"}, 400, "seed"),
    ("/v1/completions", {**COMPLETION, "prompt": ""}, 400, "prompt"),
    ("/v1/completions", {**COMPLETION, "prompt": {"text": "hi"}}, 400, "prompt"),
    ("/v1/completions", {**COMPLETION, "prompt": [1, -5]}, 400, "prompt"),
    ("/v1/completions", {**COMPLETION, "prompt": [10 ** 9]}, 400, "prompt"),
    ("/v1/completions", {**COMPLETION, "prompt": "word " * 2000}, 400, "prompt"),
    ("/v1/completions", {**COMPLETION, "prompt": [1] * (MAX_MODEL_LEN - 4), "max_tokens": 100}, 400, "max_tokens"),
    ("/v1/chat/completions", {**CHAT, "messages": [{"role": "user", "content": "word " * 2000}]}, 400, "messages"),
    ("/v1/completions", {**COMPLETION, "bogus_field": 1}, 400, "bogus_field"),
    ("/v1/chat/completions", {**CHAT, "functions": []}, 400, "functions"),
    ("/v1/chat/completions", {**CHAT, "messages": []}, 400, "messages"),
    ("/v1/chat/completions", {**CHAT, "messages": "hi"}, 400, "messages"),
    ("/v1/chat/completions", {**CHAT, "messages": [{"role": "wizard", "content": "x"}]}, 400, "messages[0].role"),
    ("/v1/chat/completions", {**CHAT, "messages": [{"content": "x"}]}, 400, "messages[0].role"),
    ("/v1/chat/completions", {**CHAT, "top_logprobs": 2}, 400, "top_logprobs"),
    ("/v1/chat/completions", {**CHAT, "stream_options": {"include_usage": True}}, 400, "stream_options"),
    ("/v1/nonexistent", COMPLETION, 404, None),
    ("/v1/completions", {**COMPLETION, "prompt": "x" * 2_000_000}, 413, None),  # past aiohttp's 1 MiB body cap
]


@pytest.mark.parametrize("path, body, status, param", CASES, ids=[f"{i}-{c[3]}" for i, c in enumerate(CASES)])
def test_bad_input_gets_a_clear_4xx(server, path, body, status, param):
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = httpx.post(f"{server}{path}", content=content, headers={"Content-Type": "application/json"},
                          timeout=60)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["param"] == param
    assert error["type"] == "invalid_request_error"
    assert error["message"]


def test_server_still_answers_after_bad_inputs(server):
    for path, body, _, _ in CASES:
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        httpx.post(f"{server}{path}", content=content, timeout=60)
    response = httpx.post(f"{server}/v1/completions", json={**COMPLETION, "max_tokens": 3}, timeout=60)
    assert response.status_code == 200 and response.json()["usage"]["completion_tokens"] >= 1
    assert httpx.get(f"{server}/health").status_code == 200


def test_wrong_method_is_a_json_error(server):
    response = httpx.get(f"{server}/v1/completions")
    assert response.status_code == 405 and "error" in response.json()
