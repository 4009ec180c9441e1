"""What keeps train bounded at scale: the ALS search on a user sample, LightFM on a cell
sample. Both leave small data untouched."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from training.data import Dataset, build_matrix
from training.models.hybrid import LightFMHybrid
from training.tuning import search_sample, tune_als


def test_search_sample_keeps_whole_users_under_the_cap(demo_dataset: Dataset) -> None:
    matrix = build_matrix(demo_dataset)
    assert search_sample(matrix, matrix.matrix.nnz, seed=1) is matrix  # at the cap: as is
    cap = matrix.matrix.nnz // 4
    sample = search_sample(matrix, cap, seed=1)
    assert 0 < sample.matrix.nnz <= cap
    assert sample.matrix.nnz > cap - np.diff(matrix.matrix.indptr).max()  # filled up to it
    assert list(sample.user_ids) == sorted(sample.user_ids)
    rows = np.searchsorted(matrix.user_ids, sample.user_ids)
    assert (matrix.user_ids[rows] == sample.user_ids).all()
    assert (sample.matrix != matrix.matrix[rows]).nnz == 0  # whole rows, unchanged
    again = search_sample(matrix, cap, seed=1)
    assert list(again.user_ids) == list(sample.user_ids)  # seeded
    assert list(search_sample(matrix, cap, seed=2).user_ids) != list(sample.user_ids)


def test_tune_als_searches_the_sample_and_says_so(demo_dataset: Dataset) -> None:
    matrix = build_matrix(demo_dataset)
    base = {"factors": 8, "iterations": 3}
    cap = matrix.matrix.nnz // 3
    summary = tune_als(demo_dataset, matrix, max_trials=2, seed=2, base_params=base, max_cells=cap)
    assert summary["sample"]["cells"] <= cap
    assert summary["sample"]["users"] < len(matrix.user_ids)
    assert "sample of" in summary["reason"]
    full = tune_als(demo_dataset, matrix, max_trials=1, seed=2, base_params=base)
    assert full["sample"]["cells"] == matrix.matrix.nnz and "sample of" not in full["reason"]


def test_lightfm_fits_a_cell_sample_above_its_cap(demo_dataset: Dataset) -> None:
    matrix = build_matrix(demo_dataset)
    nnz = matrix.matrix.nnz
    fast = {"factors": 8, "epochs": 2}
    whole = LightFMHybrid(**fast).fit(matrix, demo_dataset)
    assert whole.fitted_interactions == nnz
    cap = nnz // 5
    sampled = LightFMHybrid(**fast, max_interactions=cap).fit(matrix, demo_dataset)
    assert abs(sampled.fitted_interactions - cap) < 5 * np.sqrt(cap)  # Bernoulli(cap / nnz)
    # Still a full model: every user and item has a representation, none is all zeros.
    factors = sampled.item_factors
    assert factors is not None and factors.shape[0] == matrix.matrix.shape[1]
    assert np.isfinite(factors).all() and sp.csr_matrix(factors).nnz > 0
