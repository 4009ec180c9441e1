"""Cold start from profile features: the source chosen on held-out users, shipped in the
bundle and scored by ``recsvc.bundle.scoring.cold_start_scores`` (real data, real fits)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from recsvc.bundle import load_bundle
from recsvc.bundle.scoring import cold_start_scores
from training.cold_start import choose_profile_source
from training.config import TrainConfig
from training.data import build_matrix, load_dataset
from training.demo_data import generate
from training.pipeline import train


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo")
    generate(out, users=800, items=120, seed=3, fmt="csv")
    return out


def test_profile_segments_beat_popularity_on_held_out_users(demo: Path) -> None:
    dataset = load_dataset(demo)
    choice = choose_profile_source(dataset, build_matrix(dataset), seed=1)
    cands = choice.candidates
    assert choice.arrays.source == "segments"
    assert cands["segments:region"]["ndcg"] > cands["popularity"]["ndcg"]
    assert choice.held_out_users > 100


def test_no_profile_columns_ship_global_popularity(demo: Path) -> None:
    dataset = load_dataset(demo)
    users = dataset.users
    assert users is not None
    noise = users.assign(region="r", age_bucket="a", gender="g")  # one value: no signal
    choice = choose_profile_source(
        type(dataset)(**{**dataset.__dict__, "users": noise}), build_matrix(dataset), seed=1
    )
    assert choice.arrays.source == "popularity"


def test_trained_bundle_serves_profiles_with_the_chosen_source(demo: Path, tmp_path: Path) -> None:
    version = train(demo, tmp_path, TrainConfig(tune=False, hybrid=False, factors=8), verbose=False)
    bundle = load_bundle(tmp_path / version)
    assert bundle.cold_start is not None
    assert bundle.manifest["cold_start"]["source"] == bundle.cold_start.source != "popularity"
    a = cold_start_scores(bundle, {"region": "US-9", "age_bucket": "18-24", "gender": "f"})
    b = cold_start_scores(bundle, {"region": "JP", "age_bucket": "65+", "gender": "m"})
    assert a.shape == (len(bundle.item_ids),)
    assert not np.array_equal(np.argsort(-a)[:10], np.argsort(-b)[:10])
    # No known feature: global popularity's order.
    none = cold_start_scores(bundle, {})
    np.testing.assert_array_equal(
        np.argsort(-none, kind="stable")[:10], np.argsort(-bundle.popularity, kind="stable")[:10]
    )


def test_a_pure_noise_column_is_not_summed_in(demo: Path) -> None:
    dataset = load_dataset(demo)
    users = dataset.users
    assert users is not None
    rng = np.random.default_rng(0)
    noisy = users.assign(noise=rng.choice(["n0", "n1", "n2", "n3", "n4"], len(users)))
    choice = choose_profile_source(
        type(dataset)(**{**dataset.__dict__, "users": noisy}), build_matrix(dataset), seed=1
    )
    assert "segments:noise" in choice.candidates  # scored alone ...
    summed = [c for c in choice.candidates if "+" in c]
    assert summed and all("noise" not in c for c in summed)  # ... but not a "helpful" column
    assert "noise" not in str(choice.to_dict()["groupings"])


def test_scoring_in_chunks_and_capping_held_out_users(
    demo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Distinct profiles are scored a chunk at a time: a chunk smaller than the number of
    profiles gives the same per-candidate scores; the held-out sample is capped."""
    import training.cold_start as cold_start

    dataset = load_dataset(demo)
    matrix = build_matrix(dataset)
    whole = choose_profile_source(dataset, matrix, seed=1)
    monkeypatch.setattr(cold_start, "SCORE_CHUNK", 7)
    chunked = choose_profile_source(dataset, matrix, seed=1)
    assert chunked.candidates == whole.candidates
    capped = choose_profile_source(dataset, matrix, seed=1, max_held_out=60)
    assert 0 < capped.held_out_users <= 60 < whole.held_out_users


def test_above_the_refit_limit_profiles_still_choose_among_counted_sources(
    demo: Path, tmp_path: Path
) -> None:
    """Past ``region_validation_max_nnz`` the embedding and LightFM candidates (refits) are
    skipped, but segment popularity is still chosen on held-out users and shipped."""
    config = TrainConfig(tune=False, hybrid=False, factors=8, region_validation_max_nnz=0)
    version = train(demo, tmp_path, config, verbose=False)
    bundle = load_bundle(tmp_path / version)
    shipped = bundle.manifest["cold_start"]
    assert bundle.cold_start is not None and bundle.cold_start.source == "segments"
    assert shipped["source"] == "segments" and "embedding" not in shipped["candidates_ndcg@10"]
    assert "embedding and LightFM not tried" in shipped["reason"]
