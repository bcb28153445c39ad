"""`fleetserve router`: the router in front of static `--backend` replicas, or of an LLMDeployment's engines in a
cluster (`--llmdeployment`, found through its engine Service's EndpointSlices)."""

import argparse
import asyncio
import logging
import os
from pathlib import Path

from aiohttp import web

from fleetserve.router.policy import DEFAULT_BALANCE, POLICIES, PrefixIndex, Router
from fleetserve.router.proxy import Proxy, RouterOptions
from fleetserve.router.replicas import ReplicaPool

log = logging.getLogger("fleetserve.router")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--backend", action="append", default=[], metavar="URL",
                        help="an engine replica's base URL, e.g. http://127.0.0.1:8000 (repeat for more)")
    parser.add_argument("--llmdeployment", metavar="NAME",
                        help="route to this LLMDeployment's ready engine pods (in a cluster; needs --namespace)")
    parser.add_argument("--namespace", default=os.environ.get("POD_NAMESPACE"),
                        help="the LLMDeployment's namespace (default: $POD_NAMESPACE)")
    parser.add_argument("--policy", choices=POLICIES, default="prefix", help="how replicas are picked (default: prefix)")
    parser.add_argument("--balance", type=float, default=DEFAULT_BALANCE,
                        help=f"prefix policy: most load a replica may take, as a multiple of the mean (default {DEFAULT_BALANCE})")
    parser.add_argument("--cache-blocks", type=int, default=None,
                        help="prefix policy: blocks the router assumes each replica caches (default: unbounded)")
    parser.add_argument("--scrape-interval", type=float, default=0.5, help="seconds between reads of each replica's /metrics")
    parser.add_argument("--hold-timeout", type=float, default=120.0,
                        help="seconds a request waits for a replica when there is none (scale from zero) or none has room")
    parser.add_argument("--max-held", type=int, default=1024, help="requests that may wait for a replica at once")
    parser.add_argument("--api-key-file", type=Path, help="the engines' API key, for the router's own reads of them")


def check(args: argparse.Namespace) -> str | None:
    """The first thing wrong with the flags, as a message naming the flag."""
    if bool(args.backend) == bool(args.llmdeployment):
        return "give either --backend URL (one or more) or --llmdeployment NAME"
    if args.llmdeployment and not args.namespace:
        return "--llmdeployment needs --namespace (or $POD_NAMESPACE)"
    bad = next((url for url in args.backend if not url.startswith(("http://", "https://"))), None)
    if bad:
        return f"--backend: expected an http(s) URL, got {bad!r}"
    for flag, value, low in (("--balance", args.balance, 1), ("--scrape-interval", args.scrape_interval, 0.01),
                             ("--hold-timeout", args.hold_timeout, 0), ("--max-held", args.max_held, 0)):
        if not value >= low:
            return f"{flag}: must be at least {low}, got {value}"
    if args.cache_blocks is not None and args.cache_blocks < 1:
        return f"--cache-blocks: must be at least 1, got {args.cache_blocks}"
    if args.api_key_file and not args.api_key_file.is_file():
        return f"--api-key-file: {args.api_key_file} is not a readable file"
    return None


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    problem = check(args)
    if problem:
        log.error("%s", problem)
        return 2
    api_key = args.api_key_file.read_text().strip() if args.api_key_file else None
    pool = ReplicaPool(args.scrape_interval, {"Authorization": f"Bearer {api_key}"} if api_key else None)
    router = Router(args.policy, args.balance, PrefixIndex(args.cache_blocks))
    options = RouterOptions(hold_timeout=args.hold_timeout, max_held=args.max_held, api_key=api_key)
    on_demand = None
    if args.llmdeployment:
        from fleetserve.router.discovery import Discovery
        discovery = Discovery(args.namespace, args.llmdeployment, pool)
        on_demand = discovery.ask_for_replica
    proxy = Proxy(pool, router, options, on_demand)
    app = proxy.app()

    async def start_discovery(_: web.Application) -> None:
        if args.backend:
            await pool.set_backends(args.backend)
        else:
            discovery.start(asyncio.get_running_loop())
    app.on_startup.insert(0, start_discovery)
    log.info("routing with the %s policy on http://%s:%d", args.policy, args.host, args.port)
    web.run_app(app, host=args.host, port=args.port, print=None, access_log=None)
    return 0
