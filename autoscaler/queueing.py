"""Queueing-delay prediction for a pool of continuous-batching replicas (an M/G/c approximation).

Each replica is modelled as `slots` parallel servers (the sequences it can batch while holding the ITL SLO);
a request occupies one slot for its service time. Waiting time uses Erlang C with the Allen-Cunneen correction
for non-exponential service times, which is accurate enough to rank replica counts and cheap enough to
evaluate for every candidate count on every tick. A replica's prefill queue is a single first-come-first-served
server, whose waits `fifo_waits` gives for sampled prompts and gaps.
"""

import math

import numpy as np

# Sentinel for "the queue grows without bound": compares greater than any SLO.
UNSTABLE = math.inf


def erlang_c(servers: int, offered_load: float) -> float:
    """Probability that an arriving request has to wait (Erlang C), for `servers` servers and load λ/μ."""
    if offered_load <= 0:
        return 0.0
    if offered_load >= servers:
        return 1.0
    # Erlang B by its stable recursion, then the B -> C conversion.
    blocking = 1.0
    for k in range(1, servers + 1):
        blocking = offered_load * blocking / (k + offered_load * blocking)
    utilisation = offered_load / servers
    return blocking / (1 - utilisation * (1 - blocking))


def waiting_time_quantile(
    arrival_rate: float, service_time_s: float, servers: int, quantile: float, service_cv2: float = 1.0
) -> float:
    """The `quantile` (e.g. 0.99) of the time a request waits for a free slot, in seconds."""
    if arrival_rate <= 0:
        return 0.0
    if servers <= 0:
        return UNSTABLE
    service_rate = 1.0 / service_time_s
    spare_rate = servers * service_rate - arrival_rate
    if spare_rate <= 0:
        return UNSTABLE
    wait_probability = erlang_c(servers, arrival_rate / service_rate)
    if wait_probability <= 1 - quantile:
        return 0.0
    # M/M/c tail P(W > t) = C * exp(-spare_rate * t), stretched by the Allen-Cunneen factor (1 + cv²) / 2.
    return (1 + service_cv2) / 2 * math.log(wait_probability / (1 - quantile)) / spare_rate


def backlog_drain_time(backlog: float, arrival_rate: float, service_time_s: float, servers: int) -> float:
    """Seconds until `backlog` queued requests are absorbed when `servers` slots serve on top of new arrivals."""
    if backlog <= 0:
        return 0.0
    spare_rate = servers * (1.0 / service_time_s) - arrival_rate if servers > 0 else 0.0
    return backlog / spare_rate if spare_rate > 0 else UNSTABLE


def fifo_waits(service_s: np.ndarray, gaps_s: np.ndarray) -> np.ndarray:
    """Each customer's wait at a single first-come-first-served server: customer m arrives gaps_s[m] after m - 1
    (gaps_s[0] is ignored) and is served for service_s[m]. Lindley's recursion w[m] = max(0, w[m-1] + s[m-1] -
    a[m]) is the random walk of services minus gaps reflected at zero, so it is the walk less its running minimum."""
    walk = np.concatenate(([0.0], np.cumsum(service_s[:-1] - gaps_s[1:])))
    return walk - np.minimum.accumulate(walk)
