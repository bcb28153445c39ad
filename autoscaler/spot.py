"""Splits a replica count between on-demand and spot, and learns how often spot replicas are preempted.

Rules, in order: keep the on-demand floor; put the rest on spot up to max_share; add spot replicas for the
preemptions expected while a lost replica is being replaced; and cover every spot replica that is not serving
(Pending past the fallback delay, or preempted and not yet back) with an on-demand one, which goes away again
as soon as spot capacity returns. Spot replicas are still requested meanwhile: their Pending pods are what
notices that capacity came back.
"""

import dataclasses
import math

from fleetserve.api.placement import split_replicas


@dataclasses.dataclass(frozen=True)
class SpotSettings:
    enabled: bool
    max_share: float
    on_demand_min: int


@dataclasses.dataclass(frozen=True)
class CapacityPlan:
    on_demand: int
    spot: int
    reason: str

    @property
    def total(self) -> int:
        return self.on_demand + self.spot


@dataclasses.dataclass(frozen=True)
class PreemptionRate:
    """Observed preemptions over spot replica-hours, with a weak prior so one lucky hour doesn't read as zero."""

    preemptions: int = 0
    spot_replica_hours: float = 0.0
    prior_preemptions: float = 0.1
    prior_hours: float = 1.0

    def per_replica_hour(self) -> float:
        return (self.preemptions + self.prior_preemptions) / (self.spot_replica_hours + self.prior_hours)

    def observe(self, preemptions: int, spot_replicas: int, elapsed_s: float) -> "PreemptionRate":
        return dataclasses.replace(
            self,
            preemptions=self.preemptions + preemptions,
            spot_replica_hours=self.spot_replica_hours + spot_replicas * elapsed_s / 3600,
        )


def poisson_quantile(mean: float, quantile: float) -> int:
    """Smallest k with P(Poisson(mean) <= k) >= quantile."""
    if mean <= 0:
        return 0
    k, term = 0, math.exp(-mean)
    cumulative = term
    while cumulative < quantile:
        k += 1
        term *= mean / k
        cumulative += term
    return k


def overprovision(spot_replicas: int, rate_per_replica_hour: float, replacement_s: float, quantile: float = 0.9) -> int:
    """Extra spot replicas so that, with `quantile` confidence, preemptions during one replacement leave enough."""
    expected_lost = spot_replicas * rate_per_replica_hour * replacement_s / 3600
    return poisson_quantile(expected_lost, quantile)


def spot_share(total: int, settings: SpotSettings) -> int:
    """Serving replicas that go on spot: all but the on-demand floor, at most max_share of the total (the
    operator's own rule, so a plan and a spec-only deployment split alike)."""
    return split_replicas(total, settings.on_demand_min, settings.enabled, settings.max_share).spot


def split(total: int, settings: SpotSettings, rate: PreemptionRate, replacement_s: float, spot_not_serving: int) -> CapacityPlan:
    """On-demand and spot counts for `total` serving replicas; `spot_not_serving` (how many of the spot share
    are Pending past the fallback delay or preempted) is covered by on-demand replicas."""
    if not settings.enabled or total == 0:
        return CapacityPlan(total, 0, "spot disabled" if not settings.enabled else "scaled to zero")
    floor = min(settings.on_demand_min, total)
    spot = spot_share(total, settings)
    on_demand = total - spot
    extra = overprovision(spot, rate.per_replica_hour(), replacement_s) if spot else 0
    fallback = min(spot_not_serving, spot)
    reasons = [f"{on_demand} on-demand (floor {floor}) + {spot} spot (max share {settings.max_share:g})"]
    if extra:
        reasons.append(f"+{extra} spot for {rate.per_replica_hour():.2f} preemptions/replica-h")
    if fallback:
        reasons.append(f"+{fallback} on-demand covering spot not serving")
    return CapacityPlan(on_demand + fallback, spot + extra, "; ".join(reasons))
