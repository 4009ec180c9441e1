"""The closed loop on a real server: events recorded over gRPC -> `recsvc events export`
-> `recsvc retrain` (export, train on files + events, gate) -> the server swaps to the
promoted model, which has the new purchases; a worse candidate (trained on shuffled
items) is refused with current unchanged; `recsvc bundles rollback` moves the running
server back."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import cast

import numpy as np
import pandas as pd
import pytest

from recsvc.bundle import load_bundle, resolve_current
from recsvc.cli import main
from recsvc.v1 import recommender_pb2 as pb

pytestmark = pytest.mark.slow

TYPES = {
    "view": pb.EVENT_TYPE_CLICK,
    "click": pb.EVENT_TYPE_CLICK,
    "add_to_cart": pb.EVENT_TYPE_ADD_TO_CART,
    "purchase": pb.EVENT_TYPE_PURCHASE,
}
NEWBIE = "loop-newbie"


def _wait_for(predicate, timeout_s: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def _split(demo: Path, tmp: Path) -> tuple[Path, Path, pd.DataFrame]:
    """Files with the older 85% of the demo interactions (as is, and with the item column
    shuffled: a deliberately worse training set) and the newest 15% to record online."""
    rows = pd.read_csv(demo / "interactions.csv", dtype=str)
    stamps = rows["timestamp"].astype(int)
    cut = int(stamps.quantile(0.85))
    old, new = rows[stamps < cut], rows[stamps >= cut]
    base, shuffled = tmp / "files", tmp / "shuffled"
    for folder in (base, shuffled):
        folder.mkdir()
        for name in ("users.csv", "items.csv", "artwork.csv"):
            shutil.copy(demo / name, folder / name)
    old.to_csv(base / "interactions.csv", index=False)
    worse = old.copy()
    worse["item_id"] = np.random.default_rng(0).permutation(worse["item_id"].to_numpy())
    worse.to_csv(shuffled / "interactions.csv", index=False)
    return base, shuffled, new


def _events(new: pd.DataFrame) -> list[pb.Event]:
    events = [
        pb.Event(
            event_id=f"ev-{n}",
            user_id=cast(str, r.user_id),  # read with dtype=str
            item_id=cast(str, r.item_id),
            type=TYPES[cast(str, r.event_type)],
            timestamp_ms=int(cast(str, r.timestamp)) * 1000,
        )
        for n, r in enumerate(new.itertuples())
        if r.event_type in TYPES
    ]
    last = int(new["timestamp"].astype(int).max()) * 1000
    for j, item in enumerate(("i00003", "i00007", "i00011")):  # a user only seen online
        events.append(
            pb.Event(
                event_id=f"newbie-{j}",
                user_id=NEWBIE,
                item_id=item,
                type=pb.EVENT_TYPE_PURCHASE,
                timestamp_ms=last + 1000 * (j + 1),
            )
        )
    return events


def test_events_to_retrain_gate_and_rollback(
    demo_data_dir: Path, tmp_path: Path, start_server, stub_for, capsys
) -> None:
    base, shuffled, new = _split(demo_data_dir, tmp_path)
    root, events_dir = tmp_path / "bundles", tmp_path / "events"
    store = f"sqlite:///{tmp_path / 'store.sqlite'}"
    train = ["--out", str(root), "--no-tune", "--quiet"]
    assert main(["train", "--data", str(base), *train]) == 0
    first = resolve_current(root).name

    server = start_server(root, feature_store=store)
    stub = stub_for(server)
    events = _events(new)
    accepted = 0
    for start in range(0, len(events), 500):
        reply = stub.RecordEvents(pb.RecordEventsRequest(events=events[start : start + 500]))
        accepted += reply.accepted
    assert accepted == len(events)

    # Export twice: idempotent by event id.
    export = ["events", "export", "--feature-store", store, "--out", str(events_dir)]
    assert main([*export, "--since", "0"]) == 0
    assert main([*export, "--since", "0"]) == 0
    exported = pd.read_parquet(events_dir / "interactions.parquet")
    assert len(exported) == len(events) and exported["event_id"].is_unique
    assert set(exported["event_type"]) <= {"click", "add_to_cart", "purchase"}
    capsys.readouterr()

    retrain = ["retrain", "--feature-store", store, "--events", str(events_dir), *train]
    # A worse candidate: trained on shuffled items. Refused, current unchanged.
    assert main([*retrain, "--data", str(shuffled)]) == 3
    out = capsys.readouterr().out
    assert "promotion: refused (if-better): worse beyond tolerance" in out
    assert resolve_current(root).name == first
    newest = max(p.name for p in root.iterdir() if p.name[:1].isdigit())
    record = json.loads((root / newest / "manifest.json").read_text())["promotion"]
    assert record["decision"] == "refused"
    assert record["candidate"]["ndcg@10"] < record["current_scores"]["ndcg@10"]
    assert record["current_saw_holdout"] is False

    # The real files plus the events: promoted, and the running server swaps to it.
    assert main([*retrain, "--data", str(base)]) == 0
    out = capsys.readouterr().out
    assert "promotion: promoted (if-better): not worse beyond tolerance" in out
    promoted = resolve_current(root).name
    assert promoted not in (first, newest)
    request = pb.RecommendRequest(user_id=NEWBIE, k=10)
    assert _wait_for(lambda: stub.Recommend(request, timeout=10).model_version == promoted)
    bundle = load_bundle(root / promoted)
    row = int(np.flatnonzero(bundle.user_ids == NEWBIE)[0])  # known from events alone
    bought = {str(bundle.item_ids[j]) for j in bundle.user_items[row].indices}
    assert bought == {"i00003", "i00007", "i00011"}
    assert bundle.manifest["training_data"]["interactions"] == len(new) + 3 + (
        len(pd.read_csv(base / "interactions.csv"))
    )
    answer = stub.Recommend(request, timeout=10)
    assert not {i.item_id for i in answer.items} & bought  # seen items filtered

    # Rollback on the running server: back to the first version (the refused one skipped).
    assert main(["bundles", "rollback", "--artifacts", str(root)]) == 0
    assert resolve_current(root).name == first
    assert _wait_for(lambda: stub.Recommend(request, timeout=10).model_version == first)
