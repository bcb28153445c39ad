"""The router's own Prometheus series (its /metrics); the engines' series stay on the engines."""

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class RouterMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("fleetserve_router_requests", "Requests by outcome: ok, rejected (4xx from a replica or "
                                "the router), failed (no replica could answer)", ["outcome"], registry=self.registry)
        self.retries = Counter("fleetserve_router_retries", "Requests sent to another replica before the first byte",
                               registry=self.registry)
        self.failovers = Counter("fleetserve_router_failovers", "Streams continued on another replica after theirs died",
                                 registry=self.registry)
        self.decision = Histogram("fleetserve_router_decision_seconds", "Time to pick a replica (tokenizing excluded)",
                                  buckets=(1e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 5e-3), registry=self.registry)
        self.held = Gauge("fleetserve_router_held_requests", "Requests waiting for a replica (scale from zero)",
                          registry=self.registry)
        self.replicas = Gauge("fleetserve_router_replicas", "Replicas the router can send to", registry=self.registry)
        self.prefix_blocks = Counter("fleetserve_router_prefix_blocks", "Prompt blocks routed", registry=self.registry)
        self.prefix_cached_blocks = Counter("fleetserve_router_prefix_cached_blocks",
                                            "Prompt blocks the chosen replica was estimated to hold", registry=self.registry)
