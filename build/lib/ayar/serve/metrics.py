"""Prometheus metrics of one server (an own registry, so several apps in one process never collide)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class ServerMetrics:
    """Requests by status, latency, tokens in and out, queue depth and the latest drift score."""

    def __init__(self, queue_depth: Callable[[], float], drift: Callable[[], dict[str, float]]) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("ayar_requests", "HTTP requests by route and status code.",
                                ["route", "status"], registry=self.registry)
        self.latency = Histogram("ayar_request_latency_seconds", "Time from request to last byte.",
                                 ["route"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.prompt_tokens = Counter("ayar_prompt_tokens", "Prompt tokens of generation requests.",
                                     ["model"], registry=self.registry)
        self.generated_tokens = Counter("ayar_generated_tokens", "Tokens generated.", ["model"],
                                        registry=self.registry)
        self.cancelled = Counter("ayar_generations_cancelled", "Generations stopped because the client left.",
                                 registry=self.registry)
        Gauge("ayar_queue_depth", "Generation jobs waiting or running.",
              registry=self.registry).set_function(queue_depth)
        self.registry.register(_DriftCollector(drift))


class _DriftCollector(Collector):
    """The latest `ayar monitor drift` result, read when Prometheus scrapes."""

    def __init__(self, drift: Callable[[], dict[str, float]]) -> None:
        self.drift = drift

    def collect(self) -> list[GaugeMetricFamily]:
        family = GaugeMetricFamily("ayar_drift", "Latest drift check: status (0 OK, 1 WARN, 2 ALERT) and each "
                                   "score (psi_length, js_tokens, embedding_mmd, embedding_p).", labels=["score"])
        for name, value in self.drift().items():
            family.add_metric([name], value)
        return [family]
