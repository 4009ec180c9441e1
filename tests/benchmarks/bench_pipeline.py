"""CPU per one-user pipeline call, by stage, on the quick serving bundle (no gRPC, no store).

Command::

    BENCH_OUT=var/bench .venv/bin/python -m tests.benchmarks.bench_pipeline

Builds (or reuses) the ``--quick`` data of ``bench_serving`` (20k users x 10k items, ALS,
200 candidates per user) and times, for 2,000 known users drawn at random, each stage a
Recommend runs (best of 15 passes, ``time.process_time``): ``prepare_users``, the listed
path ``listed_top_k``, ``rank_users`` (the two together), ``to_recommendations`` and the
default artwork. It also times what the one-user shortcuts of ``rank_users`` save: the
general retrieve + filter + top-k + fill of a known user against ``listed_top_k``, and a
region-only user's cached answer against computing it. Prints one JSON object (µs/call).
"""

from __future__ import annotations

import importlib
import json
import os
import random
import time
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from recsvc.bundle import load_bundle
from recsvc.pipeline import (
    UserInput,
    artwork_context,
    choose_artwork,
    prepare_users,
    rank_users,
    to_recommendations,
)
from recsvc.pipeline.model import build_model
from recsvc.pipeline.order import Ranked, listed_top_k
from tests.benchmarks.bench_serving import prepare

recommend = importlib.import_module("recsvc.pipeline.recommend")


def _per_call(fn: Callable[[], Any], calls: int) -> float:
    best = min(timeit.repeat(fn, number=1, repeat=15, timer=time.process_time))
    return round(best / calls * 1e6, 1)


def main() -> int:
    out = Path(os.environ.get("BENCH_OUT", "var/bench"))
    _, root, _ = prepare(out, "quick")
    bundle = load_bundle(root)
    model = build_model(bundle)
    rng = random.Random(5)
    ids = [str(u) for u in bundle.user_ids]
    inputs = [UserInput(rng.choice(ids)) for _ in range(2000)]
    regions = [str(r) for r in bundle.region_names]
    cold = [UserInput(f"visitor-{i}", region=regions[i % len(regions)]) for i in range(2000)]
    batches = [prepare_users(model, [u]) for u in inputs]
    cold_batches = [prepare_users(model, [u]) for u in cold]
    listed_or_none = [listed_top_k(model, b, 10) for b in batches]
    assert all(r is not None for r in listed_or_none), "every user should take the listed path"
    listed = cast("list[Ranked]", listed_or_none)  # checked just above
    recs = [to_recommendations(model, b, r)[0] for b, r in zip(batches, listed, strict=True)]
    policy = model.policy("default")
    n = len(inputs)
    result = {
        "prepare_users": _per_call(lambda: [prepare_users(model, [u]) for u in inputs], n),
        "listed_top_k": _per_call(lambda: [listed_top_k(model, b, 10) for b in batches], n),
        "rank_users": _per_call(lambda: [rank_users(model, [u], 10) for u in inputs], n),
        "to_recommendations": _per_call(
            lambda: [to_recommendations(model, b, r) for b, r in zip(batches, listed, strict=True)],
            n,
        ),
        "default_artwork": _per_call(
            lambda: [
                choose_artwork(policy, policy, artwork_context(b, 0), r.item_ids, None)
                for b, r in zip(batches, recs, strict=True)
            ],
            n,
        ),
        "known_general_path": _per_call(
            lambda: [recommend._rank(model, b, 10) for b in batches[:500]], 500
        ),
        "region_only_cached": _per_call(
            lambda: [recommend._cold_ranked(model, b, 10) for b in cold_batches], n
        ),
        "region_only_general_path": _per_call(
            lambda: [recommend._rank(model, b, 10) for b in cold_batches[:500]], 500
        ),
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
