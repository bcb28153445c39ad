"""Optional Bearer API key: the API needs it, probes and scrapes do not."""

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
