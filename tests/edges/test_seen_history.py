"""The seen setting reaches the bundle's training history, not only recent events.

``recsvc train`` records which kinds of event made each cell of the user x item history
(``user_items_seen_by``), so with ``--seen-events none`` an item the user only viewed in
the training data comes back into their list (Recommend over a real gRPC channel, an
experiment variant's ``seen_events`` override, ``recsvc export``, ``recsvc audience``),
while the default hides it, and an item the user bought stays hidden under every setting.
A bundle without the array (an older one, or the Spark trainer's) loads and hides its
whole history, as before."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pandas as pd
import pytest
import yaml

from feature_store.factory import open_store
from recsvc.bundle import SEEN_BY, Bundle, BundleError, load_bundle, publish, write_bundle
from recsvc.cli import main
from recsvc.events import ALWAYS_SEEN, SEEN_CLASSES, hidden_cells, parse_seen_events
from recsvc.experiments.router import ExperimentRouter
from recsvc.pipeline import UserInput, recommend
from recsvc.pipeline.filters import allowed_mask
from recsvc.pipeline.model import build_model
from recsvc.pipeline.users import prepare_users
from recsvc.serving.server import ServerThread
from recsvc.settings import ServingSettings
from recsvc.v1 import recommender_pb2 as pb
from recsvc.v1 import recommender_pb2_grpc as pb_grpc

K = 10


@dataclasses.dataclass(frozen=True)
class Picked:
    user: str
    viewed: str  # only views of it in the training data; would rank in the user's top K
    bought: str  # a purchase among its events; would rank in the user's top K


def _pick(bundle: Bundle) -> Picked:
    """A user with a view-only item and a purchased item that each outscore every
    precomputed candidate of theirs (so either is in the top K the moment it is allowed)."""
    model = build_model(bundle)
    view = np.uint8(1 << SEEN_CLASSES.index("view"))
    always = np.uint8(1)
    ui, cands, kinds = bundle.user_items, bundle.candidates, bundle.user_items_seen_by
    assert kinds is not None and bundle.user_items_seen_classes == SEEN_CLASSES
    for u in range(len(bundle.user_ids)):
        lo, hi = ui.indptr[u], ui.indptr[u + 1]
        if cands.indptr[u + 1] == cands.indptr[u]:
            continue
        top = float(cands.data[cands.indptr[u]])
        items = ui.indices[lo:hi].astype(np.int64)
        batch = prepare_users(model, [UserInput(str(bundle.user_ids[u]), include_seen=True)])
        sold = allowed_mask(model, batch, np.array([0]), items[None, :])[0]
        scores = bundle.item_factors[items] @ bundle.user_factors[u]
        cell = kinds[lo:hi]
        viewed = np.flatnonzero((cell == view) & sold & (scores > top))
        bought = np.flatnonzero(((cell & always) != 0) & sold & (scores > top))
        # Under `none`, at most K - 1 revealed items may outscore the viewed one.
        revealed = ((cell & always) == 0) & sold
        if len(viewed) and len(bought):
            best = viewed[np.argmax(scores[viewed])]
            if int(np.count_nonzero(revealed & (scores > scores[best]))) < K:
                ids = bundle.item_ids
                return Picked(
                    str(bundle.user_ids[u]), str(ids[items[best]]), str(ids[items[bought[0]]])
                )
    raise AssertionError("the demo data has no user with both kinds of item")


@pytest.fixture(scope="module")
def picked(trained_bundle_root: Path) -> Picked:
    return _pick(load_bundle(trained_bundle_root))


def test_training_records_the_kinds_of_each_cell(trained_bundle_root: Path) -> None:
    """The demo data has views, clicks, add-to-carts and purchases; every cell carries the
    bits of the kinds folded into it, and the default setting hides every cell."""
    bundle = load_bundle(trained_bundle_root)
    kinds = bundle.user_items_seen_by
    assert kinds is not None and kinds.dtype == np.uint8 and len(kinds) == bundle.user_items.nnz
    manifest = bundle.manifest["arrays"]["user_items_seen_by"]
    assert manifest["classes"] == list(SEEN_CLASSES)
    assert set(np.unique(kinds).tolist()) - {0} and not (kinds >> len(SEEN_CLASSES)).any()
    classes = bundle.user_items_seen_classes
    assert hidden_cells(kinds, classes, parse_seen_events("all")).all()
    only_always = hidden_cells(kinds, classes, parse_seen_events("none"))
    np.testing.assert_array_equal(only_always, (kinds & 1) != 0)
    # A class this build does not know hides (a newer writer's kind read by this server).
    assert hidden_cells(np.array([2], np.uint8), ("always", "share"), ALWAYS_SEEN).all()


def _server(root: Path, **extra: Any) -> ServerThread:
    settings = ServingSettings.model_validate(
        {"artifacts": root, "host": "127.0.0.1", "port": 0, "watch_interval_s": 5.0,
         "exposure_flush_s": 0.05, "grace_s": 0.5, "bandit_policy": "default", **extra}
    )  # fmt: skip
    return ServerThread(settings).start()


def _served(server: ServerThread, user: str) -> list[str]:
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = pb_grpc.RecommenderStub(channel)
        reply = stub.Recommend(pb.RecommendRequest(user_id=user, k=K), timeout=10)
    return [i.item_id for i in reply.items]


@pytest.fixture(scope="module")
def served(trained_bundle_root: Path, picked: Picked) -> dict[str, list[str]]:
    """The user's Recommend answer per server setting (store off: history only)."""
    out = {}
    for name, extra in (("default", {}), ("none", {"seen_events": "none"})):
        server = _server(trained_bundle_root, feature_store="none", **extra)
        try:
            out[name] = _served(server, picked.user)
        finally:
            server.stop()
    return out


