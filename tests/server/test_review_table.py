"""Every case of the bad-input table in shared/reviews/server-reliability.md (section 1.1, rows 1-115, and the extra
probes of 1.2) against a real server: the status, OpenAI's error JSON, and the code and param it names. The review
ran with an 8192-token context; here the window is MAX_MODEL_LEN, so the rows about its edge are scaled to it."""

import gzip
import json

import httpx
import pytest

MODEL = "smollm2-135m-instruct"
MAX_MODEL_LEN = 512  # tests/server/conftest.py
C, H = "/v1/completions", "/v1/chat/completions"
CB = {"model": MODEL, "prompt": "hi", "max_tokens": 4}
HB = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
USER = {"role": "user", "content": "hi"}


def c(**fields) -> dict:
    return {**CB, **fields}


def h(**fields) -> dict:
    return {**HB, **fields}


def without(body: dict, key: str) -> dict:
    return {k: v for k, v in body.items() if k != key}


def msgs(*messages) -> dict:
    return h(messages=list(messages))


BAD = "invalid_value"
UNKNOWN = "unknown_parameter"
TOO_LONG = "context_length_exceeded"
# row: (endpoint, body: dict or raw bytes, status, code, param)
ROWS = {
    1: (C, b'{"model": "x", "prompt": "hi"', 400, "invalid_json", None),
    2: (H, json.dumps(HB)[:-1].encode() + b",}", 400, "invalid_json", None),
    3: (C, b"[1, 2]", 400, "invalid_type", None),
    4: (C, b"null", 400, "invalid_type", None),
    5: (C, b"", 400, "invalid_json", None),
    6: (C, b'{"model": "' + MODEL.encode() + b'", "prompt": "\xff\xfe"}', 400, "invalid_json", None),
    7: (H, b'{"model": "' + MODEL.encode() + b'", "messages": [{"role": "user", "content": "\xc3("}]}', 400,
        "invalid_json", None),
    8: (C, b"x" * 10_000_000, 413, None, None),
    9: (C, b"[" * 100_000, 400, "invalid_json", None),  # was a 500 (F2)
    10: (C, without(CB, "model"), 400, "missing_required_parameter", "model"),
    11: (C, without(CB, "prompt"), 400, "missing_required_parameter", "prompt"),
    12: (C, c(model="gpt-4"), 400, "model_not_found", "model"),
    13: (C, c(max_tokens="5"), 400, BAD, "max_tokens"),
    14: (C, c(max_tokens=5.0), 400, BAD, "max_tokens"),
    15: (C, c(max_tokens=0), 400, BAD, "max_tokens"),
    16: (C, c(max_tokens=-1), 400, BAD, "max_tokens"),
    17: (C, c(max_tokens=10**9), 400, TOO_LONG, "max_tokens"),
    18: (C, c(max_tokens=2**70), 400, TOO_LONG, "max_tokens"),
    19: (C, c(temperature=-1), 400, BAD, "temperature"),
    20: (C, json.dumps(c(temperature=float("nan"))).encode(), 400, BAD, "temperature"),
    21: (C, json.dumps(c(temperature=float("inf"))).encode(), 400, BAD, "temperature"),
    22: (C, json.dumps(CB)[:-1].encode() + b', "temperature": 1e400}', 400, BAD, "temperature"),
    23: (C, c(temperature="hot"), 400, BAD, "temperature"),
    24: (C, c(temperature=1), 200, None, None),
    25: (C, c(temperature=2.5), 400, BAD, "temperature"),
    26: (C, c(temperature=1e-6), 200, None, None),
    27: (C, c(top_p=0), 400, BAD, "top_p"),
    28: (C, c(top_p=1.5), 400, BAD, "top_p"),
    29: (C, c(top_p=-0.1), 400, BAD, "top_p"),
    30: (C, json.dumps(c(top_p=float("nan"))).encode(), 400, BAD, "top_p"),
    31: (C, c(temperature=1, top_p=1e-300), 400, BAD, "top_p"),  # was a 500 that killed other streams (F1)
    32: (C, c(prompt=[1, 2, 3]), 200, None, None),
    33: (C, c(prompt=[[1, 2, 3]]), 200, None, None),
    34: (C, c(prompt=[[1, 2], [3, 4]]), 200, None, None),
    35: (C, c(prompt=["a", "b"]), 200, None, None),
    36: (C, c(prompt=[]), 400, BAD, "prompt"),
    37: (C, c(prompt=""), 400, BAD, "prompt"),
    38: (C, c(prompt=[-1]), 400, BAD, "prompt"),
    39: (C, c(prompt=[10**6]), 400, BAD, "prompt"),
    40: (C, c(prompt=[2**80]), 400, BAD, "prompt"),
    41: (C, c(prompt=[True]), 400, BAD, "prompt"),
    42: (C, c(prompt=[1, "a"]), 400, BAD, "prompt"),
    43: (C, c(prompt=[1.0, 2.0]), 400, BAD, "prompt"),
    44: (C, c(prompt="word " * (MAX_MODEL_LEN + 100)), 400, TOO_LONG, "prompt"),
    45: (C, c(prompt=[1] * MAX_MODEL_LEN), 400, TOO_LONG, "prompt"),
    46: (C, c(prompt=[1] * (MAX_MODEL_LEN - 100), max_tokens=500), 400, TOO_LONG, "max_tokens"),
    47: (C, c(prompt="x" * 900_000), 400, TOO_LONG, "prompt"),
    48: (C, c(foo=1), 400, UNKNOWN, "foo"),
    49: (C, c(stop=[f"stop{i}" for i in range(10)]), 200, None, None),
    50: (C, c(stop=[""]), 400, BAD, "stop"),
    51: (C, c(stop=123), 400, BAD, "stop"),
    52: (C, c(stop=[None]), 400, BAD, "stop[0]"),
    53: (C, c(logprobs=21), 400, BAD, "logprobs"),
    54: (C, c(logprobs=-1), 400, BAD, "logprobs"),
    55: (C, c(logprobs=5), 200, None, None),
    56: (C, c(logprobs=True), 400, BAD, "logprobs"),
    57: (C, c(n=2), 200, None, None),
    58: (C, c(n=1), 200, None, None),
    59: (C, c(stream=True, stream_options={"include_usage": True}), 200, None, None),
    60: (C, c(stream_options={"include_usage": True}), 400, BAD, "stream_options"),
    61: (C, c(stream=True, stream_options={"include_obfuscation": False}), 200, None, None),
    62: (C, c(stream="true"), 400, BAD, "stream"),
    63: (C, c(echo=True), 200, None, None),
    64: (C, c(best_of=2), 400, BAD, "best_of"),
    65: (C, c(suffix="x"), 400, BAD, "suffix"),
    66: (C, c(seed=42, user="u1"), 200, None, None),
    67: (C, c(seed=-1), 200, None, None),
    68: (C, c(seed=2**64), 400, BAD, "seed"),
    69: (C, c(logit_bias={"1": 1.0}), 200, None, None),
    70: (C, c(presence_penalty=0.5), 200, None, None),
    71: (C, c(frequency_penalty=0), 200, None, None),
    72: (C, c(top_k=10**9), 200, None, None),
    73: (C, c(top_k=-2), 400, BAD, "top_k"),
    74: (C, c(stop_token_ids=[10**12]), 200, None, None),
    75: (C, c(ignore_eos="yes"), 400, BAD, "ignore_eos"),
    76: (C, json.dumps(CB).encode(), 200, None, None),  # sent as text/plain, see CONTENT_TYPE
    77: (H, without(HB, "messages"), 400, "missing_required_parameter", "messages"),
    78: (H, h(messages=[]), 400, BAD, "messages"),
    79: (H, h(messages="hi"), 400, BAD, "messages"),
    80: (H, msgs({"role": "bot", "content": "x"}), 400, BAD, "messages[0].role"),
    81: (H, msgs({"content": "x"}), 400, "missing_required_parameter", "messages[0].role"),
    82: (H, msgs({"role": "user"}), 400, BAD, "messages"),
    83: (H, msgs({"role": "user", "content": None}), 400, BAD, "messages"),
    84: (H, msgs({"role": "user", "content": 5}), 400, BAD, "messages[0].content"),
    85: (H, msgs({"role": "user", "content": [{"type": "text", "text": "hi"}]}), 200, None, None),
    86: (H, msgs({"role": "user", "content": [{"type": "text", "text": "hi", "cache_control": {}}]}), 200, None,
         None),
    87: (H, msgs({"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://x/y.png"}}]}),
         400, BAD, "messages[0].content"),
    88: (H, msgs({"role": "user", "content": []}), 200, None, None),
    89: (H, msgs({"role": "system", "content": [{"type": "text", "text": "be brief"}]}, USER), 200, None, None),
    90: (H, msgs({"role": "developer", "content": "be brief"}, USER), 200, None, None),
    91: (H, msgs(USER, {"role": "tool", "content": "42", "tool_call_id": "t1"}), 200, None, None),
    92: (H, msgs(USER, {"role": "function", "content": "42", "name": "f"}), 400, BAD, "messages[1].role"),
    93: (H, msgs(USER, {"role": "assistant", "content": None, "tool_calls": []}), 200, None, None),
    94: (H, msgs(USER, {"role": "assistant", "content": "hello", "refusal": None}), 200, None, None),
    95: (H, msgs({"role": "assistant", "content": "hello"}), 200, None, None),
    96: (H, h(tools=[]), 200, None, None),
    97: (H, h(tool_choice="none"), 200, None, None),
    98: (H, h(parallel_tool_calls=False), 200, None, None),
    99: (H, h(response_format={"type": "json_object"}), 200, None, None),
    100: (H, h(response_format={"type": "text"}), 200, None, None),
    101: (H, h(store=False, metadata={}), 200, None, None),
    102: (H, {**without(HB, "max_tokens"), "max_completion_tokens": 4}, 200, None, None),
    103: (H, h(max_tokens=10**6), 400, TOO_LONG, "max_tokens"),
    104: (H, h(logprobs=True, top_logprobs=3), 200, None, None),
    105: (H, h(top_logprobs=3), 400, BAD, "top_logprobs"),
    106: (H, h(logprobs=True, top_logprobs=21), 400, BAD, "top_logprobs"),
    107: (H, h(logprobs=5), 400, BAD, "logprobs"),
    108: (H, h(stream=True, stream_options={"include_usage": True}), 200, None, None),
    109: (H, h(n=2), 200, None, None),
    110: (H, h(seed=1, user="u1", n=1), 200, None, None),
    111: (H, msgs({"role": "user", "content": "word " * (MAX_MODEL_LEN + 100)}), 400, TOO_LONG, "messages"),
    112: (H, msgs(*[USER] * 10_000), 400, TOO_LONG, "messages"),
    113: (H, h(reasoning_effort="low"), 200, None, None),
    114: (H, h(service_tier="auto"), 200, None, None),
    115: (H, h(functions=[]), 400, UNKNOWN, "functions"),
}
CONTENT_TYPE = {76: "text/plain"}

