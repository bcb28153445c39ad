"""The OpenAI-compatible HTTP server: thin aiohttp handlers over an AsyncEngine.

A request flows: auth -> read the body -> admission (queue bound, draining) -> parse (protocol.py) and tokenize in a
worker thread -> engine.generate -> JSON or SSE. Metrics are observed on the way out. Errors the client caused
become OpenAI's error JSON; nothing the client sends can produce a 500. Only cheap per-request work runs on the
event loop, so probes answer at once under any mix of requests.
"""

import asyncio
import dataclasses
import functools
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
from fleetserve.engine.protocol import (ApiError, ChatCompletionRequest, CompletionRequest, assistant_message,
                                        chat_chunk, chat_logprobs, chat_response, check_model_name, completion_chunk,
                                        completion_logprobs, completion_response, models_response, parse_request,
                                        usage_chunk)
from fleetserve.engine.sampling_params import SamplingParams
from fleetserve.engine.tokenizer_export import tokenizer_handler
from fleetserve.engine.tool_calls import ChoiceToolCalls, stream_deltas, tool_call_format

if TYPE_CHECKING:  # the server only calls the engine; importing it here would load torch for nothing
    from fleetserve.engine.async_engine import AsyncEngine

logger = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 1
OPEN_PATHS = ("/health", "/livez", "/readyz", "/metrics")  # probes and scrapes never need the API key


@dataclass
class ServerOptions:
    max_waiting: int = 256  # 429 once this many requests wait beyond the batch's free slots
    max_num_seqs: int = 256  # the engine's batch size: with max_waiting, caps the requests the server holds
    api_key: str | None = None  # None: no auth
    keepalive_timeout: float = 75.0  # an idle connection, or one still sending its headers, is closed after this
    body_timeout: float = 30.0  # a client that takes longer to send its body gets 408
    write_timeout: float = 30.0  # a stream whose reader takes no data for this long is aborted


class Admission:
    """Decides whether a new request may enter, and counts those inside so a drain knows when it is done.

    A request may wait only if the engine's queue, less the batch's free slots, is under `max_waiting`: requests
    just handed over wait only until the next step schedules them, so a burst of `max_num_seqs + max_waiting`
    on an idle server all gets in. `hard_limit` caps the requests the server holds in all (those still being
    tokenised too), so memory stays bounded under any load.
    """

    def __init__(self, max_waiting: int, max_num_seqs: int):
        self.max_waiting = max_waiting
        self.max_num_seqs = max_num_seqs
        self.hard_limit = max_waiting + max_num_seqs
        self.in_flight = 0
        self.draining = False
        self._idle = asyncio.Event()
        self._idle.set()

    @contextmanager
    def admit(self, engine_running: int, engine_waiting: int, engine_healthy: bool) -> Iterator[None]:
        if self.draining:
            raise ApiError(503, "The server is shutting down; retry on another replica.", None, "server_draining",
                           "service_unavailable")
        if not engine_healthy:
            raise ApiError(503, "The engine is unhealthy; retry on another replica.", None, "engine_unhealthy",
                           "service_unavailable")
        free_slots = max(0, self.max_num_seqs - engine_running)
        if engine_waiting - free_slots >= self.max_waiting or self.in_flight >= self.hard_limit:
            raise ApiError(429, f"The server is at capacity ({engine_running} requests running, {engine_waiting} "
                           "waiting); retry later.", None, "queue_full", "rate_limit_exceeded")
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
        metrics=ServerMetrics(engine.model_name, engine.stats, engine.max_model_len), started=int(time.time()))
    app.router.add_post("/v1/completions", create_completion)
    app.router.add_post("/v1/chat/completions", create_chat_completion)
    app.router.add_get("/v1/models", list_models)
    app.router.add_get("/v1/tokenizer", tokenizer_handler(engine))
    app.router.add_get("/livez", livez)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/health", readyz)  # the older name, kept for probes and clients that use it
    app.router.add_get("/metrics", metrics)
    return app


async def start_site(app: web.Application, host: str, port: int) -> web.AppRunner:
    """Listens on host:port. handler_cancellation: a client that hangs up cancels its handler, aborting the request.
    aiohttp arms the keep-alive timer at connect and resets it only after a response, so it also bounds how long a
    client may take to send its headers."""
    runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=1.0,
                           keepalive_timeout=app[STATE].options.keepalive_timeout)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner


