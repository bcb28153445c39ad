"""The OpenAI-compatible HTTP server: thin aiohttp handlers over an AsyncEngine.

A request flows: auth -> parse (protocol.py) -> tokenize -> admission (queue bound, draining) -> engine.generate ->
JSON or SSE. Metrics are observed on the way out. Errors the client caused become OpenAI's error JSON; nothing the
client sends can produce a 500.
"""

import asyncio
import hmac
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import aclosing, contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiohttp import web

from fleetserve.engine.metrics import ServerMetrics
from fleetserve.engine.outputs import RequestOutput
from fleetserve.engine.protocol import (ApiError, ChatCompletionRequest, CompletionRequest, chat_chunk,
                                        chat_logprobs, chat_response, check_model_name, completion_chunk,
                                        completion_logprobs, completion_response, models_response, parse_request,
                                        usage_chunk)
from fleetserve.engine.sampling_params import SamplingParams

if TYPE_CHECKING:  # the server only calls the engine; importing it here would load torch for nothing
    from fleetserve.engine.async_engine import AsyncEngine

logger = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 1
OPEN_PATHS = ("/health", "/livez", "/readyz", "/metrics")  # probes and scrapes never need the API key


@dataclass
class ServerOptions:
    max_waiting: int = 128  # 429 once the engine has this many requests waiting
    max_num_seqs: int = 256  # the engine's batch size: with max_waiting, caps the requests the server holds
    api_key: str | None = None  # None: no auth


class Admission:
    """Decides whether a new request may enter, and counts those inside so a drain knows when it is done.

    The policy bound is the engine's waiting count; `hard_limit` also caps requests the server holds before the
    engine has seen them (a burst arriving within one engine step), so memory stays bounded under any load.
    """

    def __init__(self, max_waiting: int, max_num_seqs: int):
        self.max_waiting = max_waiting
        self.hard_limit = max_waiting + max_num_seqs
        self.in_flight = 0
        self.draining = False
        self._idle = asyncio.Event()
        self._idle.set()

    @contextmanager
    def admit(self, engine_waiting: int, engine_healthy: bool) -> Iterator[None]:
        if self.draining:
            raise ApiError(503, "The server is shutting down; retry on another replica.", None, "server_draining",
                           "service_unavailable")
        if not engine_healthy:
            raise ApiError(503, "The engine is unhealthy; retry on another replica.", None, "engine_unhealthy",
                           "service_unavailable")
        if engine_waiting >= self.max_waiting or self.in_flight >= self.hard_limit:
            raise ApiError(429, f"The server is at capacity ({engine_waiting} requests waiting); retry later.",
                           None, "queue_full", "rate_limit_exceeded")
        self.in_flight += 1
        self._idle.clear()
        try:
            yield
        finally:
            self.in_flight -= 1
            if self.in_flight == 0:
                self._idle.set()

    async def drain(self, grace_seconds: float) -> bool:
        """Stops admitting and waits for the requests inside; False if the grace period ran out first."""
        self.draining = True
        try:
            await asyncio.wait_for(self._idle.wait(), grace_seconds)
            return True
        except asyncio.TimeoutError:
            return False


@dataclass
class ServerState:
    engine: "AsyncEngine"
    options: ServerOptions
    admission: Admission
    metrics: ServerMetrics
    started: int  # unix time, reported as the model's "created"


STATE = web.AppKey("state", ServerState)


def build_app(engine: "AsyncEngine", options: ServerOptions) -> web.Application:
    # middlewares run outermost first: errors wrap auth, so a 401 is rendered like any other error
    app = web.Application(middlewares=[error_middleware, auth_middleware])
    app[STATE] = ServerState(
        engine=engine, options=options, admission=Admission(options.max_waiting, options.max_num_seqs),
        metrics=ServerMetrics(engine.model_name, engine.stats), started=int(time.time()))
    app.router.add_post("/v1/completions", create_completion)
    app.router.add_post("/v1/chat/completions", create_chat_completion)
    app.router.add_get("/v1/models", list_models)
    app.router.add_get("/livez", livez)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/health", readyz)  # the older name, kept for probes and clients that use it
    app.router.add_get("/metrics", metrics)
    return app


async def start_site(app: web.Application, host: str, port: int) -> web.AppRunner:
    """Listens on host:port. handler_cancellation: a client that hangs up cancels its handler, aborting the request."""
    runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=1.0)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner


# ---- middlewares --------------------------------------------------------------------------------------------------

def error_response(error: ApiError) -> web.Response:
    headers = {"Retry-After": str(RETRY_AFTER_SECONDS)} if error.status in (429, 503) else None
    return web.json_response(error.body(), status=error.status, headers=headers)


