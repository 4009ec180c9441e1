"""A tiny, fully controlled bundle for the export tests.

Trained for real (implicit ALS on a small synthetic matrix with regional tastes) and
published with the bundle area's writer, so regions, availability, artwork and the user
list are known exactly and the tests can compute expectations independently.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from recsvc.bundle import ArtworkCatalog, Bundle, load_bundle, publish, write_bundle
from training.candidates import region_allowed, top_per_row, user_candidates
from training.index import build_index


@pytest.fixture(autouse=True)
def _no_default_store(monkeypatch: pytest.MonkeyPatch) -> None:
    """Export and audience read serve's default store when no flag names one; a checkout
    that ran `make run` has one (var/feature-store.sqlite) whose events would hide items.
    These tests opt out unless they pass --feature-store themselves."""
    monkeypatch.setenv("RECSVC_FEATURE_STORE", "none")


N_USERS, N_ITEMS, FACTORS = 80, 50, 8
REGIONS = np.array(["CA", "DE", "US-9"])
AGES = np.array(["18-24", "25-34", "35-44"])
CATEGORIES = np.array(["books", "games", "music"])


def _fit_als(matrix: sp.csr_matrix, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from implicit.cpu.als import AlternatingLeastSquares

    model = AlternatingLeastSquares(
        factors=FACTORS, iterations=8, regularization=0.05, random_state=seed
    )
    model.fit(matrix, show_progress=False)
    return (
        np.ascontiguousarray(model.user_factors, dtype=np.float32),
        np.ascontiguousarray(model.item_factors, dtype=np.float32),
    )


def make_bundle(seed: int = 3, candidates: int = 12) -> Bundle:
    rng = np.random.default_rng(seed)
    user_ids = np.array([f"u{i:03d}" for i in range(N_USERS)])
    item_ids = np.array([f"i{j:03d}" for j in range(N_ITEMS)])
    user_region = rng.integers(0, len(REGIONS), N_USERS)
    # Items 0..34 are sold everywhere; 35..49 only in one region each.
    everywhere = np.arange(N_ITEMS) < 35
    only_in = np.where(everywhere, -1, np.arange(N_ITEMS) % len(REGIONS))
    taste = rng.normal(size=(N_USERS, 4)) + np.eye(len(REGIONS), 4)[user_region] * 1.5
    traits = rng.normal(size=(N_ITEMS, 4))
    logits = taste @ traits.T
    rows, cols = [], []
    for u in range(N_USERS):
        allowed = everywhere | (only_in == user_region[u])
        p = np.exp(logits[u]) * allowed
        picks = rng.choice(N_ITEMS, size=rng.integers(3, 9), replace=False, p=p / p.sum())
        rows += [u] * len(picks)
        cols += picks.tolist()
    user_items = sp.csr_matrix(
        (np.ones(len(rows), np.float32), (rows, cols)), shape=(N_USERS, N_ITEMS)
    )
    user_items.sum_duplicates()
    user_factors, item_factors = _fit_als(user_items, seed)
    index, _ = build_index(item_factors)

    availability = sp.csr_matrix(
        (
            np.ones(int((~everywhere).sum()), bool),
            (np.flatnonzero(~everywhere), only_in[~everywhere]),
        ),
        shape=(N_ITEMS, len(REGIONS)),
    )
    popularity = np.asarray(user_items.sum(axis=0)).ravel().astype(np.float32)
    region_pop = np.vstack(
        [
            np.asarray(user_items[user_region == r].sum(axis=0)).ravel() + 0.1 * popularity
            for r in range(len(REGIONS))
        ]
    ).astype(np.float32)
    allowed = region_allowed(availability, everywhere)
    n_variants = rng.integers(0, 4, N_ITEMS)  # some items have no artwork
    indptr = np.concatenate([[0], np.cumsum(n_variants)]).astype(np.int64)
    variant_ids = np.array(
        [f"{item_ids[j]}-v{v}" for j in range(N_ITEMS) for v in range(n_variants[j])]
    )
    return Bundle(
        path=Path("."),
        version="test",
        manifest={"params": {"model": "als"}},
        user_ids=user_ids,
        item_ids=item_ids,
        user_index={u: i for i, u in enumerate(user_ids)},
        item_index={t: j for j, t in enumerate(item_ids)},
        user_factors=user_factors,
        item_factors=item_factors,
        index=index,
        user_items=user_items.astype(np.float32),
        popularity=popularity,
        region_names=REGIONS,
        region_popularity=region_pop,
        item_availability=availability.astype(bool),
        available_everywhere=everywhere,
        item_features={"category": CATEGORIES[np.arange(N_ITEMS) % len(CATEGORIES)]},
        user_features={
            "region": REGIONS[user_region],
            "age_bucket": AGES[rng.integers(0, len(AGES), N_USERS)],
        },
        candidates=user_candidates(user_factors, item_factors, user_items, count=candidates),
        region_candidates=top_per_row(region_pop, count=candidates, allowed=allowed),
        hybrid=None,
        artwork=ArtworkCatalog(
            indptr=indptr,
            variant_ids=variant_ids,
            attributes={
                "theme": np.array(["dark", "light"] * len(variant_ids))[: len(variant_ids)]
            },
        ),
    )


def publish_bundle(root: Path, bundle: Bundle) -> Path:
    def build(directory: Path, version: str) -> None:
        write_bundle(directory, _with_version(bundle, version))

    version = publish(root, build)
    return root / version


def _with_version(bundle: Bundle, version: str) -> Bundle:
    from dataclasses import replace

    return replace(bundle, version=version)


@pytest.fixture(scope="session")
def export_bundle_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("export-bundle")
    publish_bundle(root, make_bundle())
    return root


@pytest.fixture(scope="session")
def export_bundle(export_bundle_root: Path) -> Bundle:
    return load_bundle(export_bundle_root)


@pytest.fixture
def run_cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., tuple[int, str, str]]:
    from recsvc.cli import main

    def run(*argv: str) -> tuple[int, str, str]:
        rc = main([str(a) for a in argv])
        out, err = capsys.readouterr()
        return rc, out, err

    return run