# ---- middlewares --------------------------------------------------------------------------------------------------

def error_response(error: ApiError) -> web.Response:
    headers = None
    if error.status in (429, 503):
        headers = {"Retry-After": str(RETRY_AFTER_SECONDS)}
    elif error.status == 401:
        headers = {"WWW-Authenticate": "Bearer"}  # RFC 6750: a 401 names the scheme it wants
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
        if not hmac.compare_digest(bearer_token(request.headers.get("Authorization", "")), api_key.encode()):
            raise ApiError(401, "Incorrect or missing API key; send 'Authorization: Bearer <key>'.", None,
                           "invalid_api_key")
    return await handler(request)


def bearer_token(header: str) -> bytes:
    """The credentials of a Bearer Authorization header (the scheme is case-insensitive, RFC 7235), as the bytes
    the client sent: aiohttp keeps non-UTF-8 header bytes as surrogate escapes. b"" for any other scheme."""
    scheme, _, token = header.strip().partition(" ")
    return token.strip().encode("utf-8", "surrogateescape") if scheme.lower() == "bearer" else b""


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


@dataclass
class Choice:
    """One sequence a request asks for: prompt i's copies are choices i*n .. i*n+n-1."""

    prompt_ids: list[int]
    params: SamplingParams
    echo: str = ""  # completions' echo: the prompt's text, returned before the completion


FIM_TOKENS = (("<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"),  # Qwen2.5-Coder
              ("<fim_prefix>", "<fim_suffix>", "<fim_middle>"))  # StarCoder, StarCoder2, SantaCoder


def fim_token_ids(tokenizer, vocab_size: int) -> tuple[int, int, int] | None:
    """The tokenizer's fill-in-the-middle tokens (prefix, suffix, middle), None if it has no set of them."""
    for names in FIM_TOKENS:
        ids = [tokenizer.convert_tokens_to_ids(name) for name in names]
        if all(isinstance(i, int) and 0 <= i < vocab_size and tokenizer.convert_ids_to_tokens(i) == name
               for i, name in zip(ids, names)):
            return ids[0], ids[1], ids[2]
    return None


def prepare_completion(raw: bytes, engine: "AsyncEngine") -> tuple[CompletionRequest, list[Choice]]:
    body = parse_request(CompletionRequest, decode_json(raw))
    check_model_name(body.model, engine.model_name)
    fim = fim_token_ids(engine.tokenizer, engine.vocab_size) if body.suffix else None
    if body.suffix and fim is None:
        raise ApiError(400, "Invalid value for 'suffix': this model has no fill-in-the-middle tokens "
                       f"({', '.join(FIM_TOKENS[0])} or {', '.join(FIM_TOKENS[1])}).", "suffix", "invalid_value")
    suffix_ids = engine.tokenizer.encode(body.suffix, add_special_tokens=False) if fim is not None else []
    choices = []
    for prompt in body.prompt:
        if isinstance(prompt, str):
            prompt_ids, text = engine.tokenizer.encode(prompt, add_special_tokens=fim is None), prompt
        else:
            prompt_ids = check_token_ids(prompt, engine.vocab_size)
            text = engine.tokenizer.decode(prompt_ids) if body.echo else ""
        if fim is not None:  # PSM order: the model writes what goes between prompt and suffix
            prompt_ids = [fim[0], *prompt_ids, fim[1], *suffix_ids, fim[2]]
        params = body.sampling_params(len(prompt_ids), engine.max_model_len)
        choices += copies(prompt_ids, params, body.num_choices_per_prompt, text if body.echo else "")
    check_logit_bias(body.logit_bias, engine.vocab_size)
    return body, choices


