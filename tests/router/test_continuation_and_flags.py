"""Pure parts of the router: continuing a broken stream, reading a replica's load, and the CLI's flag checks."""

import argparse

import pytest

from fleetserve.router.cli import add_arguments, check
from fleetserve.router.continuation import StreamSoFar, client_chunk, closing_chunk, continuation_request
from fleetserve.router.replicas import Replica, parse_load


def test_continuation_keeps_sampling_and_spends_the_rest_of_the_budget():
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_completion_tokens": 10,
            "temperature": 0.5, "seed": 7, "stop": ["\n\n"], "logprobs": True, "stream": True}
    request = continuation_request(body, [1, 2, 3], [9, 9, 9, 9])
    assert request == {"model": "m", "prompt": [1, 2, 3, 9, 9, 9, 9], "stream": True, "temperature": 0.5,
                       "seed": 7, "stop": ["\n\n"], "max_tokens": 6}
    assert continuation_request({"model": "m", "max_tokens": 4}, [1], [5, 5, 5, 5]) is None
    assert "max_tokens" not in continuation_request({"model": "m"}, [1], [5])


def test_a_continuation_chunk_joins_the_clients_chat_stream():
    so_far = StreamSoFar("chat")
    so_far.absorb({"id": "chatcmpl-1", "created": 5, "model": "m",
                   "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hel"}, "finish_reason": None}]})
    chunk = client_chunk(so_far, {"id": "cmpl-9", "created": 6, "model": "m", "object": "text_completion",
                                  "choices": [{"index": 0, "text": "lo", "finish_reason": "stop"}],
                                  "usage": {"prompt_tokens": 12, "completion_tokens": 1, "total_tokens": 13}}, 2)
    assert chunk["id"] == "chatcmpl-1" and chunk["created"] == 5 and chunk["object"] == "chat.completion.chunk"
    assert chunk["choices"][0]["delta"] == {"content": "lo"} and chunk["choices"][0]["finish_reason"] == "stop"
    assert chunk["usage"] == {"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13}
    so_far.absorb(chunk)
    assert so_far.text == "Hello" and so_far.finish_reason == "stop"
    assert closing_chunk(so_far)["choices"][0] == {"index": 0, "finish_reason": "length", "logprobs": None, "delta": {}}


def test_load_is_read_from_the_engines_metrics_and_not_counted_twice():
    text = ('# HELP vllm:num_requests_running x\nvllm:num_requests_running{model_name="m"} 3.0\n'
            'vllm:num_requests_waiting{model_name="m"} 2.0\nvllm:kv_cache_usage_perc{model_name="m"} 0.5\n'
            'vllm:num_requests_running_total 9\n')
    assert parse_load(text) == {"running": 3.0, "waiting": 2.0, "kv_usage": 0.5}
    replica = Replica("http://r", outstanding=2, running=3, waiting=2, outstanding_at_scrape=2)
    assert replica.load == 5  # our 2, plus 3 from elsewhere
    replica.outstanding = 0  # ours finished since the scrape: the report's stale share of them is not load
    assert replica.load == 3


def test_requests_that_finish_while_a_scrape_is_out_are_not_counted_twice():
    replica = Replica("http://r", outstanding=4)
    ours_before = replica.outstanding  # the scrape goes out; the engine counts our 4 and answers
    replica.outstanding = 1  # 3 of them finish before the answer is read
    replica.observe({"running": 4.0, "waiting": 0.0}, ours_before)
    assert replica.load == 1  # only ours still out: no other router's requests are there
    replica.outstanding = 3  # 2 sent after the answer: counted once, by us
    assert replica.load == 3


@pytest.mark.parametrize("flags, message", [
    ([], "either --backend"),
    (["--backend", "localhost:8000"], "--backend: expected an http(s) URL"),
    (["--llmdeployment", "chat"], "--llmdeployment needs --namespace"),
    (["--backend", "http://a", "--balance", "0.5"], "--balance: must be at least 1"),
    (["--backend", "http://a", "--cache-blocks", "0"], "--cache-blocks"),
    (["--backend", "http://a", "--api-key-file", "/nonexistent"], "--api-key-file"),
])
def test_bad_flags_are_named(flags, message, monkeypatch):
    monkeypatch.delenv("POD_NAMESPACE", raising=False)
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert message in check(parser.parse_args(flags))
