"""Prometheus metrics of one server process (own registry, so tests can run several).

With ``--workers N`` each worker exports on ``metrics_port + i`` (worker i), which a
Prometheus scrape config lists as N targets. The registry also holds the process
collector (``process_resident_memory_bytes``, ``process_cpu_seconds_total``,
``process_open_fds``) so a leak or an fd exhaustion shows per worker.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    start_http_server,
)
from prometheus_client.metrics import Counter as CounterType

RPCS = ("Recommend", "SimilarItems", "RankItems", "SelectArtwork", "RecordEvents")
LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
)  # fmt: skip


class ServingMetrics:
    """The server's counters; label children are bound once so a call costs ~1 µs."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.latency = Histogram(
            "recsvc_rpc_latency_seconds", "server-side RPC latency", ["rpc"],
            buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.calls = Counter("recsvc_rpc_total", "RPCs by status code", ["rpc", "code"], registry=r)
        self.fallbacks = Counter(
            "recsvc_fallbacks_total",
            "answers not from the user's own candidates, by source",
            ["source"],
            registry=r,
        )
        self.degraded = Counter(
            "recsvc_degraded_total", "answers without the feature store", ["rpc"], registry=r
        )
        self.store_up = Gauge("recsvc_feature_store_up", "1 when the store answers", registry=r)
        self.model_info = Gauge(
            "recsvc_model_info", "the bundle version being served (value 1)", ["version"],
            registry=r,
        )  # fmt: skip
        self.swaps = Counter(
            "recsvc_bundle_swaps_total", "bundle hot swaps by result", ["result"], registry=r
        )
        self.bundle_fallbacks = Counter(
            "recsvc_bundle_fallback_total",
            "starts that serve the newest valid version because current could not be loaded",
            registry=r,
        )
        self.exposures_dropped = Counter(
            "recsvc_exposures_dropped_total", "exposure records lost (buffer full)", registry=r
        )
        self.events = Counter(
            "recsvc_events_total", "RecordEvents outcomes", ["outcome"], registry=r
        )
        self.refused = Counter(
            "recsvc_refused_total",
            "requests refused as INVALID_ARGUMENT, by RPC and the field named",
            ["rpc", "field"],
            registry=r,
        )
        self.artwork_choices = Counter(
            "recsvc_artwork_choices_total",
            "artwork decisions served (one per item), by policy",
            ["policy"],
            registry=r,
        )
        self.assignments = Counter(
            "recsvc_experiment_assignments_total",
            "requests routed into an experiment arm",
            ["experiment", "variant"],
            registry=r,
        )
        self.bundle_age = Gauge(
            "recsvc_bundle_age_seconds",
            "seconds since the served bundle was trained (from its version name; since it "
            "was loaded when the name carries no time)",
            registry=r,
        )
        self.bundle_age.set_function(self._bundle_age)
        ProcessCollector(registry=r)
        self.rpc_latency = {name: self.latency.labels(name) for name in RPCS}
        self.rpc_ok = {name: self.calls.labels(name, "OK") for name in RPCS}
        self.store_up.set(1)
        self._version = ""
        self._bundle_time = time.time()
        self._policy_children: dict[str, CounterType] = {}
        self._arm_children: dict[tuple[str, str], CounterType] = {}

    def set_model_version(self, version: str) -> None:
        if self._version:
            self.model_info.remove(self._version)
        self._version = version
        self.model_info.labels(version).set(1)
        self._bundle_time = version_time(version) or time.time()

    def _bundle_age(self) -> float:
        return max(0.0, time.time() - self._bundle_time)

    def count_artwork(self, policy: str, n: int) -> None:
        child = self._policy_children.get(policy)
        if child is None:
            child = self._policy_children[policy] = self.artwork_choices.labels(policy)
        child.inc(n)

    def count_assignment(self, experiment: str, variant: str) -> None:
        key = (experiment, variant)
        child = self._arm_children.get(key)
        if child is None:
            child = self._arm_children[key] = self.assignments.labels(experiment, variant)
        child.inc()

    def serve(self, port: int, host: str = "0.0.0.0") -> None:
        start_http_server(port, addr=host, registry=self.registry)


def version_time(version: str) -> float | None:
    """Epoch seconds a bundle version was created, from its ``YYYYmmddTHHMMSSffffffZ-…``
    name (recsvc.bundle.versions.new_version); None for other names."""
    stamp = version.split("-", 1)[0]
    try:
        return datetime.strptime(stamp, "%Y%m%dT%H%M%S%fZ").replace(tzinfo=UTC).timestamp()
    except ValueError:
        return None
