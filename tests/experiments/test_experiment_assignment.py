"""Assignment: uniform, sticky across processes, reshuffled by salt, exclusive layers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from scipy import stats as sps

from recsvc.experiments.assignment import (
    HOLDOUT_INDEX,
    bucket_pair,
    bucket_pairs,
    compile_experiment,
    variant_table,
)
from recsvc.experiments.definition import BUCKETS, parse_experiment

REPO = Path(__file__).resolve().parents[2]


def _experiment(**fields: object):
    base = {
        "name": "exp",
        "salt": "salt-1",
        "variants": [{"name": "control", "weight": 0.5}, {"name": "treat", "weight": 0.5}],
    }
    return parse_experiment(base | fields)


def test_buckets_are_uniform_over_100k_ids() -> None:
    ids = [f"user-{i}" for i in range(100_000)]
    pairs = bucket_pairs("uniformity", ids)
    for column in (0, 1):
        # 100 cells of 100 buckets each: expected 1,000 ids per cell.
        counts = np.bincount(pairs[:, column] // 100, minlength=100)
        assert counts.sum() == 100_000
        assert sps.chisquare(counts).pvalue > 0.001
    # The traffic and variant buckets are independent of each other.
    table = np.histogram2d(pairs[:, 0] // 2500, pairs[:, 1] // 2500, bins=4)[0]
    assert sps.chi2_contingency(table).pvalue > 0.001


def test_assignment_identical_in_another_process() -> None:
    ids = [f"u{i}" for i in range(2000)]
    here = [list(bucket_pair("cross-process", u)) for u in ids]
    code = (
        "import json,sys; from recsvc.experiments.assignment import bucket_pair;"
        "ids=json.load(sys.stdin);"
        "print(json.dumps([list(bucket_pair('cross-process', u)) for u in ids]))"
    )
    env = dict(os.environ, PYTHONHASHSEED="12345")
    out = subprocess.run(
        [sys.executable, "-c", code],
        input=json.dumps(ids),
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
        env=env,
        timeout=60,
    )
    assert json.loads(out.stdout) == here


def test_changing_the_salt_reshuffles() -> None:
    ids = [f"u{i}" for i in range(20_000)]
    a = compile_experiment(_experiment(salt="one"))
    b = compile_experiment(_experiment(salt="two"))
    va = np.array([a.variant_of(u) == "treat" for u in ids])
    vb = np.array([b.variant_of(u) == "treat" for u in ids])
    agreement = float((va == vb).mean())
    # Independent halves agree on ~50% of users; the same salt would agree on 100%.
    assert 0.47 < agreement < 0.53
    again = compile_experiment(_experiment(salt="one"))
    assert all(again.variant_of(u) == a.variant_of(u) for u in ids[:2000])


def test_weights_map_to_bucket_shares_and_holdout() -> None:
    table = variant_table([0.2, 0.3, 0.5], holdout=0.1)
    assert len(table) == BUCKETS
    assert (table == HOLDOUT_INDEX).sum() == 1000
    assert list(np.bincount(table[table >= 0])) == [1800, 2700, 4500]


def test_raising_traffic_keeps_variants_and_adds_users() -> None:
    ids = [f"u{i}" for i in range(5000)]
    small = compile_experiment(_experiment(traffic=0.2))
    large = compile_experiment(_experiment(traffic=0.6))
    in_small = {u: small.assign(u, {}, {}) for u in ids}
    in_large = {u: large.assign(u, {}, {}) for u in ids}
    n_small = sum(a is not None for a in in_small.values())
    n_large = sum(a is not None for a in in_large.values())
    assert 0.17 * 5000 < n_small < 0.23 * 5000 and 0.57 * 5000 < n_large < 0.63 * 5000
    for u, a in in_small.items():
        if a is not None:
            b = in_large[u]
            assert b is not None and b.variant == a.variant


def test_layers_are_mutually_exclusive() -> None:
    first = compile_experiment(_experiment(name="a", salt="sa", layer="rank", traffic=0.5))
    second = compile_experiment(
        _experiment(name="b", salt="sb", layer="rank", traffic=0.5, layer_start=5000)
    )
    both = only_a = only_b = 0
    for i in range(20_000):
        u = f"u{i}"
        a, b = first.assign(u, {}, {}), second.assign(u, {}, {})
        both += a is not None and b is not None
        only_a += a is not None and b is None
        only_b += b is not None and a is None
    assert both == 0
    assert 9_500 < only_a < 10_500 and only_a + only_b == 20_000


def test_segment_limits_eligibility() -> None:
    exp = compile_experiment(_experiment(segment='region in ("US-9", "CA")'))
    assert exp.assign("u1", {"region": "DE"}, {}) is None
    got = exp.assign("u1", {"region": "CA"}, {})
    assert got is not None and got.experiment == "exp"


def test_holdout_users_get_defaults_and_are_flagged() -> None:
    exp = compile_experiment(_experiment(holdout=0.2))
    got = [exp.assign(f"u{i}", {}, {}) for i in range(10_000)]
    held = [a for a in got if a is not None and a.holdout]
    assert 1800 < len(held) < 2200
    assert all(a.variant == "holdout" and a.overrides == {} for a in held)