def test_serving_hides_a_viewed_item_by_default_and_shows_it_with_none(
    served: dict[str, list[str]], picked: Picked
) -> None:
    assert len(served["default"]) == len(served["none"]) == K
    assert picked.viewed not in served["default"]
    assert picked.viewed in served["none"]
    assert picked.bought not in served["default"] + served["none"]


def test_an_experiment_variant_sets_the_rule_for_the_history(
    trained_bundle_root: Path, picked: Picked, tmp_path: Path
) -> None:
    """Server default (all hide); the user's variant says ``seen_events: []`` (a salt that
    puts them there is searched for through the router the server uses)."""
    url = f"sqlite:///{tmp_path / 'store.sqlite'}"
    path = tmp_path / "exp.yaml"
    variants = [
        {"name": "control", "weight": 0.5},
        {"name": "shown", "weight": 0.5, "overrides": {"seen_events": []}},
    ]
    store = open_store(url)
    try:
        for attempt in range(40):
            spec = {"name": "history-seen", "salt": f"salt-{attempt}", "variants": variants}
            path.write_text(yaml.safe_dump(spec), encoding="utf-8")
            argv = ["experiments", "create", "--file", str(path), "--feature-store", url,
                    "--artifacts", str(trained_bundle_root), "--replace"]  # fmt: skip
            assert main(argv) == 0
            arm = ExperimentRouter(store, background=False).assign(picked.user, {})
            if arm is not None and arm.variant == "shown":
                break
        else:
            raise AssertionError("no salt put the user in the 'shown' variant")
    finally:
        store.close()
    server = _server(trained_bundle_root, feature_store=url)
    try:
        items = _served(server, picked.user)
    finally:
        server.stop()
    assert picked.viewed in items and picked.bought not in items


def _export(root: Path, out: Path, user: str, *extra: str) -> list[str]:
    users = out.parent / "users.txt"
    users.write_text(f"{user}\n")
    argv = ["export", "--artifacts", str(root), "--out", str(out), "--k", str(K),
            "--users", str(users), "--no-progress", "--feature-store", "none", *extra]  # fmt: skip
    assert main(argv) == 0
    return pd.read_csv(out).item_id.astype(str).tolist()


def test_export_follows_the_setting_and_equals_serving(
    trained_bundle_root: Path, picked: Picked, served: dict[str, list[str]], tmp_path: Path
) -> None:
    """Export reads the history through its row reader (memory-mapped bundle)."""
    default = _export(trained_bundle_root, tmp_path / "a.csv", picked.user)
    shown = _export(trained_bundle_root, tmp_path / "b.csv", picked.user, "--seen-events", "none")
    assert default == served["default"] and shown == served["none"]
    assert picked.viewed in shown and picked.viewed not in default
    assert picked.bought not in default + shown


def _audience(root: Path, out: Path, item: str, *extra: str) -> list[str]:
    items = out.parent / f"items-{out.stem}.txt"
    items.write_text(item + "\n")
    argv = ["audience", "--artifacts", str(root), "--out", str(out), "--top", "500",
            "--items", str(items), "--no-progress", "--feature-store", "none", *extra]  # fmt: skip
    assert main(argv) == 0
    return pd.read_csv(out).user_id.astype(str).tolist()


def test_audience_follows_the_setting(
    trained_bundle_root: Path, picked: Picked, tmp_path: Path
) -> None:
    viewed = picked.viewed
    assert picked.user not in _audience(trained_bundle_root, tmp_path / "a.csv", viewed)
    none = ("--seen-events", "none")
    assert picked.user in _audience(trained_bundle_root, tmp_path / "b.csv", viewed, *none)
    bought = picked.bought
    assert picked.user not in _audience(trained_bundle_root, tmp_path / "c.csv", bought, *none)