# section 1.2 and the fixes of issue 14: (endpoint, body, extra headers, status, code, param)
EXTRA = {
    "top_p 1e-46 rounds to 0 in float32": (C, c(temperature=1, top_p=1e-46), {}, 400, BAD, "top_p"),
    "top_p 1e-40 is a float32 subnormal": (C, c(temperature=1, top_p=1e-40), {}, 200, None, None),
    "chat messages nested 50,000 deep": (H, b'{"model": "m", "messages": ' + b"[" * 50_000, {}, 400, "invalid_json",
                                         None),
    "900-deep nesting in an unknown field": (C, json.dumps(c(foo=json.loads("[" * 900 + "]" * 900))).encode(), {},
                                             400, UNKNOWN, "foo"),
    "valid body gzipped": (C, gzip.compress(json.dumps(CB).encode()), {"Content-Encoding": "gzip"}, 200, None,
                           None),
    "gzip bomb": (C, gzip.compress(b" " * 200_000_000), {"Content-Encoding": "gzip"}, 413, None, None),
    "garbage labelled gzip": (C, b"this is not gzip", {"Content-Encoding": "gzip"}, 400, "invalid_body", None),
    "2 MB chunked body": (C, iter([b"x" * 65536] * 32), {}, 413, None, None),
    "prompt exactly the window": (C, c(prompt=[1] * (MAX_MODEL_LEN - 1), max_tokens=1), {}, 200, None, None),
    "window-filling prompt, default max_tokens": (C, without(c(prompt=[1] * (MAX_MODEL_LEN - 1)), "max_tokens"), {},
                                                  200, None, None),
    "17 stop strings": (C, c(stop=[f"s{i}" for i in range(17)]), {}, 400, BAD, "stop"),
    "a 257-character stop string": (C, c(stop=["x" * 257]), {}, 400, BAD, "stop"),
    "20,000 stop strings": (C, c(stop=["ab"] * 20_000), {}, 400, BAD, "stop"),
    "65 stop token ids": (C, c(stop_token_ids=list(range(65))), {}, 400, BAD, "stop_token_ids"),
}


