"""The offline job end to end: train -> bundle -> load, CLI, bad input, cold start."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from recsvc.bundle import list_versions, load_bundle, publish, resolve_current, write_bundle
from recsvc.cli import main as cli_main
from tests.fixtures.bundle import TINY_TRAIN_CONFIG
from tests.fixtures.data import write_contract
from training.data import build_matrix, load_dataset
from training.errors import TrainingError
from training.pipeline import build_bundle, train


def _tree(root: Path) -> dict[str, float]:
    """Every path under root with its mtime: 'unchanged' means equal trees."""
    return {str(p.relative_to(root)): p.lstat().st_mtime for p in sorted(root.rglob("*"))}


def test_train_bundle_load_round_trip(demo_data_dir: Path, tmp_path: Path) -> None:
    dataset = load_dataset(demo_data_dir)
    matrix = build_matrix(dataset)
    built = build_bundle(dataset, matrix, TINY_TRAIN_CONFIG)
    version = publish(tmp_path, lambda tmp, v: write_bundle(tmp, replace(built, version=v)))
    loaded = load_bundle(tmp_path)
    assert loaded.version == version and loaded.path == tmp_path / version
    for name in ("user_ids", "item_ids", "user_factors", "item_factors", "popularity"):
        np.testing.assert_array_equal(getattr(built, name), getattr(loaded, name), err_msg=name)
    for name in ("user_items", "candidates", "region_candidates", "item_availability"):
        a, b = getattr(built, name), getattr(loaded, name)
        assert (a != b).nnz == 0 and a.dtype == b.dtype, name
    assert loaded.user_items.shape == (len(matrix.user_ids), len(matrix.item_ids))
    assert (loaded.user_items != matrix.matrix).nnz == 0

    # Recommending from the loaded bundle: precomputed candidates are the exact top-C of
    # user . item over unseen items.
    for u in (0, 7, len(loaded.user_ids) - 1):
        items, scores = loaded.user_candidates(u)
        raw = loaded.user_factors[u] @ loaded.item_factors.T
        full = raw.copy()
        seen = loaded.user_items[u].indices
        full[seen] = -np.inf
        assert not set(items) & set(seen)
        assert len(items) == min(TINY_TRAIN_CONFIG.candidates, len(full) - len(seen))
        np.testing.assert_allclose(scores, full[items], rtol=1e-4, atol=1e-5)
        assert np.all(np.diff(scores) <= 1e-6)
        cutoff = scores[-1]
        assert np.sum(full > cutoff + 1e-4) <= len(items)  # nothing better was left out
        # and the FAISS index ranks the same way for that user
        _, top = loaded.index.search(loaded.user_factors[u : u + 1], 1)
        assert raw[top[0, 0]] == pytest.approx(raw.max(), rel=1e-5)


def test_manifest_records_what_was_built(trained_bundle) -> None:  # type: ignore[no-untyped-def]
    m = trained_bundle.manifest
    assert m["schema_version"] == 1 and m["version"] == trained_bundle.version
    assert len(m["data_fingerprint"]) == 64
    assert m["model"]["name"] == "als" and m["model"]["selected_by"] == "config"
    assert "search disabled" in m["model"]["reason"]
    assert m["model"]["params"]["factors"] == 16
    assert m["model"]["fold_in"]["regularization"] > 0
    assert m["index"]["kind"] == "flat" and m["index"]["recall_at_10"] == 1.0
    for stage in ("load", "als", "popularity", "index", "candidates", "catalog"):
        assert m["stages"][stage]["seconds"] >= 0 and m["stages"][stage]["peak_rss_mib"] > 0
    assert {"numpy", "implicit", "faiss-cpu"} <= set(m["libraries"])
    assert m["params"]["event_weights"]["purchase"] > m["params"]["event_weights"]["view"]
    np.testing.assert_allclose(
        trained_bundle.item_gram,
        trained_bundle.item_factors.astype(np.float64).T @ trained_bundle.item_factors,
        rtol=1e-5,
    )


def test_cli_train_publishes(
    demo_data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "root"
    argv = ["train", "--data", str(demo_data_dir), "--out", str(root), "--no-tune"]
    rc = cli_main([*argv, "--factors", "8", "--candidates", "20", "--threads", "1", "--no-hybrid"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "published" in out and "load:" in err and "candidates:" in err  # progress lines
    bundle = load_bundle(root)
    assert bundle.user_factors.shape[1] == 8
    assert np.diff(bundle.candidates.indptr).max() == 20


def test_bad_input_writes_nothing(
    tmp_path: Path, trained_bundle_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = write_contract(
        tmp_path / "bad", interactions=[{"user_id": "u1", "item_id": "i1", "when": 5}]
    )
    fresh = tmp_path / "fresh-root"
    assert cli_main(["train", "--data", str(bad), "--out", str(fresh), "--no-tune"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("recsvc train: error:") and "load: failed" in err[-2]
    assert "column 'timestamp'" in err[-1] and "interactions" in err[-1]
    assert not fresh.exists()

    existing = tmp_path / "existing"
    shutil.copytree(trained_bundle_root, existing, symlinks=True)
    before = _tree(existing)
    assert cli_main(["train", "--data", str(bad), "--out", str(existing)]) == 2
    assert _tree(existing) == before


def test_failed_training_leaves_current(
    demo_data_dir: Path, tmp_path: Path, trained_bundle_root: Path
) -> None:
    root = tmp_path / "root"
    shutil.copytree(trained_bundle_root, root, symlinks=True)
    before, current = _tree(root), resolve_current(root)
    broken = TINY_TRAIN_CONFIG.model_copy(update={"model_params": {"no_such_param": 1}})
    with pytest.raises(TrainingError, match="no_such_param"):
        train(demo_data_dir, root, broken, verbose=False)
    assert _tree(root) == before and resolve_current(root) == current
    assert list_versions(root) == [current.name]


def test_cold_start_region_candidates_fit_the_region(trained_bundle) -> None:  # type: ignore[no-untyped-def]
    """A user known only by region gets items available there, ranked by what the region's
    users actually take, which covers them better than other regions' lists do."""
    b = trained_bundle
    assert len(b.region_names) > 1
    source = b.manifest["candidates"]["region_source"]
    assert source in ("region_popularity", "lightfm")
    if source == "lightfm":
        from training.cold_start import hybrid_region_scores

        expected_scores = hybrid_region_scores(b.hybrid, b.region_names)
    else:
        expected_scores = b.region_popularity
    regions = b.user_features["region"]
    own, others = [], []
    for r, name in enumerate(b.region_names):
        items, scores = b.cold_candidates(r)
        assert len(items) > 0 and np.all(np.diff(scores) <= 0)
        available = b.available_everywhere.copy()
        available[b.item_availability[:, r].nonzero()[0]] = True
        assert available[items].all(), f"region {name} got an unavailable item"
        best = np.flatnonzero(available)[np.argmax(expected_scores[r, available])]
        assert expected_scores[r, items[0]] == pytest.approx(expected_scores[r, best])
        taken = b.user_items[np.flatnonzero(regions == name)].indices
        cover = [
            np.isin(taken, b.cold_candidates(x)[0][:20]).mean() for x in range(len(b.region_names))
        ]
        own.append(cover[r])
        others.append(np.mean(cover[:r] + cover[r + 1 :]))
    assert np.mean(own) > np.mean(others) + 0.05, (own, others)


