"""Over HTTP, a fault in one request of a running batch fails that request alone: the streams beside it finish with
exactly the tokens they get without it. The fault is injected by the test (monkeypatch), never by production code;
a top_p that float32 rounds to 0 (review F1, which used to kill every stream in the step) is refused with a 400."""

import asyncio
import json

import httpx

from fleetserve.engine.sampler import Sampler

MODEL = "smollm2-135m-instruct"
FAULTY_SEED = 666


async def stream(client: httpx.AsyncClient, body: dict) -> tuple[str, str | None, dict | None]:
    """(text, finish_reason, in-band error) of one streaming completion."""
    text, finish, error = "", None, None
    async with client.stream("POST", "/v1/completions", json={**body, "stream": True}) as response:
        assert response.status_code == 200
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if "error" in chunk:
                error = chunk["error"]
            else:
                text += chunk["choices"][0]["text"]
                finish = chunk["choices"][0]["finish_reason"] or finish
    return text, finish, error


def victims() -> list[dict]:
    return [{"model": MODEL, "prompt": f"Story {i}: once upon a time", "max_tokens": 24, "temperature": t,
             "seed": 5 + i, "ignore_eos": True} for i, t in enumerate((0.0, 0.0, 0.8))]


async def test_a_faulty_request_fails_alone_and_the_batch_finishes_unchanged(server, monkeypatch):
    async with httpx.AsyncClient(base_url=server, timeout=120) as client:
        expected = await asyncio.gather(*(stream(client, body) for body in victims()))
        real_draw = Sampler._draw

        def faulty_draw(logits, p, generator):
            if p.seed == FAULTY_SEED:
                raise RuntimeError("injected sampling fault")
            return real_draw(logits, p, generator)

        monkeypatch.setattr(Sampler, "_draw", staticmethod(faulty_draw))
        faulty = {"model": MODEL, "prompt": "Hello", "max_tokens": 24, "temperature": 1.0, "seed": FAULTY_SEED}
        *got, failed = await asyncio.gather(*(stream(client, body) for body in victims() + [faulty]))
    assert got == expected and all(error is None and finish == "length" for _, finish, error in got)
    assert failed[2]["type"] == "server_error" and "injected sampling fault" in failed[2]["message"]


async def test_a_top_p_that_rounds_to_zero_is_a_400_and_harms_no_one(server):
    async with httpx.AsyncClient(base_url=server, timeout=120) as client:
        bad = {"model": MODEL, "prompt": "Hi", "max_tokens": 4, "temperature": 1, "top_p": 1e-300}
        results = await asyncio.gather(*(stream(client, body) for body in victims()[:2]),
                                       client.post("/v1/completions", json=bad))
    response = results[-1]
    assert response.status_code == 400 and response.json()["error"]["param"] == "top_p"
    assert all(error is None and finish == "length" for _, finish, error in results[:-1])