def prepare_chat(raw: bytes, engine: "AsyncEngine") -> tuple[ChatCompletionRequest, list[Choice]]:
    body = parse_request(ChatCompletionRequest, decode_json(raw))
    check_model_name(body.model, engine.model_name)
    prompt_ids = render_chat(engine.tokenizer, body.chat_messages(), body.template_tools())
    check_logit_bias(body.logit_bias, engine.vocab_size)
    params = body.sampling_params(len(prompt_ids), engine.max_model_len)
    if body.response_format is not None and body.response_format.constrained:
        params.grammar = compile_json_schema(engine, body.response_format.schema, "response_format.json_schema.schema")
    elif body.tool_mode in ("required", "named"):
        params.grammar = compile_json_schema(engine, body.tool_call_schema(), "tools")
    return body, copies(prompt_ids, params, body.num_choices_per_prompt)


def compile_json_schema(engine: "AsyncEngine", schema: dict | None, param: str):
    """The grammar for a JSON schema (None: any object), compiled here in the worker thread, not on the engine's."""
    from fleetserve.engine.structured_output import grammar_compiler  # xgrammar and torch: only once needed

    compiler = grammar_compiler(engine.tokenizer, engine.vocab_size, tuple(sorted(engine.eos_token_ids)))
    try:
        return compiler.json_schema(schema)
    except ValueError as error:
        raise ApiError(400, f"Invalid value for '{param}': the schema does not compile: {error}", param,
                       "invalid_value") from None


def copies(prompt_ids: list[int], params: SamplingParams, n: int, echo: str = "") -> list[Choice]:
    """n choices of one prompt; a seeded request's copies get seeds seed, seed+1, ... so they differ yet repeat."""
    return [Choice(prompt_ids, params if params.seed is None or i == 0 else
                   dataclasses.replace(params, seed=params.seed + i), echo) for i in range(n)]


async def create_completion(request: web.Request) -> web.StreamResponse:
    return await generate(request, f"cmpl-{uuid.uuid4().hex}", prepare_completion, completion_chunks,
                          collect_completion)


async def create_chat_completion(request: web.Request) -> web.StreamResponse:
    tokenizer = request.app[STATE].engine.tokenizer  # its template tells how the model writes tool calls
    return await generate(request, f"chatcmpl-{uuid.uuid4().hex}", prepare_chat,
                          functools.partial(chat_chunks, tokenizer=tokenizer),
                          functools.partial(collect_chat, tokenizer=tokenizer))


async def generate(request: web.Request, request_id: str, prepare, to_chunks, to_response) -> web.StreamResponse:
    """Admits the request, parses and tokenises it in a worker thread (JSON decoding, validation, chat templates
    and tokenising a megabyte prompt take tenths of a second of CPU), runs it on the engine, and answers with SSE
    chunks or one JSON body. Admission comes first, so a full or draining server spends nothing on a request."""
    state = request.app[STATE]
    raw = await read_body(request, state.options.body_timeout)
    stats = state.engine.stats()
    with state.admission.admit(stats.num_running, stats.num_waiting, state.engine.healthy):
        body, choices = await asyncio.to_thread(prepare, raw, state.engine)
        async with aclosing(choice_outputs(state, request_id, choices)) as outputs:
            if body.stream:
                return await write_sse(request, to_chunks(outputs, request_id, body, choices),
                                       state.options.write_timeout)
            return web.json_response(await to_response(outputs, request_id, body, choices))


# ---- request helpers --------------------------------------------------------------------------------------------

async def read_body(request: web.Request, timeout: float) -> bytes:
    try:
        async with asyncio.timeout(timeout):
            return await request.read()
    except TimeoutError:
        raise ApiError(408, f"The request body did not arrive within {timeout:g} s.", None,
                       "request_timeout") from None
    except web.RequestPayloadError as error:  # e.g. a body that does not decode as its Content-Encoding says
        raise ApiError(400, f"We could not read the body of your request: {error}", None, "invalid_body") from None


def decode_json(raw: bytes):
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as error:  # ValueError: bad JSON or UTF-8; RecursionError: nesting too deep
        reason = "it nests too deeply" if isinstance(error, RecursionError) else str(error)
        raise ApiError(400, f"We could not parse the JSON body of your request: {reason}", None,
                       "invalid_json") from None


def check_token_ids(token_ids: list[int], vocab_size: int) -> list[int]:
    bad = next((token for token in token_ids if not 0 <= token < vocab_size), None)
    if bad is not None:
        raise ApiError(400, f"Invalid value for 'prompt': token id {bad} is outside the vocabulary "
                       f"[0, {vocab_size}).", "prompt", "invalid_value")
    return token_ids


