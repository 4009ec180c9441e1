"""Logs from every policy, exported with ``recsvc bandit export-logs`` and evaluated with
``recsvc bandit evaluate``: IPS, SNIPS and DR of uniform random bracket its true value.

A real server (each policy in turn; ``auto`` is what plain ``recsvc serve`` runs) answers
SelectArtwork on the hand-made bundle; clicks are drawn from a known truth in which the
region the shopper stands in (``context.region``, unrelated to the profile) decides which
variant is clicked. The truth of the uniform-random target on the logged rounds is exact:
the mean over rounds of the item's variants' click probabilities.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from recsvc.cli import main as cli_main
from recsvc.v1 import recommender_pb2 as pb

ITEMS = [f"i{j:03d}" for j in range(1, 90) if j % 3]  # items with 2 or 3 variants
STORES = ("north", "south")


def _p_click(store: str, item: str, variant: str) -> float:
    """The shopper's store decides: in north the first variant, in south the last."""
    k = 1 + int(item[1:]) % 3
    j = int(variant.rsplit("-v", 1)[1])
    best = 0 if store == "north" else k - 1
    return 0.35 if j == best else 0.05


def _truth_random(store: str, item: str) -> float:
    k = 1 + int(item[1:]) % 3
    return float(np.mean([_p_click(store, item, f"{item}-v{j}") for j in range(k)]))


@pytest.mark.slow
@pytest.mark.parametrize("policy", ["auto", "ts", "ts-item"])
def test_exported_logs_evaluate_uniform_random_within_its_ci(
    policy: str, bundle_root: Path, start_server: Callable[..., Any],
    stub_for: Callable[..., Any], tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    url = f"sqlite:///{tmp_path / 'ope.sqlite'}"
    server = start_server(bundle_root, feature_store=url, bandit_policy=policy)
    stub = stub_for(server)
    rng = np.random.default_rng(7)
    truth: list[float] = []
    for r in range(500):
        user = f"u{r % 40:03d}"
        store = STORES[int(rng.integers(2))]
        items = list(rng.choice(ITEMS, 8, replace=False))
        resp = stub.SelectArtwork(
            pb.SelectArtworkRequest(user_id=user, item_ids=items, context=pb.Context(region=store)),
            timeout=10,
        )
        events = []
        for c in resp.choices:
            truth.append(_truth_random(store, c.item_id))
            kinds = [pb.EVENT_TYPE_IMPRESSION]
            if rng.random() < _p_click(store, c.item_id, c.variant_id):
                kinds.append(pb.EVENT_TYPE_CLICK)
            events += [
                pb.Event(event_id=uuid.uuid4().hex, user_id=user, item_id=c.item_id, type=t,
                         variant_id=c.variant_id, request_id=resp.request_id,
                         timestamp_ms=int(time.time() * 1000))
                for t in kinds
            ]  # fmt: skip
        assert stub.RecordEvents(pb.RecordEventsRequest(events=events), timeout=10).accepted
    time.sleep(0.3)  # the exposure flush
    logs = tmp_path / "logs"
    assert cli_main(["bandit", "export-logs", "--feature-store", url, "--out", str(logs)]) == 0
    assert "wrote" in capsys.readouterr().out
    report = tmp_path / "report.json"
    rc = cli_main(["bandit", "evaluate", "--logs", str(logs), "--format", "recsvc",
                   "--policy", "random", "--bootstrap", "300", "--json", str(report)])  # fmt: skip
    assert rc == 0
    printed = capsys.readouterr().out
    assert "replay" in printed  # the row is always there (no value for non-uniform logs)
    estimates = {e["estimator"]: e for e in json.loads(report.read_text())["estimates"]}
    true_value = float(np.mean(truth))
    for name in ("ips", "snips", "dr"):
        e = estimates[name]
        # Nine 95% intervals per run (three estimators, three policies) would miss the truth
        # in about one run in five by chance alone: each is widened to ~3.3 standard errors
        # (1.7x its half-width), which a biased estimator still fails.
        slack = 0.7 * (e["ci_high"] - e["ci_low"]) / 2
        low, high = e["ci_low"] - slack, e["ci_high"] + slack
        assert low <= true_value <= high, (policy, name, e, true_value)
