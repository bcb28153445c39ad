"""`fleetserve router` in front of real engines (the built-in model on the CPU), through the official openai client:
both endpoints with and without streaming, prefix affinity, retries before the first byte, and a replica killed
mid-stream whose clients still get whole answers."""

import asyncio
import signal

import httpx
import openai

from harness.ports import free_port

MODEL = "smollm2-135m-instruct"
SYSTEM = "You are a careful assistant for a shipping company. " * 12  # several 16-token blocks every chat shares


def client(router: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{router}/v1", api_key="unused", max_retries=0)


def test_openai_client_through_the_router(start_engines, start_router):
    engines = start_engines(2)
    router = start_router(list(engines))
    api = client(router)
    assert [m.id for m in api.models.list().data] == [MODEL]
    completion = api.completions.create(model=MODEL, prompt="The capital of France is", max_tokens=8, temperature=0)
    assert completion.choices[0].text and completion.usage.completion_tokens == 8
    chat = api.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Say hi."}], max_tokens=8)
    assert chat.choices[0].message.content
    pieces = [c.choices[0].delta.content or "" for c in api.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Count to five."}], max_tokens=12, stream=True) if c.choices]
    assert "".join(pieces)
    bad = httpx.post(f"{router}/v1/completions", content=b"{not json", headers={"Content-Type": "application/json"})
    assert bad.status_code == 400 and "JSON" in bad.json()["error"]["message"]
    wrong_model = httpx.post(f"{router}/v1/completions", json={"model": "nope", "prompt": "x"})
    assert wrong_model.status_code == 400 and "nope" in wrong_model.text  # the replica's own answer, passed on
    metrics = httpx.get(f"{router}/metrics").text
    assert 'fleetserve_router_requests_total{outcome="ok"}' in metrics and "fleetserve_router_decision_seconds" in metrics


def test_a_shared_prefix_stays_on_one_replica(start_engines, start_router):
    engines = start_engines(3)
    router = start_router(list(engines), "--policy", "prefix")
    replicas = set()
    for question in ("Where is my parcel?", "Can I change the address?", "How much is express?", "Do you ship abroad?"):
        answer = httpx.post(f"{router}/v1/chat/completions", timeout=60, json={
            "model": MODEL, "max_tokens": 4, "messages": [{"role": "system", "content": SYSTEM},
                                                          {"role": "user", "content": question}]})
        assert answer.status_code == 200, answer.text
        replicas.add(answer.headers["X-FleetServe-Replica"])
    assert len(replicas) == 1  # one at a time: the load bound never pushes it elsewhere


def test_a_refusing_replica_is_skipped_before_the_first_byte(start_engines, start_router):
    engines = start_engines(1)
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there: connection refused
    router = start_router([closed, *engines], "--policy", "round-robin")
    api = client(router)
    for _ in range(4):
        assert api.completions.create(model=MODEL, prompt="Hello", max_tokens=2).choices[0].text is not None


async def test_a_burst_past_every_replicas_queue_waits_in_the_router_instead_of_failing(start_engines, start_router):
    engines = start_engines(1, "--max-num-seqs", "2", "--max-waiting", "1")  # 429 past 3 at once
    router = start_router(list(engines), "--policy", "least-loaded")
    api = openai.AsyncOpenAI(base_url=f"{router}/v1", api_key="unused", max_retries=0)
    answers = await asyncio.gather(*(api.completions.create(model=MODEL, prompt=f"Story {i}:", max_tokens=8)
                                     for i in range(10)))
    assert all(a.choices[0].text is not None and a.usage.completion_tokens == 8 for a in answers)


async def test_replica_killed_mid_stream_every_client_gets_a_whole_answer(start_engines, start_router):
    engines = start_engines(2)
    router = start_router(list(engines), "--policy", "least-loaded")
    api = openai.AsyncOpenAI(base_url=f"{router}/v1", api_key="unused", max_retries=0)
    prompt = "Write a long story about a lighthouse keeper."
    max_tokens = 120

    # The same greedy stream without a failover, for comparison.
    reference = (await api.completions.create(model=MODEL, prompt=prompt, max_tokens=max_tokens, temperature=0,
                                              extra_body={"ignore_eos": True})).choices[0].text

    victim_chosen = asyncio.Event()
    victim: list[str] = []

    async def one_stream(kind: str) -> tuple[str, str | None]:
        if kind == "chat":
            response = await api.chat.completions.with_raw_response.create(
                model=MODEL, messages=[{"role": "user", "content": prompt}], max_tokens=max_tokens, temperature=0,
                stream=True, extra_body={"ignore_eos": True})
        else:
            response = await api.completions.with_raw_response.create(
                model=MODEL, prompt=prompt, max_tokens=max_tokens, temperature=0, stream=True,
                extra_body={"ignore_eos": True})
        if not victim:
            victim.append(response.headers["X-FleetServe-Replica"])
        text, finish, chunks = "", None, 0
        async for chunk in response.parse():
            for choice in chunk.choices:
                text += (choice.delta.content or "") if kind == "chat" else choice.text
                finish = choice.finish_reason or finish
            chunks += 1
            if chunks == 20:
                victim_chosen.set()
        return text, finish

    streams = [asyncio.create_task(one_stream(kind)) for kind in ("completions", "chat", "completions", "chat")]
    await asyncio.wait_for(victim_chosen.wait(), 120)
    engines[victim[0]].send_signal(signal.SIGKILL)
    results = await asyncio.wait_for(asyncio.gather(*streams), 300)
    for text, finish in results:
        assert finish == "length" and len(text) > 100
    completions_text = results[0][0]
    assert completions_text[:40] == reference[:40]
    metrics = httpx.get(f"{router}/metrics").text
    assert "fleetserve_router_failovers_total" in metrics


async def test_streams_of_a_killed_replica_wait_for_room_on_a_full_one(start_engines, start_router):
    # Each engine takes 2 running + 1 waiting. Two streams on each; when one engine dies, its two streams go to the
    # other at once: one fits its queue, the other is refused (429) until a stream there ends, and waits for it.
    engines = start_engines(2, "--max-num-seqs", "2", "--max-waiting", "1")
    router = start_router(list(engines), "--policy", "least-loaded")
    api = openai.AsyncOpenAI(base_url=f"{router}/v1", api_key="unused", max_retries=0)
    replicas: list[str] = []
    streaming = asyncio.Event()

    async def one_stream(index: int) -> tuple[str, str | None]:
        response = await api.completions.with_raw_response.create(
            model=MODEL, prompt=f"Tell story number {index}.", max_tokens=80, temperature=0, stream=True,
            extra_body={"ignore_eos": True})
        replicas.append(response.headers["X-FleetServe-Replica"])
        text, finish = "", None
        async for chunk in response.parse():
            for choice in chunk.choices:
                text += choice.text
                finish = choice.finish_reason or finish
            if len(replicas) == 4 and len(text) > 20:
                streaming.set()
        return text, finish

    streams = [asyncio.create_task(one_stream(i)) for i in range(4)]
    await asyncio.wait_for(streaming.wait(), 120)
    assert sorted(replicas.count(url) for url in engines) == [2, 2]
    engines[replicas[0]].send_signal(signal.SIGKILL)
    results = await asyncio.wait_for(asyncio.gather(*streams), 300)
    assert all(finish == "length" and len(text) > 80 for text, finish in results), results
