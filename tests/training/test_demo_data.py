"""The synthetic storefront: deterministic, valid, regional, and carrying real signal."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

import training.demo_data as demo
from recsvc.cli import main as cli_main
from tests.fixtures.data import DEMO_ITEMS, DEMO_USERS
from training.data import Dataset, build_matrix, item_regions, load_dataset

FILES = ("interactions", "users", "items", "artwork")


def test_same_seed_same_bytes_other_seed_other_data(tmp_path: Path) -> None:
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        demo.generate(tmp_path / name, users=120, items=60, seed=seed)
    for file in FILES:
        a, b = (tmp_path / d / f"{file}.csv" for d in "ab")
        assert a.read_bytes() == b.read_bytes(), file
    different = (tmp_path / "c" / "interactions.csv").read_bytes()
    assert different != (tmp_path / "a" / "interactions.csv").read_bytes()


def test_fixture_passes_validation_with_the_promised_schema(demo_dataset: Dataset) -> None:
    assert demo_dataset.users is not None and demo_dataset.items is not None
    assert demo_dataset.artwork is not None
    assert len(demo_dataset.users) == DEMO_USERS and len(demo_dataset.items) == DEMO_ITEMS
    assert list(demo_dataset.users.columns) == ["user_id", "region", "age_bucket", "gender"]
    assert set(demo_dataset.users["region"]) <= set(demo.REGIONS)
    assert len(set(demo_dataset.users["region"])) >= 10
    items = demo_dataset.items
    assert list(items.columns) == ["item_id", "regions", "category", "brand", "price_band"]
    everywhere = (items["regions"] == "").mean()
    assert 0.2 < everywhere < 0.6, "a share of items sells everywhere, the rest regionally"
    assert set(demo_dataset.interactions["event_type"]) == set(demo.EVENT_TYPES)
    per_user = demo_dataset.interactions.groupby("user_id").size()
    assert per_user.min() >= 3 and 15 < per_user.mean() < 25
    stamps = demo_dataset.interactions["timestamp"]
    assert stamps.max() - stamps.min() > 80 * 86_400


def test_artwork_has_two_to_six_distinct_themed_variants(demo_dataset: Dataset) -> None:
    artwork = demo_dataset.artwork
    assert artwork is not None and list(artwork.columns) == ["item_id", "variant_id", "theme"]
    counts = artwork.groupby("item_id").size()
    assert len(counts) == DEMO_ITEMS and counts.min() >= 2 and counts.max() <= 6
    assert set(artwork["theme"]) == set(demo.THEMES)
    assert not artwork.duplicated(["item_id", "theme"]).any()


def test_users_only_touch_items_sold_in_their_region(demo_dataset: Dataset) -> None:
    assert demo_dataset.users is not None
    regions = item_regions(demo_dataset)
    region_of = dict(zip(demo_dataset.users["user_id"], demo_dataset.users["region"], strict=True))
    pairs = demo_dataset.interactions[["user_id", "item_id"]].drop_duplicates()
    restricted = [
        (region_of[u], regions[i])
        for u, i in zip(pairs["user_id"], pairs["item_id"], strict=True)
        if i in regions
    ]
    assert restricted, "some interactions are with regional items"
    assert all(region in allowed for region, allowed in restricted)


def test_parquet_and_several_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(demo, "CHUNK_USERS", 70)
    summary = demo.generate(
        tmp_path, users=250, items=40, interactions=2_500, seed=3, fmt="parquet"
    )
    dataset = load_dataset(tmp_path)
    assert dataset.users is not None and dataset.users["user_id"].is_unique
    assert len(dataset.users) == 250 and dataset.users["user_id"].str.len().nunique() == 1
    assert summary.interactions == len(dataset.interactions)
    assert abs(summary.interactions - 2_500) < 250, "the --interactions target is honoured"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"{f}.parquet" for f in FILES)


def test_refuses_to_mix_formats_in_one_folder(tmp_path: Path) -> None:
    demo.generate(tmp_path, users=20, items=10, fmt="csv")
    with pytest.raises(Exception, match="both formats"):
        demo.generate(tmp_path, users=20, items=10, fmt="parquet")


def test_cli_writes_the_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["demo-data", "--out", str(tmp_path), "--users", "30", "--items", "12", "--seed", "2"]
    assert cli_main(args) == 0
    assert "30 users" in capsys.readouterr().out
    assert load_dataset(tmp_path).users is not None


def _ndcg_at_10(recommended: np.ndarray, truth: sp.csr_matrix) -> float:
    discounts = 1.0 / np.log2(np.arange(2, 12))
    hits = np.take_along_axis(truth.toarray() > 0, recommended, axis=1)
    ideal = np.array([discounts[: min(10, n)].sum() for n in np.diff(truth.indptr)])
    keep = ideal > 0
    return float(((hits * discounts).sum(axis=1)[keep] / ideal[keep]).mean())


def _top10(scores: np.ndarray, seen: sp.csr_matrix | None = None) -> np.ndarray:
    scores = np.array(scores, dtype=np.float64)
    if seen is not None:
        scores[seen.toarray() > 0] = -np.inf
    return np.argsort(-scores, axis=1, kind="stable")[:, :10]


@pytest.fixture(scope="module")
def signal_data(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    out = tmp_path_factory.mktemp("demo-signal")
    demo.generate(out, users=2_000, items=400, seed=11)
    return load_dataset(out)


def test_region_alone_beats_global_popularity_for_cold_users(signal_data: Dataset) -> None:
    assert signal_data.users is not None
    result = build_matrix(signal_data)
    binary = (result.matrix > 0).astype(np.float64).tocsr()
    users = signal_data.users.set_index("user_id").loc[result.user_ids]
    held_out = np.random.default_rng(0).random(binary.shape[0]) < 0.2
    train, test = binary[~held_out], binary[held_out]
    popularity = np.asarray(train.sum(axis=0)).ravel()
    global_ndcg = _ndcg_at_10(_top10(np.tile(popularity, (test.shape[0], 1))), test)
    region = users["region"].to_numpy()
    by_region = {
        r: np.asarray(train[region[~held_out] == r].sum(axis=0)).ravel() for r in demo.REGIONS
    }
    regional = np.stack([by_region[r] + 1e-3 * popularity for r in region[held_out]])
    regional_ndcg = _ndcg_at_10(_top10(regional), test)
    assert regional_ndcg > 1.10 * global_ndcg, (regional_ndcg, global_ndcg)


def test_personal_tastes_beat_popularity_for_known_users(signal_data: Dataset) -> None:
    binary = (build_matrix(signal_data).matrix > 0).astype(np.float64).tocoo()
    test_cell = np.random.default_rng(1).random(binary.nnz) < 0.2

    def part(mask: np.ndarray) -> sp.csr_matrix:
        return sp.csr_matrix(
            (binary.data[mask], (binary.row[mask], binary.col[mask])), shape=binary.shape
        )

    train, test = part(~test_cell), part(test_cell)
    popularity = np.asarray(train.sum(axis=0)).ravel()
    pop_ndcg = _ndcg_at_10(_top10(np.tile(popularity, (train.shape[0], 1)), train), test)
    # Item-item cosine neighbours: the simplest personal model.
    norms = np.sqrt(np.asarray(train.sum(axis=0)).ravel()) + 1e-9
    similarity = (train.T @ train).toarray() / norms[:, None] / norms[None, :]
    np.fill_diagonal(similarity, 0.0)
    knn_ndcg = _ndcg_at_10(_top10(train @ similarity, train), test)
    assert knn_ndcg > 1.5 * pop_ndcg, (knn_ndcg, pop_ndcg)
