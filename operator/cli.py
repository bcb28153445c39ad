"""`fleetserve operator`: run the Kopf operator (and the autoscaler's handlers) for all namespaces."""

import argparse
import logging
import os
import random

import kopf

PEERING_NAME = "fleetserve"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-autoscaler", action="store_true", help="don't load the autoscaler's handlers")
    parser.add_argument("--peering", action="store_true",
                        help=f"coordinate several operator replicas through kopf peering ({PEERING_NAME!r});"
                             " only the highest-priority one is active")
    parser.add_argument("--priority", type=int, default=None,
                        help="peering priority of this replica (default: random, so exactly one replica is active:"
                             " kopf pauses every replica that sees a peer of the same priority)")
    parser.add_argument("--liveness", default="http://0.0.0.0:8080/healthz", help="liveness endpoint URL ('' = none)")
    parser.add_argument("--prometheus-url", default=os.environ.get("FLEETSERVE_PROMETHEUS_URL"),
                        help="Prometheus the autoscaler queries (default: $FLEETSERVE_PROMETHEUS_URL)")
    parser.add_argument("--verbose", action="store_true",
                        help="log FleetServe's own decisions at DEBUG level (every autoscaler tick with its numbers);"
                             " kopf stays at INFO")


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.verbose:  # kopf's own DEBUG is every watch event and patch: too much to read the decisions in
        logging.getLogger("fleetserve").setLevel(logging.DEBUG)
    # Importing a handler module registers its handlers with kopf; this is the one place that joins the components.
    from fleetserve.operator import handlers  # noqa: F401
    if not args.no_autoscaler:
        from fleetserve.autoscaler import kopf_handlers
        kopf_handlers.configure(args.prometheus_url)
    priority = args.priority if args.priority is not None else random.SystemRandom().randint(1, 2**31 - 1)
    if args.peering:
        logging.getLogger(__name__).info("peering as %r with priority %d", PEERING_NAME, priority)
    kopf.run(
        clusterwide=True,
        standalone=not args.peering,
        peering_name=PEERING_NAME if args.peering else None,
        priority=priority,
        liveness_endpoint=args.liveness or None,
    )
    return 0
