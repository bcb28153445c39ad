"""The router's HTTP side: OpenAI's `/v1/completions` and `/v1/chat/completions` (streaming too), `/v1/models`,
`/health` and `/metrics`, forwarded to the replica the policy picks.

No request is lost to a replica that goes away:
- a refusal before the first byte (connection error, 503 while draining, 429) is retried on another replica, and
  when all refuse, again after a backoff, until `hold_timeout`;
- a stream whose replica dies is continued on another one (`continuation`), as one answer to the client, waiting
  for room as a new request would when every other replica is full;
- with no replica at all (scaled to zero) a request waits, bounded in number and time, while `on_demand` asks
  for one.
"""

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiohttp
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from fleetserve.router.continuation import StreamSoFar, client_chunk, closing_chunk, continuation_request
from fleetserve.router.metrics import RouterMetrics
from fleetserve.router.policy import Router
from fleetserve.router.replicas import ReplicaPool
from fleetserve.router.tokenizer import PromptTokenizer

log = logging.getLogger("fleetserve.router")

RETRYABLE_STATUS = (429, 503)
FIRST_BACKOFF_S, LONGEST_BACKOFF_S = 0.1, 2.0  # between rounds over replicas that all refused
# What a replica that went away looks like from the client session's side.
REPLICA_GONE = (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, asyncio.IncompleteReadError, TimeoutError)
FORWARDED_HEADERS = ("Authorization", "Content-Type")


@dataclass
class RouterOptions:
    hold_timeout: float = 120.0  # how long a request waits for a replica to exist or to have room
    max_held: int = 1024  # requests waiting for a replica at once; more get 503
    connect_timeout: float = 5.0
    api_key: str | None = None  # sent to replicas for /v1/tokenizer and /metrics


class ApiError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param = status, message, param

    def response(self) -> web.Response:
        body = {"error": {"message": self.message, "type": "invalid_request_error" if self.status < 500 else "server_error",
                          "param": self.param, "code": None}}
        headers = {"Retry-After": "1"} if self.status in RETRYABLE_STATUS else None
        return web.json_response(body, status=self.status, headers=headers)


