"""Optional Bearer API key: the API needs it, probes and scrapes do not."""

import json
import socket

import httpx
import openai
import pytest

MODEL = "smollm2-135m-instruct"
KEY = "s3cret-key"


@pytest.fixture(scope="module")
def secured(start_server):
    return start_server(api_key=KEY)


def test_wrong_or_missing_key_is_401_in_openai_json(secured):
    client = openai.OpenAI(base_url=f"{secured}/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        client.models.list()
    response = httpx.post(f"{secured}/v1/completions", json={"model": MODEL, "prompt": "hi"})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"


def test_right_key_is_served(secured):
    client = openai.OpenAI(base_url=f"{secured}/v1", api_key=KEY, max_retries=0, timeout=60)
    completion = client.completions.create(model=MODEL, prompt="Hello", max_tokens=2)
    assert completion.usage.completion_tokens >= 1


def test_health_and_metrics_stay_open(secured):
    assert httpx.get(f"{secured}/health").status_code == 200
    assert httpx.get(f"{secured}/metrics").status_code == 200


def raw_get(base: str, authorization: bytes | None, path: str = "/v1/models") -> tuple[int, bytes, dict]:
    """GET over a raw socket, so the header goes out byte for byte (HTTP clients refuse some of these).
    Returns (status, body, headers)."""
    host, port = base.removeprefix("http://").split(":")
    request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n".encode()
    if authorization is not None:
        request += b"Authorization: " + authorization + b"\r\n"
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(request + b"\r\n")
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), body, headers


# the review's auth table (shared/reviews/server-reliability.md, section 5), with F3 and F9 fixed
@pytest.mark.parametrize("authorization, status", [
    (None, 401), (b"Bearer wrong", 401), (b"Bearer s3cret-ke", 401), (b"Basic czNjcmV0LWtleQ==", 401),
    (b"Bearer " + KEY.encode(), 200), (b"Bearer  " + KEY.encode() + b" ", 200),
    (b"bearer " + KEY.encode(), 200), (b"BEARER " + KEY.encode(), 200),  # schemes are case-insensitive
    (KEY.encode(), 401),  # the scheme is required
    (b"Bearer s3cr\xe9t-key", 401),  # a raw non-UTF-8 byte: was a 500
    ("Bearer s3crét-key".encode(), 401),
])
def test_authorization_header_cases(secured, authorization, status):
    got, body, headers = raw_get(secured, authorization)
    assert got == status, body
    if status == 401:
        assert headers["WWW-Authenticate"] == "Bearer"
        assert json.loads(body)["error"]["code"] == "invalid_api_key"


@pytest.mark.parametrize("path", ["/health/", "/health/../v1/models", "/health%2F..%2Fv1%2Fmodels", "/nope"])
def test_no_bypass_through_path_tricks(secured, path):
    assert raw_get(secured, None, path)[0] == 401


def test_open_paths_keep_their_method_checks(secured):
    assert httpx.get(f"{secured}/livez").status_code == 200 and httpx.get(f"{secured}/readyz").status_code == 200
    response = httpx.post(f"{secured}/health")
    assert response.status_code == 405 and "error" in response.json()
