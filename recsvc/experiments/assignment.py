"""Deterministic, sticky assignment of users to experiment variants.

One BLAKE2b digest of ``salt:user_id`` (never Python's ``hash()``, which is salted per
process) gives two independent buckets in ``[0, 10000)``: the first decides whether the
user is in the experiment's traffic, the second which variant. Keeping them independent
means raising ``traffic`` adds users without moving anyone between variants.

For a layered experiment the traffic bucket comes from ``layer:<name>:user_id`` instead,
and each experiment of the layer owns a disjoint bucket range (mutually exclusive).

Each experiment compiles to a 10,000-entry table bucket → variant index (``-1`` = the
holdout), so an assignment is one hash and two lookups.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from hashlib import blake2b
from typing import Any

import numpy as np

from recsvc.experiments.definition import BUCKETS, HOLDOUT_VARIANT, Experiment

HOLDOUT_INDEX = -1


def bucket_pair(salt: str, user_id: str) -> tuple[int, int]:
    """Two independent buckets in ``[0, BUCKETS)`` for ``user_id`` under ``salt``."""
    digest = blake2b(f"{salt}:{user_id}".encode(), digest_size=16).digest()
    return (
        int.from_bytes(digest[:8], "big") % BUCKETS,
        int.from_bytes(digest[8:], "big") % BUCKETS,
    )


def bucket_pairs(salt: str, user_ids: list[str]) -> np.ndarray:
    """``[n, 2]`` int array of :func:`bucket_pair` for many users (reports, simulations)."""
    out = np.empty((len(user_ids), 2), dtype=np.int64)
    for i, user_id in enumerate(user_ids):
        out[i] = bucket_pair(salt, user_id)
    return out


def layer_salt(layer: str) -> str:
    return f"layer:{layer}"


def variant_table(weights: list[float], holdout: float = 0.0) -> np.ndarray:
    """Bucket → variant index: the first ``holdout`` share is -1, the rest split by weight."""
    table = np.empty(BUCKETS, dtype=np.int16)
    held = round(holdout * BUCKETS)
    table[:held] = HOLDOUT_INDEX
    rest = BUCKETS - held
    cumulative = np.cumsum(np.asarray(weights, dtype=np.float64))
    edges = held + np.rint(cumulative / cumulative[-1] * rest).astype(np.int64)
    edges[-1] = BUCKETS
    start = held
    for index, end in enumerate(edges):
        table[start:end] = index
        start = max(start, int(end))
    return table


@dataclass(frozen=True, slots=True)
class Assignment:
    """The variant a user gets in one experiment, with the serving overrides to apply."""

    experiment: str
    variant: str
    overrides: dict[str, Any] = field(default_factory=dict)
    holdout: bool = False
    layer: str = ""


@dataclass(frozen=True, slots=True)
class CompiledExperiment:
    """An experiment reduced to what the hot path needs."""

    name: str
    salt: str
    traffic_salt: str | None  # layer salt; None = traffic bucket from the experiment salt
    traffic_lo: int
    traffic_hi: int
    table: tuple[int, ...]
    assignments: tuple[Assignment, ...]  # one per variant index; holdout last
    segment: Any  # recsvc.segments.Segment | None
    start_s: float | None
    stop_s: float | None
    definition: Experiment

    def active(self, now_s: float) -> bool:
        if self.start_s is not None and now_s < self.start_s:
            return False
        return not (self.stop_s is not None and now_s >= self.stop_s)

    def assign(
        self, user_id: str, features: Mapping[str, str], layer_buckets: dict[str, int]
    ) -> Assignment | None:
        """``layer_buckets`` caches the layer hash across the experiments of one call."""
        segment = self.segment
        if segment is not None and not segment.matches(features):
            return None
        traffic_bucket, variant_bucket = bucket_pair(self.salt, user_id)
        if self.traffic_salt is not None:
            traffic_bucket = layer_buckets.get(self.traffic_salt, -1)
            if traffic_bucket < 0:
                traffic_bucket = bucket_pair(self.traffic_salt, user_id)[0]
                layer_buckets[self.traffic_salt] = traffic_bucket
        if not self.traffic_lo <= traffic_bucket < self.traffic_hi:
            return None
        return self.assignments[self.table[variant_bucket]]

    def variant_of(self, user_id: str) -> str:
        """The variant ``user_id`` would get if eligible (ignores traffic and segment)."""
        return self.assignments[self.table[bucket_pair(self.salt, user_id)[1]]].variant


def compile_experiment(experiment: Experiment) -> CompiledExperiment:
    segment = None
    if experiment.segment is not None:
        from recsvc.segments import parse_segment

        segment = parse_segment(experiment.segment)
    layer_range = experiment.layer_range()
    if layer_range is None:
        lo, hi, traffic_salt = 0, experiment.traffic_buckets, None
    else:
        (lo, hi), traffic_salt = layer_range, layer_salt(experiment.layer or "")
    layer = experiment.layer or ""
    assignments = [
        Assignment(experiment.name, v.name, v.overrides.as_dict(), False, layer)
        for v in experiment.variants
    ]
    # Index -1 (holdout) reads the last tuple entry: defaults, flagged as holdout.
    assignments.append(Assignment(experiment.name, HOLDOUT_VARIANT, {}, True, layer))
    table = variant_table([v.weight for v in experiment.variants], experiment.holdout)
    return CompiledExperiment(
        name=experiment.name,
        salt=experiment.salt,
        traffic_salt=traffic_salt,
        traffic_lo=lo,
        traffic_hi=hi,
        table=tuple(int(x) for x in table),
        assignments=tuple(assignments),
        segment=segment,
        start_s=experiment.start.timestamp() if experiment.start else None,
        stop_s=experiment.stop.timestamp() if experiment.stop else None,
        definition=experiment,
    )


def variant_shares(experiment: Experiment) -> np.ndarray:
    """Exact share of the experiment's non-holdout users each variant gets (for SRM)."""
    table = variant_table([v.weight for v in experiment.variants], experiment.holdout)
    counts = np.bincount(table[table >= 0].astype(np.int64), minlength=len(experiment.variants))
    return counts / counts.sum()
