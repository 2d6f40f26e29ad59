"""Prometheus metrics of push delivery, one set per registry."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

# Call pushes matter in the sub-second range; anything beyond a few seconds is a missed call.
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass(frozen=True, slots=True)
class PushMetrics:
    sent: Counter  # labels: service, kind, outcome
    latency: Histogram  # labels: service, kind (delivered pushes only)
    in_flight: Gauge  # labels: service
    shed: Counter  # labels: service — refused at the concurrency cap


_BY_REGISTRY: dict[int, PushMetrics] = {}


def push_metrics(registry: CollectorRegistry | None = None) -> PushMetrics:
    """The push metrics registered in ``registry`` (default: the process-wide one), once."""
    registry = registry if registry is not None else REGISTRY
    metrics = _BY_REGISTRY.get(id(registry))
    if metrics is None:
        metrics = PushMetrics(
            sent=Counter(
                "cloudphone_push_sent",
                "Pushes handed to a push service, by outcome",
                ["service", "kind", "outcome"],
                registry=registry,
            ),
            latency=Histogram(
                "cloudphone_push_latency_seconds",
                "Time from sending a push to the service accepting it",
                ["service", "kind"],
                buckets=_LATENCY_BUCKETS,
                registry=registry,
            ),
            in_flight=Gauge(
                "cloudphone_push_in_flight",
                "Pushes awaiting an answer from the push service",
                ["service"],
                registry=registry,
            ),
            shed=Counter(
                "cloudphone_push_shed",
                "Pushes refused because the service's concurrency cap was reached",
                ["service"],
                registry=registry,
            ),
        )
        _BY_REGISTRY[id(registry)] = metrics
    return metrics