@web.middleware
async def error_middleware(request: web.Request, handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as error:
        return error_response(error)
    except web.HTTPException as error:  # unknown route, wrong method, body too large
        if error.status < 400:
            raise
        return error_response(ApiError(error.status, error.reason, None, None,
                                       "invalid_request_error" if error.status < 500 else "server_error"))
    except Exception:
        logger.exception("unexpected error serving %s %s", request.method, request.path)
        return error_response(ApiError(500, "Internal server error.", None, None, "server_error"))


@web.middleware
async def auth_middleware(request: web.Request, handler) -> web.StreamResponse:
    api_key = request.app[STATE].options.api_key
    if api_key and request.path not in OPEN_PATHS:
        supplied = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(supplied.encode(), api_key.encode()):
            raise ApiError(401, "Incorrect or missing API key; send 'Authorization: Bearer <key>'.", None,
                           "invalid_api_key")
    return await handler(request)


# ---- handlers ---------------------------------------------------------------------------------------------------

async def readyz(request: web.Request) -> web.Response:
    """Readiness: 200 while the server admits requests; 503 while draining or once the engine is broken."""
    state = request.app[STATE]
    if state.admission.draining:
        raise ApiError(503, "draining", None, "server_draining", "service_unavailable")
    if not state.engine.healthy:
        raise ApiError(503, "engine unhealthy", None, "engine_unhealthy", "service_unavailable")
    return web.json_response({"status": "ok"})


async def livez(request: web.Request) -> web.Response:
    """Liveness: fails only when the engine is broken for good (its step loop died, a tensor-parallel rank is gone),
    so that a restart is the fix. A draining or busy server stays live: restarting it would only cut requests off."""
    if not request.app[STATE].engine.healthy:
        raise ApiError(503, "engine unhealthy", None, "engine_unhealthy", "service_unavailable")
    return web.json_response({"status": "ok"})


async def metrics(request: web.Request) -> web.Response:
    body, content_type = request.app[STATE].metrics.exposition()
    return web.Response(body=body, headers={"Content-Type": content_type})


async def list_models(request: web.Request) -> web.Response:
    state = request.app[STATE]
    return web.json_response(models_response(state.engine.model_name, state.engine.max_model_len, state.started))


async def create_completion(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    body = parse_request(CompletionRequest, await read_json(request))
    check_model_name(body.model, state.engine.model_name)
    if isinstance(body.prompt, str):
        prompt_ids = state.engine.tokenizer.encode(body.prompt)
    else:
        prompt_ids = check_token_ids(body.prompt, len(state.engine.tokenizer))
    params = body.sampling_params(len(prompt_ids), state.engine.max_model_len)
    return await generate(request, f"cmpl-{uuid.uuid4().hex}", prompt_ids, params, body, completion_chunks,
                          collect_completion)


async def create_chat_completion(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    body = parse_request(ChatCompletionRequest, await read_json(request))
    check_model_name(body.model, state.engine.model_name)
    prompt_ids = render_chat(state.engine.tokenizer, body.chat_messages())
    params = body.sampling_params(len(prompt_ids), state.engine.max_model_len)
    return await generate(request, f"chatcmpl-{uuid.uuid4().hex}", prompt_ids, params, body, chat_chunks,
                          collect_chat)


async def generate(request: web.Request, request_id: str, prompt_ids: list[int], params: SamplingParams, body,
                   to_chunks, to_response) -> web.StreamResponse:
    """Admits the request, runs it on the engine, and answers with SSE chunks or one JSON body."""
    state = request.app[STATE]
    with state.admission.admit(state.engine.stats().num_waiting, state.engine.healthy):
        async with aclosing(tracked_outputs(state, request_id, prompt_ids, params)) as outputs:
            if body.stream:
                return await write_sse(request, to_chunks(outputs, request_id, body))
            return web.json_response(await to_response(outputs, request_id, body))


# ---- request helpers --------------------------------------------------------------------------------------------

async def read_json(request: web.Request):
    raw = await request.read()
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ApiError(400, f"We could not parse the JSON body of your request: {error}", None,
                       "invalid_json") from None


def check_token_ids(token_ids: list[int], vocab_size: int) -> list[int]:
    bad = next((token for token in token_ids if not 0 <= token < vocab_size), None)
    if bad is not None:
        raise ApiError(400, f"Invalid value for 'prompt': token id {bad} is outside the vocabulary "
                       f"[0, {vocab_size}).", "prompt", "invalid_value")
    return token_ids


def render_chat(tokenizer, messages: list[dict]) -> list[int]:
    try:
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    except Exception as error:  # templates raise on role orders they do not allow (jinja's TemplateError)
        raise ApiError(400, f"Invalid value for 'messages': the model's chat template rejected them: {error}",
                       "messages", "invalid_value") from None
    # the template already wrote the special tokens it wants
    return tokenizer.encode(text, add_special_tokens=False)


async def tracked_outputs(state: ServerState, request_id: str, prompt_ids: list[int],
                          params: SamplingParams) -> AsyncIterator[RequestOutput]:
    """The engine's outputs for one request, observing token gaps and final latencies for the metrics.

    Closing this generator early (client gone, handler cancelled) closes the engine's, which aborts the request.
    """
    last_token_at = None
    async with aclosing(state.engine.generate(request_id, prompt_ids, params)) as outputs:
        async for output in outputs:
            if output.new_token_ids:
                now = time.monotonic()
                if last_token_at is not None:
                    state.metrics.observe_token_gap(now - last_token_at)
                last_token_at = now
            if output.error:  # an engine fault ended the request: the client gets a server error, not a truncation
                raise ApiError(500, f"The engine failed while serving this request: {output.error}", None, None,
                               "server_error")
            if output.finished and output.finish_reason != "abort":
                state.metrics.observe_finished(output.timings)
            yield output


async def write_sse(request: web.Request, chunks: AsyncIterator[dict]) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await response.prepare(request)
    try:
        async for chunk in chunks:
            await response.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
    except ConnectionResetError:
        logger.info("client went away mid-stream; request aborted")
        return response
    except ApiError as error:  # headers are sent: report in-band, as OpenAI does
        await response.write(b"data: " + json.dumps(error.body()).encode() + b"\n\n")
    except Exception:
        logger.exception("error while streaming")
        error = ApiError(500, "Internal server error.", None, None, "server_error")
        await response.write(b"data: " + json.dumps(error.body()).encode() + b"\n\n")
    await response.write(b"data: [DONE]\n\n")
    await response.write_eof()
    return response


async def completion_chunks(outputs: AsyncIterator[RequestOutput], request_id: str,
                            body: CompletionRequest) -> AsyncIterator[dict]:
    created, text_offset, last = int(time.time()), 0, None
    async for output in outputs:
        logprobs = completion_logprobs(output.logprobs, text_offset) if output.logprobs is not None else None
        text_offset += len(output.new_text)
        if output.new_text or output.finished or logprobs:
            yield completion_chunk(request_id, body.model, created, output.new_text,
                                   output.finish_reason if output.finished else None, logprobs, body.include_usage)
        last = output
    if body.include_usage and last is not None:
        yield usage_chunk(request_id, "text_completion", body.model, created, last.prompt_tokens,
                          last.completion_tokens)


async def chat_chunks(outputs: AsyncIterator[RequestOutput], request_id: str,
                      body: ChatCompletionRequest) -> AsyncIterator[dict]:
    created, last = int(time.time()), None
    yield chat_chunk(request_id, body.model, created, {"role": "assistant", "content": ""}, None, None,
                     body.include_usage)
    async for output in outputs:
        logprobs = chat_logprobs(output.logprobs) if output.logprobs is not None else None
        if output.new_text or output.finished or logprobs:
            delta = {"content": output.new_text} if output.new_text else {}
            yield chat_chunk(request_id, body.model, created, delta,
                             output.finish_reason if output.finished else None, logprobs, body.include_usage)
        last = output
    if body.include_usage and last is not None:
        yield usage_chunk(request_id, "chat.completion.chunk", body.model, created, last.prompt_tokens,
                          last.completion_tokens)


async def _drain_outputs(outputs: AsyncIterator[RequestOutput]) -> tuple[str, list, RequestOutput | None]:
    text, logprobs, last = [], [], None
    async for output in outputs:
        text.append(output.new_text)
        logprobs.extend(output.logprobs or [])
        last = output
    return "".join(text), logprobs, last


async def collect_completion(outputs: AsyncIterator[RequestOutput], request_id: str, body: CompletionRequest) -> dict:
    text, logprobs, last = await _drain_outputs(outputs)
    return completion_response(
        request_id, body.model, text, last.finish_reason if last else None,
        completion_logprobs(logprobs, 0) if body.logprobs is not None else None,
        last.prompt_tokens if last else 0, last.completion_tokens if last else 0)


async def collect_chat(outputs: AsyncIterator[RequestOutput], request_id: str, body: ChatCompletionRequest) -> dict:
    text, logprobs, last = await _drain_outputs(outputs)
    return chat_response(
        request_id, body.model, text, last.finish_reason if last else None,
        chat_logprobs(logprobs) if body.logprobs else None,
        last.prompt_tokens if last else 0, last.completion_tokens if last else 0)
