"""The replicas behind the router and what it knows of each: requests it has outstanding there, and the load the
replica itself reports on /metrics (running and waiting requests, KV usage), scraped every `scrape_interval`.

Replicas come and go (`set_backends`: static flags, or the EndpointSlice watch); requests wait in `wait_ready`
while there are none (scale from zero) and wake as soon as one appears.
"""

import asyncio
import logging
from dataclasses import dataclass

import aiohttp

log = logging.getLogger("fleetserve.router")

LOAD_SERIES = {
    "vllm:num_requests_running": "running",
    "vllm:num_requests_waiting": "waiting",
    "vllm:kv_cache_usage_perc": "kv_usage",
}


@dataclass
class Replica:
    url: str
    outstanding: int = 0  # this router's requests in flight there
    running: float = 0.0  # as the replica reports them (every router's requests)
    waiting: float = 0.0
    kv_usage: float = 0.0
    outstanding_at_scrape: int = 0
    reachable: bool = True  # False after a failed scrape or connection, until the next good scrape

    @property
    def load(self) -> float:
        """Requests in flight there: ours, counted as they come and go, plus what the replica's last report holds
        beyond ours (other routers' requests), which a scrape interval would leave stale for our own."""
        return self.outstanding + max(0.0, self.running + self.waiting - self.outstanding_at_scrape)

    def observe(self, report: dict[str, float], ours_before: int) -> None:
        """Takes a scrape's report; `ours_before` is `outstanding` when the scrape was sent. Of ours, the report can
        hold up to the most we had there while it was out: requests that finished meanwhile may be in it though no
        longer in `outstanding`, and subtracting only those still out would count them twice, as phantom load on
        this replica until the next scrape (under a burst, when scrapes are slowest and requests finish fastest)."""
        for name, value in report.items():
            setattr(self, name, value)
        self.outstanding_at_scrape = max(ours_before, self.outstanding)


def parse_load(text: str) -> dict[str, float]:
    """The load gauges out of a Prometheus text exposition (one replica, one model: sums over label sets)."""
    found: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name = line.split("{", 1)[0].split(" ", 1)[0]
        field = LOAD_SERIES.get(name)
        if field is not None:
            try:
                found[field] = found.get(field, 0.0) + float(line.rsplit(" ", 1)[1])
            except ValueError:
                continue
    return found


class ReplicaPool:
    def __init__(self, scrape_interval: float = 0.5, headers: dict | None = None) -> None:
        self.replicas: dict[str, Replica] = {}
        self.scrape_interval = scrape_interval
        self.headers = headers or {}
        self._changed = asyncio.Condition()

    async def set_backends(self, urls: list[str]) -> None:
        wanted = {url.rstrip("/") for url in urls}
        for url in set(self.replicas) - wanted:
            log.info("replica %s left", url)
            del self.replicas[url]
        for url in wanted - set(self.replicas):
            log.info("replica %s joined", url)
            self.replicas[url] = Replica(url)
        async with self._changed:
            self._changed.notify_all()

    def loads(self) -> dict[str, float]:
        """Load per routable replica."""
        return {url: r.load for url, r in self.replicas.items() if r.reachable}

    async def wait_ready(self, timeout: float) -> bool:
        """Waits until some replica can be routed to; False after `timeout` seconds without one."""
        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait_for(lambda: bool(self.loads())), timeout)
                return True
            except TimeoutError:
                return False

    def mark_unreachable(self, url: str) -> None:
        if url in self.replicas:
            self.replicas[url].reachable = False

    async def scrape_forever(self, session: aiohttp.ClientSession) -> None:
        while True:
            await asyncio.gather(*(self._scrape(session, r) for r in list(self.replicas.values())))
            await asyncio.sleep(self.scrape_interval)

    async def _scrape(self, session: aiohttp.ClientSession, replica: Replica) -> None:
        ours = replica.outstanding
        try:
            async with session.get(f"{replica.url}/metrics", headers=self.headers,
                                   timeout=aiohttp.ClientTimeout(total=max(1.0, self.scrape_interval * 2))) as answer:
                answer.raise_for_status()
                values = parse_load(await answer.text())
        except (aiohttp.ClientError, TimeoutError) as error:
            if replica.reachable:
                log.warning("replica %s unreachable: %s", replica.url, error or type(error).__name__)
            replica.reachable = False
            return
        replica.observe(values, ours)
        if not replica.reachable:
            log.info("replica %s reachable again", replica.url)
            replica.reachable = True
            async with self._changed:
                self._changed.notify_all()
