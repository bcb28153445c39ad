"""The official `openai` client against our server: completions, chat, streaming with usage, logprobs, stops."""

import httpx
import openai
import pytest

MODEL = "smollm2-135m-instruct"


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=f"{server}/v1", api_key="unused", timeout=120, max_retries=0)


def test_models_lists_the_served_model(client):
    assert [model.id for model in client.models.list().data] == [MODEL]


def test_completion(client):
    completion = client.completions.create(model=MODEL, prompt="The capital of France is", max_tokens=8,
                                           temperature=0)
    choice = completion.choices[0]
    assert choice.text and choice.finish_reason in ("length", "stop")
    assert completion.usage.completion_tokens <= 8
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens


def test_greedy_is_repeatable_and_seeded_sampling_reproducible(client):
    def complete(**params):
        return client.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=12, **params)

    assert complete(temperature=0).choices[0].text == complete(temperature=0).choices[0].text
    assert complete(temperature=1, seed=7).choices[0].text == complete(temperature=1, seed=7).choices[0].text


def test_token_id_prompt_matches_text_prompt(client, engine_loop):
    params = {"model": MODEL, "max_tokens": 8, "temperature": 0}
    by_text = client.completions.create(prompt="Hello there, my name is", **params)
    token_ids = engine_loop.engine.tokenizer.encode("Hello there, my name is")
    by_ids = client.completions.create(prompt=token_ids, **params)
    assert by_ids.choices[0].text == by_text.choices[0].text
    assert by_ids.usage.prompt_tokens == by_text.usage.prompt_tokens == len(token_ids)


def test_chat(client):
    chat = client.chat.completions.create(model=MODEL, messages=[
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Say hello."}], max_completion_tokens=16, temperature=0)
    choice = chat.choices[0]
    assert choice.message.role == "assistant" and choice.message.content
    assert chat.usage.completion_tokens <= 16


def test_streamed_completion_equals_the_unstreamed_one_and_ends_with_usage(client):
    prompt, params = "The three primary colours are", {"max_tokens": 16, "temperature": 0}
    whole = client.completions.create(model=MODEL, prompt=prompt, **params)
    chunks = list(client.completions.create(model=MODEL, prompt=prompt, stream=True,
                                            stream_options={"include_usage": True}, **params))
    assert "".join(chunk.choices[0].text for chunk in chunks if chunk.choices) == whole.choices[0].text
    assert [chunk.choices[0].finish_reason for chunk in chunks if chunk.choices][-1] == whole.choices[0].finish_reason
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_streamed_chat(client):
    chunks = list(client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Count to five."}], max_tokens=20, temperature=0,
        stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert text
    assert chunks[-1].usage.completion_tokens <= 20
    assert [chunk.choices[0].finish_reason for chunk in chunks if chunk.choices][-1] in ("length", "stop")


def test_stream_without_usage_has_no_usage_chunk(client):
    chunks = list(client.completions.create(model=MODEL, prompt="Hi", max_tokens=4, temperature=0, stream=True))
    assert all(chunk.choices and chunk.usage is None for chunk in chunks)


def test_completion_logprobs(client):
    completion = client.completions.create(model=MODEL, prompt="1, 2, 3,", max_tokens=4, temperature=0,
                                           logprobs=2)
    logprobs = completion.choices[0].logprobs
    assert len(logprobs.tokens) == len(logprobs.token_logprobs) == completion.usage.completion_tokens
    assert all(lp <= 0 for lp in logprobs.token_logprobs)
    assert all(len(top) <= 2 for top in logprobs.top_logprobs)
    assert "".join(logprobs.tokens) == completion.choices[0].text


def test_chat_logprobs(client):
    chat = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=4,
                                          temperature=0, logprobs=True, top_logprobs=3)
    content = chat.choices[0].logprobs.content
    assert len(content) == chat.usage.completion_tokens
    assert all(len(entry.top_logprobs) <= 3 and entry.logprob <= 0 for entry in content)


def test_stop_string_is_not_returned(client):
    params = {"model": MODEL, "prompt": "1, 2, 3, 4, 5, 6,", "max_tokens": 12, "temperature": 0}
    free = client.completions.create(**params).choices[0].text
    assert len(free) > 2
    stop = free[1:3]
    stopped = client.completions.create(stop=[stop], **params).choices[0]
    assert stop not in stopped.text and stopped.finish_reason == "stop"
    assert free.startswith(stopped.text)


def test_extensions_top_k_and_ignore_eos(client):
    completion = client.completions.create(model=MODEL, prompt="Hi", max_tokens=24, temperature=0.8,
                                           extra_body={"top_k": 5, "ignore_eos": True})
    assert completion.usage.completion_tokens == 24 and completion.choices[0].finish_reason == "length"


def test_health_and_metrics_endpoints(server):
    assert httpx.get(f"{server}/health").status_code == 200
    metrics = httpx.get(f"{server}/metrics")
    assert metrics.status_code == 200 and "vllm:num_requests_running" in metrics.text


def test_extreme_but_valid_sampling_values_act_greedy(client):
    params = {"model": MODEL, "prompt": "The ocean is", "max_tokens": 8}
    greedy = client.completions.create(temperature=0, **params).choices[0].text
    for extreme in ({"temperature": 1e-6}, {"temperature": 2.0, "top_p": 1e-9}, {"temperature": 2.0,
                                                                               "extra_body": {"top_k": 1}}):
        assert client.completions.create(**params, **extreme).choices[0].text == greedy, extreme
