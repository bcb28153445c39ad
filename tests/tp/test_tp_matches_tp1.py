"""`fleetserve serve --tensor-parallel-size N` on one node: N gloo ranks give the greedy tokens of one process, for
concurrent requests too, and a rank that dies makes the replica unhealthy within seconds, without hanging."""

import os
import signal
import time

import openai
import pytest

UNHEALTHY_WITHIN_SECONDS = 5.0


@pytest.fixture(scope="module")
def tp2(start_serve, tiny):
    served = start_serve(["--tensor-parallel-size", "2", *tiny.engine_args])
    served.wait_healthy()
    return served


def test_tp2_matches_tp1(tp2, tiny, tp1_outputs):
    assert len(tp2.spawned_ranks()) == 1
    assert tiny.complete_concurrently(tp2.base_url, tiny.prompts) == tp1_outputs


def test_tp4_matches_tp1(start_serve, tiny, tp1_outputs):
    served = start_serve(["--tensor-parallel-size", "4", *tiny.engine_args])
    served.wait_healthy()
    assert len(served.spawned_ranks()) == 3
    assert tiny.complete_concurrently(served.base_url, tiny.prompts) == tp1_outputs
    served.process.send_signal(signal.SIGTERM)
    assert served.process.wait(timeout=60) == 0, served.log()


def test_killed_rank_makes_replica_unhealthy(tp2, tiny):
    client = openai.OpenAI(base_url=f"{tp2.base_url}/v1", api_key="unused", max_retries=0, timeout=30)
    stream = client.completions.create(model=tiny.name, prompt=tiny.prompts[0], max_tokens=250, temperature=0,
                                       stream=True, extra_body={"ignore_eos": True})
    next(iter(stream))  # the request is running on both ranks
    (rank1,) = tp2.spawned_ranks()
    os.kill(rank1, signal.SIGKILL)
    killed = time.monotonic()
    while tp2.health() != 503:
        assert time.monotonic() - killed < UNHEALTHY_WITHIN_SECONDS, tp2.log()
        time.sleep(0.1)
    with pytest.raises(openai.APIError):  # the in-flight request ends with an error instead of hanging
        for _ in stream:
            pass
    with pytest.raises(openai.APIStatusError) as refused:
        client.completions.create(model=tiny.name, prompt=tiny.prompts[0], max_tokens=4)
    assert refused.value.status_code == 503