def check_logit_bias(logit_bias: dict[str, float] | None, vocab_size: int) -> None:
    bad = next((token for token in logit_bias or {} if int(token) >= vocab_size), None)
    if bad is not None:
        raise ApiError(400, f"Invalid value for 'logit_bias': token id {bad} is outside the vocabulary "
                       f"[0, {vocab_size}).", "logit_bias", "invalid_value")


def render_chat(tokenizer, messages: list[dict], tools: list[dict] | None = None) -> list[int]:
    try:  # a template that does not know tools ignores them (as in vLLM); required/named calls still work
        text = tokenizer.apply_chat_template(messages, tools=tools, tokenize=False, add_generation_prompt=True)
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
                state.metrics.observe_finished(output)
            yield output


async def choice_outputs(state: ServerState, request_id: str, choices: list[Choice]
                         ) -> AsyncIterator[tuple[int, RequestOutput]]:
    """Every choice's outputs as they come, with the choice's index. A prompt's first copy runs alone until its
    prefill is done (its first token), so its other copies find the prompt's full blocks in the prefix cache
    instead of computing them again. Closing this closes every choice's outputs, aborting them."""
    if len(choices) == 1:  # the common case, without tasks
        async with aclosing(tracked_outputs(state, request_id, choices[0].prompt_ids, choices[0].params)) as outputs:
            async for output in outputs:
                yield 0, output
        return
    queue: asyncio.Queue = asyncio.Queue()

    async def pump(index: int) -> None:
        try:
            async with aclosing(tracked_outputs(state, f"{request_id}-{index}", choices[index].prompt_ids,
                                                choices[index].params)) as outputs:
                async for output in outputs:
                    queue.put_nowait((index, output, None))
            queue.put_nowait((index, None, None))
        except Exception as error:  # noqa: BLE001 - handed to the consumer, which raises it
            queue.put_nowait((index, None, error))

    # a prompt's copies share its prompt_ids list (see copies())
    leaders = [i for i, choice in enumerate(choices) if i == 0 or choice.prompt_ids is not choices[i - 1].prompt_ids]
    followers = {leader: range(leader + 1, next((j for j in leaders if j > leader), len(choices)))
                 for leader in leaders}
    tasks = [asyncio.create_task(pump(i)) for i in leaders]
    ended = 0
    try:
        while ended < len(choices):
            index, output, error = await queue.get()
            if error is not None:
                raise error
            for follower in followers.pop(index, ()):  # the leader's first output: its prompt is cached
                tasks.append(asyncio.create_task(pump(follower)))
            if output is None:
                ended += 1
            else:
                yield index, output
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def write_sse(request: web.Request, chunks: AsyncIterator[dict], write_timeout: float) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await response.prepare(request)
    try:
        async for chunk in chunks:
            async with asyncio.timeout(write_timeout):  # a write blocks only while the client's buffers are full
                await response.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
    except ConnectionResetError:
        logger.info("client went away mid-stream; request aborted")
        return response
    except TimeoutError:
        logger.info("client read nothing for %g s; request aborted", write_timeout)
        request.transport.close()
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


def usage_of(choices: list[Choice], last: dict[int, RequestOutput]) -> tuple[int, int]:
    """(prompt tokens, completion tokens): each prompt counted once, as OpenAI does for n > 1."""
    prompt = sum(output.prompt_tokens for i, output in last.items()
                 if i == 0 or choices[i].prompt_ids is not choices[i - 1].prompt_ids)
    return prompt, sum(output.completion_tokens for output in last.values())


