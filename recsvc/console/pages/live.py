"""Live page: rates and latency per RPC, read from the servers' Prometheus endpoints
(``recsvc serve --metrics-port``; metric names in ``recsvc/serving/metrics.py``).

Rates need two scrapes: the scraper keeps each server's last sample and reports the
difference over the time between them (the first view takes two, a second apart).
"""

from __future__ import annotations

import math
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

SCRAPE_TIMEOUT_S = 2.0
MAX_BODY = 4 << 20
FRESH_S = 30.0


@dataclass
class Sample:
    at: float
    calls: dict[tuple[str, str], float] = field(default_factory=dict)  # (rpc, code) -> total
    buckets: dict[str, list[tuple[float, float]]] = field(default_factory=dict)  # rpc -> le
    degraded: dict[str, float] = field(default_factory=dict)
    version: str = ""
    store_up: float | None = None
    swaps: dict[str, float] = field(default_factory=dict)


def parse(text: str, at: float) -> Sample:
    sample = Sample(at)
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = s.labels
            if s.name == "recsvc_rpc_total":
                sample.calls[(labels.get("rpc", ""), labels.get("code", ""))] = s.value
            elif s.name == "recsvc_rpc_latency_seconds_bucket":
                le = float(labels.get("le", "inf"))
                sample.buckets.setdefault(labels.get("rpc", ""), []).append((le, s.value))
            elif s.name == "recsvc_degraded_total":
                sample.degraded[labels.get("rpc", "")] = s.value
            elif s.name == "recsvc_model_info" and s.value == 1:
                sample.version = labels.get("version", "")
            elif s.name == "recsvc_feature_store_up":
                sample.store_up = s.value
            elif s.name == "recsvc_bundle_swaps_total":
                sample.swaps[labels.get("result", "")] = s.value
    for rows in sample.buckets.values():
        rows.sort()
    return sample


def quantile(buckets: list[tuple[float, float]], q: float) -> float | None:
    """Histogram quantile as Prometheus's histogram_quantile (linear within a bucket)."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    prev_le, prev_count = 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            if math.isinf(le):
                return prev_le
            width = count - prev_count
            frac = (rank - prev_count) / width if width > 0 else 1.0
            return prev_le + (le - prev_le) * frac
        prev_le, prev_count = le, count
    return None


def _minus(a: list[tuple[float, float]], b: list[tuple[float, float]]) -> list[tuple[float, float]]:
    old = dict(b)
    return [(le, count - old.get(le, 0.0)) for le, count in a]


def rates(new: Sample, old: Sample | None) -> dict[str, Any]:
    """Per RPC: requests/s, p50/p99 (ms), error and degraded shares since ``old`` (or since
    the server started, without one)."""
    dt = (new.at - old.at) if old is not None else 0.0
    rpcs = sorted({rpc for rpc, _ in new.calls} | set(new.buckets))
    rows = []
    for rpc in rpcs:
        total = sum(v for (r, _), v in new.calls.items() if r == rpc)
        errors = sum(v for (r, c), v in new.calls.items() if r == rpc and c != "OK")
        degraded = new.degraded.get(rpc, 0.0)
        buckets = new.buckets.get(rpc, [])
        if old is not None:
            total -= sum(v for (r, _), v in old.calls.items() if r == rpc)
            errors -= sum(v for (r, c), v in old.calls.items() if r == rpc and c != "OK")
            degraded -= old.degraded.get(rpc, 0.0)
            buckets = _minus(buckets, old.buckets.get(rpc, []))
        p50, p99 = quantile(buckets, 0.5), quantile(buckets, 0.99)
        rows.append(
            {
                "rpc": rpc,
                "calls": total,
                "rps": total / dt if dt > 0 else None,
                "p50_ms": None if p50 is None else p50 * 1000,
                "p99_ms": None if p99 is None else p99 * 1000,
                "error_rate": errors / total if total > 0 else None,
                "degraded_rate": degraded / total if total > 0 else None,
            }
        )
    return {"window_s": dt, "rpcs": rows}


class Scraper:
    """Scrapes ``http://HOST:PORT/metrics`` of each configured server."""

    def __init__(self, servers: tuple[str, ...]) -> None:
        self.servers = servers
        self._last: dict[str, Sample] = {}
        self._lock = threading.Lock()

    def fetch(self, server: str) -> Sample:
        url = f"http://{server}/metrics"
        with urllib.request.urlopen(url, timeout=SCRAPE_TIMEOUT_S) as resp:
            body = resp.read(MAX_BODY).decode("utf-8", "replace")
        return parse(body, time.monotonic())

    def versions(self) -> dict[str, str]:
        """server -> the model version it reports (unreachable servers are left out)."""
        out = {}
        for server in self.servers:
            try:
                out[server] = self.fetch(server).version
            except OSError:
                continue
        return out

    def snapshot(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for server in self.servers:
            try:
                new = self.fetch(server)
                with self._lock:
                    old = self._last.get(server)
                if old is None or new.at - old.at > FRESH_S:
                    time.sleep(1.0)
                    old, new = new, self.fetch(server)
                with self._lock:
                    self._last[server] = new
            except OSError as exc:
                out.append({"server": server, "error": f"unreachable: {exc}"})
                continue
            out.append(
                {
                    "server": server,
                    "error": "",
                    "version": new.version,
                    "store_up": new.store_up,
                    "swaps": new.swaps,
                    **rates(new, old),
                }
            )
        return out
