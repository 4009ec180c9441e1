"""A fitted model as training ships it: the bundle is the only file format of a model.

:func:`ship` writes the model's user and item factors (and a linear model's user
projection, what fold-in needs) as the bundle of a tiny catalog with
:func:`recsvc.bundle.write_bundle` and reads it back with :func:`recsvc.bundle.load_bundle`
(plain arrays, checksummed, no pickle), so a test can check that what serves is what was
fitted.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.sparse as sp

from recsvc.bundle import Bundle, load_bundle, write_bundle
from training.candidates import user_candidates
from training.data import InteractionMatrix
from training.index import build_index
from training.models import RecommenderBase
from training.models.linear import binary_rows
from training.pipeline import linear_projection


def ship(model: RecommenderBase, train: InteractionMatrix, directory: Path) -> Bundle:
    """``model`` (fitted on ``train``, with item factors) written as a bundle under
    ``directory`` and loaded back."""
    users, items = model.user_factors, model.item_factors
    assert users is not None and items is not None, f"{model.name} has no factors to ship"
    users = np.ascontiguousarray(users, dtype=np.float32)
    items = np.ascontiguousarray(items, dtype=np.float32)
    n_items = len(train.item_ids)
    seen = sp.csr_matrix(train.matrix, dtype=np.float32)
    bundle = Bundle(
        path=directory,
        version="shipped",
        manifest={"params": {"model": model.name}},
        user_ids=np.asarray(train.user_ids).astype(str),
        item_ids=np.asarray(train.item_ids).astype(str),
        user_index={str(u): i for i, u in enumerate(train.user_ids)},
        item_index={str(t): j for j, t in enumerate(train.item_ids)},
        user_factors=users,
        item_factors=items,
        index=build_index(items)[0],
        user_items=seen,
        popularity=np.asarray(seen.sum(axis=0), dtype=np.float32).ravel(),
        region_names=np.array(["all"]),
        region_popularity=np.asarray(seen.sum(axis=0), dtype=np.float32),
        item_availability=sp.csr_matrix((n_items, 1), dtype=bool),
        available_everywhere=np.ones(n_items, dtype=bool),
        item_features={},
        user_features={},
        candidates=user_candidates(users, items, seen, count=10),
        region_candidates=sp.csr_matrix((1, n_items), dtype=np.float32),
        hybrid=None,
        artwork=None,
        user_projection=linear_projection(model),
    )
    write_bundle(directory, bundle)
    return load_bundle(directory)


def assert_bundle_serves_the_model(
    model: RecommenderBase, train: InteractionMatrix, directory: Path
) -> Bundle:
    """Ship ``model`` (:func:`ship`) and check that the bundle scores every training user
    as the model does, and that a linear model's projection rebuilds the user vectors
    from the seen items (what fold-in relies on)."""
    shipped = ship(model, train, directory)
    assert not list(directory.glob("*.pkl"))
    users = np.arange(len(train.user_ids))
    expected = model.score_users(users, train.matrix)
    served = shipped.user_factors @ shipped.item_factors.T
    np.testing.assert_allclose(served, expected, rtol=1e-4, atol=1e-5)
    if shipped.user_projection is not None:
        seen = binary_rows(shipped.user_items)
        rebuilt = np.asarray(seen @ shipped.user_projection, dtype=np.float32)
        np.testing.assert_allclose(rebuilt, shipped.user_factors, rtol=1e-4, atol=1e-5)
    return shipped
