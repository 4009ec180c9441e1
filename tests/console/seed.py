"""A seeded feature store for the console tests: one experiment with exposures and
events over three days, logged the way serving logs them (ExposureRecord + StoredEvent)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from feature_store.base import ExposureRecord, OnlineStore, StoredEvent
from recsvc.bundle import Bundle
from recsvc.experiments.definition import parse_experiment
from recsvc.experiments.manage import prepare_experiment, store_experiment

DAY_MS = 86_400_000
EXPERIMENT = "artwork-test"


def seed(store: OnlineStore, bundle: Bundle, root: Path, n_users: int = 120) -> dict[str, object]:
    """Log exposures/events for ``n_users`` of ``bundle``; returns what was seeded."""
    rng = np.random.default_rng(5)
    definition = parse_experiment(
        {
            "name": EXPERIMENT,
            "salt": "artwork-test-salt",
            "traffic": 1.0,
            "variants": [
                {"name": "control", "weight": 0.5},
                {"name": "treat", "weight": 0.5, "overrides": {"bandit_policy": "ts"}},
            ],
        }
    )
    store_experiment(
        store, prepare_experiment(store, definition, source="seed", model_versions=None)
    )
    art = bundle.artwork
    assert art is not None
    with_art = [i for i in range(len(bundle.item_ids)) if art.indptr[i + 1] > art.indptr[i]][:12]
    regions = bundle.user_features.get("region")
    now = int(time.time() * 1000)
    start = now - 2 * DAY_MS - 3_600_000
    exposures, events = [], []
    n = 0
    for u in range(n_users):
        user = str(bundle.user_ids[u])
        region = str(regions[u]) if regions is not None else ""
        variant = "control" if u % 2 == 0 else "treat"
        for r in range(3):
            ts = start + int(rng.integers(0, 2 * DAY_MS)) + r * 1000
            items = [int(x) for x in rng.choice(with_art, 3, replace=False)]
            item_ids, variant_ids, props = [], [], []
            for i in items:
                vs = art.variant_ids[art.indptr[i] : art.indptr[i + 1]]
                k = int(rng.integers(0, len(vs)))
                item_ids.append(str(bundle.item_ids[i]))
                variant_ids.append(str(vs[k]))
                props.append(1.0 / len(vs))
            request = f"req-{u}-{r}"
            exposures.append(
                ExposureRecord(
                    request, user, ts, item_ids, variant_ids, props, bundle.version,
                    EXPERIMENT, variant, "ts", {"region": region} if region else {},
                )
            )  # fmt: skip
            for item, var in zip(item_ids, variant_ids, strict=True):
                n += 1
                events.append(StoredEvent(f"e{n}", user, item, "impression", ts + 10, request, var))
                p_click = 0.25 if variant == "treat" else 0.15
                if rng.random() < p_click:
                    n += 1
                    events.append(StoredEvent(f"e{n}", user, item, "click", ts + 20, request, var))
                    if rng.random() < 0.5:
                        n += 1
                        events.append(StoredEvent(f"e{n}", user, item, "add_to_cart", ts + 30))
                        if rng.random() < 0.5:
                            n += 1
                            events.append(StoredEvent(f"e{n}", user, item, "purchase", ts + 40))
    store.log_exposures(exposures)
    events.sort(key=lambda e: e.timestamp_ms)
    for i in range(0, len(events), 500):
        store.record_events(events[i : i + 500])
    return {"experiment": EXPERIMENT, "events": len(events), "exposures": len(exposures)}