async def completion_chunks(outputs: AsyncIterator[tuple[int, RequestOutput]], request_id: str,
                            body: CompletionRequest, choices: list[Choice]) -> AsyncIterator[dict]:
    created, text_offsets, last = int(time.time()), [0] * len(choices), {}
    async for index, output in outputs:
        text = output.new_text
        if index not in last and choices[index].echo:
            text = choices[index].echo + text
        logprobs = completion_logprobs(output.logprobs, text_offsets[index]) if output.logprobs is not None else None
        text_offsets[index] += len(text)
        # A step that produced tokens sends a chunk even when they carry no text yet (part of a character, a token
        # with no text of its own), as vLLM does: the client learns at once that its request is generating, and
        # a time to first token measured from the stream is the first token's, not the first visible character's.
        if text or output.finished or logprobs or output.new_token_ids:
            yield completion_chunk(request_id, body.model, created, text,
                                   output.finish_reason if output.finished else None, logprobs, body.include_usage,
                                   index)
        last[index] = output
    if body.include_usage and last:
        yield usage_chunk(request_id, "text_completion", body.model, created, *usage_of(choices, last))


def tool_calls_of(body: ChatCompletionRequest, tokenizer) -> ChoiceToolCalls:
    """The parser of one choice's output; the chat template tells how the model writes calls under "auto"."""
    name = body.tool_choice.function.name if body.tool_mode == "named" else None
    return ChoiceToolCalls(body.tool_mode, tool_call_format(getattr(tokenizer, "chat_template", None)), name)


async def chat_chunks(outputs: AsyncIterator[tuple[int, RequestOutput]], request_id: str,
                      body: ChatCompletionRequest, choices: list[Choice], tokenizer) -> AsyncIterator[dict]:
    created, last = int(time.time()), {}
    tools = [tool_calls_of(body, tokenizer) for _ in choices]
    for index in range(len(choices)):
        yield chat_chunk(request_id, body.model, created, {"role": "assistant", "content": ""}, None, None,
                         body.include_usage, index)
    async for index, output in outputs:
        logprobs = chat_logprobs(output.logprobs) if output.logprobs is not None else None
        content, deltas = tools[index].feed(output.new_text)
        reason = output.finish_reason
        if output.finished:
            rest, more, reason = tools[index].finish(output.finish_reason)
            content, deltas = content + rest, deltas + more
        if content or deltas or output.finished or logprobs:
            parts = stream_deltas(content, deltas)  # a call's first delta and its fragments go in separate chunks
            for i, delta in enumerate(parts):
                yield chat_chunk(request_id, body.model, created, delta,
                                 reason if output.finished and i == len(parts) - 1 else None,
                                 logprobs if i == 0 else None, body.include_usage, index)
        last[index] = output
    if body.include_usage and last:
        yield usage_chunk(request_id, "chat.completion.chunk", body.model, created, *usage_of(choices, last))


async def _drain_outputs(outputs: AsyncIterator[tuple[int, RequestOutput]], choices: list[Choice]
                         ) -> tuple[list[str], list[list], dict[int, RequestOutput]]:
    texts, logprobs, last = [[choice.echo] for choice in choices], [[] for _ in choices], {}
    async for index, output in outputs:
        texts[index].append(output.new_text)
        logprobs[index].extend(output.logprobs or [])
        last[index] = output
    return ["".join(text) for text in texts], logprobs, last


def _finish_reason(last: dict[int, RequestOutput], index: int) -> str | None:
    return last[index].finish_reason if index in last else None


async def collect_completion(outputs: AsyncIterator[tuple[int, RequestOutput]], request_id: str,
                             body: CompletionRequest, choices: list[Choice]) -> dict:
    texts, logprobs, last = await _drain_outputs(outputs, choices)
    return completion_response(
        request_id, body.model,
        [(text, _finish_reason(last, i), completion_logprobs(logprobs[i], 0) if body.logprobs is not None else None)
         for i, text in enumerate(texts)],
        *usage_of(choices, last))


async def collect_chat(outputs: AsyncIterator[tuple[int, RequestOutput]], request_id: str,
                       body: ChatCompletionRequest, choices: list[Choice], tokenizer) -> dict:
    texts, logprobs, last = await _drain_outputs(outputs, choices)
    replies = []
    for i, text in enumerate(texts):
        tools = tool_calls_of(body, tokenizer)  # the same parser as a stream's, fed the whole text
        content, _ = tools.feed(text)
        rest, _, reason = tools.finish(_finish_reason(last, i))
        replies.append((assistant_message(content + rest, [call.to_openai() for call in tools.calls]), reason,
                        chat_logprobs(logprobs[i]) if body.logprobs else None))
    return chat_response(request_id, body.model, replies, *usage_of(choices, last))