@pytest.fixture(scope="module")
def kindless_root(trained_bundle_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The trained bundle written without the per-cell kinds (as the Spark trainer and
    bundles from before the array write it)."""
    bundle = load_bundle(trained_bundle_root)
    plain = dataclasses.replace(bundle, user_items_seen_by=None, user_items_seen_classes=())
    manifest = {k: v for k, v in bundle.manifest.items() if k not in ("arrays", "files")}
    root = tmp_path_factory.mktemp("kindless")
    publish(
        root,
        lambda tmp, v: write_bundle(tmp, dataclasses.replace(plain, version=v, manifest=manifest)),
    )
    return root


def test_a_bundle_without_kinds_hides_its_whole_history(
    kindless_root: Path, picked: Picked, tmp_path: Path
) -> None:
    bundle = load_bundle(kindless_root)
    assert bundle.user_items_seen_by is None and not (bundle.path / f"{SEEN_BY}.npy").exists()
    model = build_model(bundle)
    for seen in ("all", "none"):
        user = UserInput(picked.user, seen_events=parse_seen_events(seen))
        items = recommend(model, [user], K)[0].item_ids
        assert picked.viewed not in items and picked.bought not in items
    shown = _export(kindless_root, tmp_path / "a.csv", picked.user, "--seen-events", "none")
    assert picked.viewed not in shown


def test_the_reader_refuses_kinds_it_cannot_line_up(
    trained_bundle_root: Path, tmp_path: Path
) -> None:
    bundle = load_bundle(trained_bundle_root)
    kinds = bundle.user_items_seen_by
    assert kinds is not None
    short = dataclasses.replace(bundle, user_items_seen_by=kinds[:-1])
    with pytest.raises(BundleError, match=r"user_items\.seen_by\.npy: shape"):
        write_bundle(tmp_path / "short", short)
    # The manifest names the classes but the file is not listed: refused, not ignored.
    copy = tmp_path / "unlisted"
    write_bundle(copy, bundle)
    manifest = json.loads((copy / "manifest.json").read_text())
    del manifest["files"][f"{SEEN_BY}.npy"]
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="lists the file or its classes, not both"):
        load_bundle(copy)


@pytest.fixture(autouse=True)
def _no_env_store(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("RECSVC_FEATURE_STORE", raising=False)
    monkeypatch.delenv("RECSVC_SEEN_EVENTS", raising=False)
    yield


def test_each_cell_keeps_the_kinds_folded_into_it() -> None:
    """build_matrix(kinds=True): the OR of the kinds of a cell's events, aligned with the
    matrix's cells; a type of one's own (``wishlist``) and impressions give no kind, and a
    cell made only of them never hides; a file without event types is all plain
    interactions (always seen)."""
    from training.data import build_matrix, dataset_from_frames

    rows = [
        ("u1", "a", "view"), ("u1", "a", "purchase"), ("u1", "b", "view"),
        ("u1", "c", "click"), ("u1", "c", "click"), ("u2", "a", "add_to_cart"),
        ("u2", "d", "wishlist"), ("u2", "d", "impression"), ("u2", "b", "rating"),
    ]  # fmt: skip
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "event_type"])
    frame["timestamp"] = 1_700_000_000
    data = dataset_from_frames(frame, event_weights={"wishlist": 1.0})
    matrix = build_matrix(data, kinds=True)
    assert matrix.seen_by is not None and len(matrix.seen_by) == matrix.matrix.nnz
    bit = {name: 1 << i for i, name in enumerate(SEEN_CLASSES)}
    coo = matrix.matrix.tocoo()
    got = {
        (str(matrix.user_ids[r]), str(matrix.item_ids[c])): int(k)
        for r, c, k in zip(coo.row, coo.col, matrix.seen_by, strict=True)
    }
    assert got == {
        ("u1", "a"): bit["always"] | bit["view"],
        ("u1", "b"): bit["view"],
        ("u1", "c"): bit["click"],
        ("u2", "a"): bit["add_to_cart"],
        ("u2", "b"): bit["always"],
        ("u2", "d"): 0,
    }
    none = hidden_cells(matrix.seen_by, SEEN_CLASSES, parse_seen_events("none"))
    everything = hidden_cells(matrix.seen_by, SEEN_CLASSES, parse_seen_events("all"))
    kinds = dict(zip(got, zip(none.tolist(), everything.tolist(), strict=True), strict=True))
    assert kinds[("u1", "a")] == (True, True) and kinds[("u1", "b")] == (False, True)
    assert kinds[("u2", "d")] == (False, False)
    plain = frame.drop(columns=["event_type"])
    untyped = build_matrix(dataset_from_frames(plain), kinds=True)
    assert untyped.seen_by is not None and (untyped.seen_by == bit["always"]).all()
