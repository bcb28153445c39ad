"""In a cluster: the ready engine pods of one LLMDeployment, from a watch on its engine Service's EndpointSlices,
and demand for a replica when there is none (the wake annotation the autoscaler acts on).

The official client's watch is blocking, so it runs in a thread and hands each change to the event loop.
"""

import asyncio
import datetime
import logging
import threading
import time

import kubernetes

from fleetserve.api.routing import SERVICE_NAME_LABEL, WAKE_ANNOTATION, engine_service_name
from fleetserve.api.spec import API_VERSION, KIND
from fleetserve.kube import shared as kube

log = logging.getLogger("fleetserve.router")
RETRY_SECONDS = 2
WAKE_EVERY_SECONDS = 10  # one annotation write per this many seconds is demand enough


def ready_urls(endpoint_slice) -> set[str]:
    """http://ip:port of the slice's ready, not terminating endpoints (port `http`)."""
    port = next((p.port for p in endpoint_slice.ports or [] if p.name == "http"), None)
    if port is None:
        return set()
    urls = set()
    for endpoint in endpoint_slice.endpoints or []:
        conditions = endpoint.conditions
        if conditions and conditions.ready and not conditions.terminating:
            urls.update(f"http://{address}:{port}" for address in endpoint.addresses)
    return urls


class Discovery:
    def __init__(self, namespace: str, name: str, pool) -> None:
        self.namespace, self.name, self.pool = namespace, name, pool
        self._slices: dict[str, set[str]] = {}
        self._last_wake = 0.0

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        kubernetes.config.load_config()
        threading.Thread(target=self._watch_forever, args=(loop,), name="endpointslice-watch", daemon=True).start()

    def _watch_forever(self, loop: asyncio.AbstractEventLoop) -> None:
        api = kubernetes.client.DiscoveryV1Api()
        selector = f"{SERVICE_NAME_LABEL}={engine_service_name(self.name)}"
        while True:
            try:
                listing = api.list_namespaced_endpoint_slice(self.namespace, label_selector=selector)
                self._slices = {s.metadata.name: ready_urls(s) for s in listing.items}
                self._publish(loop)
                stream = kubernetes.watch.Watch().stream(
                    api.list_namespaced_endpoint_slice, self.namespace, label_selector=selector,
                    resource_version=listing.metadata.resource_version, timeout_seconds=300)
                for event in stream:
                    endpoint_slice = event["object"]
                    if event["type"] == "DELETED":
                        self._slices.pop(endpoint_slice.metadata.name, None)
                    else:
                        self._slices[endpoint_slice.metadata.name] = ready_urls(endpoint_slice)
                    self._publish(loop)
            except Exception as error:  # the apiserver restarted, our watch expired (410), a network blip
                log.warning("EndpointSlice watch of %s/%s: %s; again in %d s", self.namespace,
                            engine_service_name(self.name), error, RETRY_SECONDS)
                time.sleep(RETRY_SECONDS)

    def _publish(self, loop: asyncio.AbstractEventLoop) -> None:
        urls = sorted(set().union(*self._slices.values()))
        asyncio.run_coroutine_threadsafe(self.pool.set_backends(urls), loop)

    async def ask_for_replica(self) -> None:
        """Sets the wake annotation (at most every WAKE_EVERY_SECONDS): the autoscaler starts a replica."""
        if time.monotonic() - self._last_wake < WAKE_EVERY_SECONDS:
            return
        self._last_wake = time.monotonic()
        stamp = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        patch = {"metadata": {"annotations": {WAKE_ANNOTATION: stamp}}}
        try:
            await asyncio.to_thread(kube().merge_patch, API_VERSION, KIND, self.namespace, self.name, patch)
            log.info("no replica of %s/%s: asked the autoscaler for one", self.namespace, self.name)
        except Exception as error:  # noqa: BLE001 - held requests still wait; the next one asks again
            log.warning("could not ask for a replica of %s/%s: %s", self.namespace, self.name, error)
            self._last_wake = 0.0