class Proxy:
    def __init__(self, pool: ReplicaPool, router: Router, options: RouterOptions,
                 on_demand: Callable[[], Awaitable[None]] | None = None) -> None:
        self.pool, self.router, self.options, self.on_demand = pool, router, options, on_demand
        self.metrics = RouterMetrics()
        self.tokenizer: PromptTokenizer | None = None
        self.session: aiohttp.ClientSession | None = None
        self._held = 0
        self._background: list[asyncio.Task] = []
        self._learning = asyncio.Lock()  # a burst of first requests learns the tokenizer once

    # -- lifecycle --------------------------------------------------------------------------------------------
    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/completions", lambda r: self.generate(r, "completions"))
        app.router.add_post("/v1/chat/completions", lambda r: self.generate(r, "chat"))
        app.router.add_get("/v1/models", self.models)
        app.router.add_get("/health", self.health)
        app.router.add_get("/metrics", self.metrics_page)
        app.on_startup.append(self._start)
        app.on_cleanup.append(self._stop)
        return app

    async def _start(self, _: web.Application) -> None:
        # No total timeout: a long generation streams for minutes. Connecting and a silent replica are bounded.
        timeout = aiohttp.ClientTimeout(total=None, connect=self.options.connect_timeout, sock_read=300)
        self.session = aiohttp.ClientSession(timeout=timeout, auto_decompress=False)
        self._background.append(asyncio.create_task(self.pool.scrape_forever(self.session)))

    async def _stop(self, _: web.Application) -> None:
        for task in self._background:
            task.cancel()
        await self.session.close()

    def _replica_headers(self) -> dict:
        return {"Authorization": f"Bearer {self.options.api_key}"} if self.options.api_key else {}

    async def _learn_tokenizer(self, url: str) -> None:
        """Once, from the first replica that answers: the engines of one deployment share their tokenizer."""
        async with self._learning:
            if self.tokenizer is None:
                await self._fetch_tokenizer(url)

    async def _fetch_tokenizer(self, url: str) -> None:
        try:
            async with self.session.get(f"{url}/v1/tokenizer", headers=self._replica_headers()) as answer:
                answer.raise_for_status()
                description = await answer.json()
            self.tokenizer = await asyncio.to_thread(PromptTokenizer.from_description, description)
            log.info("learned the engines' tokenizer from %s (block size %d)", url, self.tokenizer.block_size)
        except Exception as error:  # noqa: BLE001 - any failure only costs prefix affinity until the next request
            log.warning("could not learn the tokenizer from %s: %s; routing without prefix affinity", url, error)

    # -- handlers ---------------------------------------------------------------------------------------------
    async def health(self, _: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "replicas": len(self.pool.loads())})

    async def metrics_page(self, _: web.Request) -> web.Response:
        self.metrics.replicas.set(len(self.pool.loads()))
        return web.Response(body=generate_latest(self.metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def models(self, request: web.Request) -> web.StreamResponse:
        try:
            await self._wait_for_replica()
            url = next(iter(self.pool.loads()))
            async with self.session.get(f"{url}/v1/models", headers=self._forwarded(request)) as answer:
                return web.Response(body=await answer.read(), status=answer.status,
                                    content_type=answer.content_type)
        except ApiError as error:
            return error.response()
        except REPLICA_GONE:
            return ApiError(503, "no replica answered; try again").response()

    async def generate(self, request: web.Request, kind: str) -> web.StreamResponse:
        try:
            body = await self._read_body(request)
            return await self._route(request, kind, body)
        except ApiError as error:
            self.metrics.requests.labels("rejected" if error.status < 500 else "failed").inc()
            return error.response()

    # -- routing ----------------------------------------------------------------------------------------------
    async def _read_body(self, request: web.Request) -> dict:
        try:
            body = json.loads(await request.read())
        except (ValueError, RecursionError):
            raise ApiError(400, "The request body is not valid JSON.") from None
        if not isinstance(body, dict):
            raise ApiError(400, "The request body must be a JSON object.")
        return body

    def _forwarded(self, request: web.Request) -> dict:
        return {name: request.headers[name] for name in FORWARDED_HEADERS if name in request.headers}

    async def _wait_for_replica(self) -> None:
        if self.pool.loads():
            return
        if self._held >= self.options.max_held:
            raise ApiError(503, f"{self._held} requests are already waiting for a replica to start; try again later")
        with self._holding():
            if self.on_demand is not None:
                await self.on_demand()
            if not await self.pool.wait_ready(self.options.hold_timeout):
                raise ApiError(503, f"no replica became ready within {self.options.hold_timeout:g} s")

    async def _route(self, request: web.Request, kind: str, body: dict) -> web.StreamResponse:
        await self._wait_for_replica()
        if self.tokenizer is None:
            await self._learn_tokenizer(next(iter(self.pool.loads())))
        prompt_ids = self.tokenizer.prompt_ids(kind, body) if self.tokenizer else None
        hashes = self.tokenizer.block_hashes(prompt_ids) if self.tokenizer else []
        path = "/v1/chat/completions" if kind == "chat" else "/v1/completions"
        headers = self._forwarded(request)
        last_refusal: tuple[int, bytes, str] | None = None
        attempts = 0
        async with contextlib.aclosing(self._replicas_in_turn(hashes, wake=True)) as replicas:
            async for url in replicas:
                if attempts:
                    self.metrics.retries.inc()
                attempts += 1
                self.metrics.prefix_blocks.inc(len(hashes))
                self.metrics.prefix_cached_blocks.inc(self.router.sent(url, hashes))
                replica = self.pool.replicas[url]
                replica.outstanding += 1
                try:
                    upstream = await self.session.post(url + path, json=body, headers=headers)
                except REPLICA_GONE as error:
                    replica.outstanding -= 1
                    log.warning("replica %s refused a request (%s); trying another", url, error or type(error).__name__)
                    self._replica_gone(url)
                    continue
                try:
                    if upstream.status in RETRYABLE_STATUS:
                        last_refusal = (upstream.status, await upstream.read(), upstream.content_type)
                        continue
                    if body.get("stream") is True and upstream.status == 200:
                        return await self._relay_stream(request, kind, body, prompt_ids, upstream, url)
                    payload = await upstream.read()  # a replica dying here has sent the client nothing: retry
                    self.metrics.requests.labels("ok" if upstream.status < 400 else "rejected").inc()
                    return web.Response(body=payload, status=upstream.status, content_type=upstream.content_type,
                                        headers={"X-FleetServe-Replica": url})
                except REPLICA_GONE as error:
                    log.warning("replica %s went away before answering (%s); trying another", url, error or type(error).__name__)
                    self._replica_gone(url)
                    continue
                finally:
                    replica.outstanding -= 1
                    upstream.release()
        if last_refusal is not None:  # every replica kept refusing: pass the last refusal on
            status, payload, content_type = last_refusal
            return web.Response(body=payload, status=status, content_type=content_type, headers={"Retry-After": "1"})
        raise ApiError(503, "no replica could take the request; try again")

    async def _back_off(self, seconds: float) -> None:
        with self._holding():
            await asyncio.sleep(seconds)

    @contextlib.contextmanager
    def _holding(self):
        """Counts a request the router holds (no replica, or none with room) in fleetserve_router_held_requests."""
        self._held += 1
        self.metrics.held.set(self._held)
        try:
            yield
        finally:
            self._held -= 1
            self.metrics.held.set(self._held)

    def _replica_gone(self, url: str) -> None:
        """Out of routing until a scrape reaches it again; what the router believed it cached is void."""
        self.pool.mark_unreachable(url)
        self.router.forget(url)

    # -- streaming with failover ------------------------------------------------------------------------------
    async def _relay_stream(self, request: web.Request, kind: str, body: dict, prompt_ids: list[int] | None,
                            upstream: aiohttp.ClientResponse, url: str) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                               "X-FleetServe-Replica": url})
        await response.prepare(request)
        so_far = StreamSoFar(kind)
        if await self._pump(upstream, response, so_far, None):
            self.metrics.requests.labels("ok").inc()
            return response
        dead = {url}
        while True:  # the replica died mid-stream: go on elsewhere
            log.warning("replica %s died mid-stream after %d characters; continuing on another", url, len(so_far.text))
            self._replica_gone(url)
            self.metrics.failovers.inc()
            if self.tokenizer is None or prompt_ids is None:
                await self._write_error(response, "the replica serving this stream stopped and the stream can't be "
                                        "continued (the router has no tokenizer for it)")
                self.metrics.requests.labels("failed").inc()
                return response
            generated = self.tokenizer.text_ids(so_far.text)
            follow_up = continuation_request(body, prompt_ids, generated)
            if follow_up is None:
                await self._write_event(response, closing_chunk(so_far))
                await response.write(b"data: [DONE]\n\n")
                self.metrics.requests.labels("ok").inc()
                return response
            url, upstream = await self._continue_on_another(follow_up, dead, self._forwarded(request))
            if upstream is None:
                await self._write_error(response, "the replica serving this stream stopped and no other replica could continue it")
                self.metrics.requests.labels("failed").inc()
                return response
            dead.add(url)
            replica = self.pool.replicas.get(url)
            if replica is not None:
                replica.outstanding += 1
            try:
                complete = await self._pump(upstream, response, so_far, len(generated))
            finally:
                if replica is not None:
                    replica.outstanding -= 1
            if complete:
                self.metrics.requests.labels("ok").inc()
                return response

    async def _continue_on_another(self, follow_up: dict, dead: set[str], headers: dict):
        """A replica that takes the rest of a stream. While every live one refuses (full: the dead one's streams
        all arrive at once), the stream waits and tries them again, as a new request would, until `hold_timeout`."""
        hashes = self.tokenizer.block_hashes(follow_up["prompt"])
        async with contextlib.aclosing(self._replicas_in_turn(hashes, excluded=frozenset(dead))) as replicas:
            async for url in replicas:
                self.router.sent(url, hashes)
                try:
                    upstream = await self.session.post(url + "/v1/completions", json=follow_up, headers=headers)
                except REPLICA_GONE:
                    self._replica_gone(url)
                    continue
                if upstream.status == 200:
                    return url, upstream
                upstream.release()
        return None, None

    async def _replicas_in_turn(self, hashes: list[int], excluded: frozenset[str] = frozenset(), wake: bool = False):
        """The replicas to try for a request, the router's choice first. Once every one has been tried (refused:
        full, draining, gone), waits with a growing backoff and goes round again, until `hold_timeout`: a burst
        waits here for room, as it would in one replica's queue, and replicas the autoscaler adds meanwhile join the
        next round. `excluded`: never offered (replicas that died under this stream). `wake`: a round that finds
        no replica at all holds the request while the deployment wakes, as a new request is held."""
        tried = set(excluded)
        give_up_at, backoff = time.monotonic() + self.options.hold_timeout, FIRST_BACKOFF_S
        while True:
            started = time.perf_counter()
            url = self.router.choose(hashes, self.pool.loads(), exclude=frozenset(tried))
            self.metrics.decision.observe(time.perf_counter() - started)
            if url is not None:
                tried.add(url)
                yield url
                continue
            if time.monotonic() + backoff >= give_up_at:
                return
            await self._back_off(backoff)
            tried, backoff = set(excluded), min(2 * backoff, LONGEST_BACKOFF_S)
            if wake:
                await self._wait_for_replica()

    async def _pump(self, upstream: aiohttp.ClientResponse, response: web.StreamResponse, so_far: StreamSoFar,
                    tokens_before: int | None) -> bool:
        """Relays one replica's events to the client; True once the stream is complete, False if the replica died.
        `tokens_before` is set for a continuation, whose chunks are rewritten into the client's stream."""
        try:
            async for line in upstream.content:
                if not line.startswith(b"data: "):
                    continue
                data = line[len(b"data: "):].strip()
                if data == b"[DONE]":
                    await response.write(b"data: [DONE]\n\n")
                    return True
                chunk = json.loads(data)
                if tokens_before is not None and "error" not in chunk:
                    chunk = client_chunk(so_far, chunk, tokens_before)
                so_far.absorb(chunk)
                await self._write_event(response, chunk)
            # The connection ended without [DONE]: finished if the answer had, dead otherwise.
            if so_far.finish_reason is not None:
                await response.write(b"data: [DONE]\n\n")
                return True
            return False
        except REPLICA_GONE:
            if so_far.finish_reason is not None:
                await response.write(b"data: [DONE]\n\n")
                return True
            return False
        finally:
            upstream.release()

    async def _write_event(self, response: web.StreamResponse, chunk: dict) -> None:
        await response.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")

    async def _write_error(self, response: web.StreamResponse, message: str) -> None:
        await self._write_event(response, {"error": {"message": message, "type": "server_error", "param": None,
                                                     "code": None}})
        await response.write(b"data: [DONE]\n\n")