def post(base: str, path: str, body, headers: dict) -> httpx.Response:
    content = body if isinstance(body, (bytes, type(iter([])))) else json.dumps(body).encode()
    return httpx.post(f"{base}{path}", content=content, headers={"Content-Type": "application/json", **headers},
                      timeout=120)


def check(response: httpx.Response, status: int, code, param) -> None:
    assert response.status_code == status, response.text[:300]
    if status == 200:
        if response.headers["Content-Type"].startswith("text/event-stream"):
            assert response.text.endswith("data: [DONE]\n\n") and '"error"' not in response.text
        else:
            assert response.json()["choices"][0]["finish_reason"] in ("stop", "length")
        return
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    assert (error["code"], error["param"]) == (code, param)
    assert error["type"] == ("invalid_request_error" if status < 500 else "server_error")


@pytest.mark.parametrize("row", sorted(ROWS), ids=[f"row{r}" for r in sorted(ROWS)])
def test_review_table_row(server, row):
    path, body, status, code, param = ROWS[row]
    headers = {"Content-Type": CONTENT_TYPE[row]} if row in CONTENT_TYPE else {}
    check(post(server, path, body, headers), status, code, param)


@pytest.mark.parametrize("probe", sorted(EXTRA))
def test_review_extra_probe(server, probe):
    path, body, headers, status, code, param = EXTRA[probe]
    check(post(server, path, body, headers), status, code, param)


def test_server_is_healthy_after_the_table(server):
    assert httpx.get(f"{server}/health", timeout=5).status_code == 200