def test_manifest_is_plain_json(trained_bundle_root: Path) -> None:
    text = (resolve_current(trained_bundle_root) / "manifest.json").read_text()
    manifest = json.loads(text)
    assert set(manifest["files"]) >= {"user_factors.npy", "item_index.faiss", "candidates.data.npy"}


def test_cli_train_materializes_profiles(demo_data_dir: Path, tmp_path: Path) -> None:
    from feature_store.factory import open_store

    url = f"sqlite:///{tmp_path / 'store.sqlite'}"
    argv = ["train", "--data", str(demo_data_dir), "--out", str(tmp_path / "root"), "--quiet"]
    assert (
        cli_main([*argv, "--no-tune", "--no-hybrid", "--factors", "4", "--feature-store", url]) == 0
    )
    users = load_dataset(demo_data_dir).users
    assert users is not None
    first = users.iloc[0]
    store = open_store(url)
    try:
        state, _ = store.read_user(str(first["user_id"]))
    finally:
        store.close()
    assert state.profile["region"] == first["region"]


def test_region_source_is_the_better_one_on_held_out_users(trained_bundle) -> None:  # type: ignore[no-untyped-def]
    choice = trained_bundle.manifest["candidates"]["region_source_choice"]
    ndcg = choice["ndcg@10"]
    assert set(ndcg) == {"region_popularity", "lightfm"} and choice["held_out_users"] >= 10
    assert choice["source"] == max(ndcg, key=lambda s: (ndcg[s], s == "region_popularity"))
    assert all(0 < v <= 1 for v in ndcg.values())
