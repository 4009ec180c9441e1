"""A small hand-made bundle with known structure, published with the real bundle writer.

Items belong to one of four categories and their factors point along the category's axis;
each user leans toward one category. Items 0-29 are sold only in ``north``, 30-59 only in
``south``; the rest everywhere. Regional popularity favours each region's own items, so
cold-start answers differ by region.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import cast

import faiss
import numpy as np
import scipy.sparse as sp

from recsvc.bundle import ArtworkCatalog, Bundle, publish, write_bundle

N_USERS, N_ITEMS, DIM = 60, 160, 8
CATEGORIES = ("books", "games", "music", "toys")
REGIONS = ("north", "south")
NORTH_ONLY, SOUTH_ONLY = range(0, 30), range(30, 60)


def item_id(j: int) -> str:
    return f"i{j:03d}"


def user_id(u: int) -> str:
    return f"u{u:03d}"


def item_category(j: int) -> str:
    return CATEGORIES[j % len(CATEGORIES)]


def user_category(u: int) -> str:
    return CATEGORIES[u % len(CATEGORIES)]


def make_bundle(seed: int = 0, version: str = "v0") -> Bundle:
    rng = np.random.default_rng(seed)
    cat_of_item = np.arange(N_ITEMS) % len(CATEGORIES)
    item_factors = rng.normal(0, 0.05, (N_ITEMS, DIM)).astype(np.float32)
    item_factors[np.arange(N_ITEMS), cat_of_item] += rng.uniform(0.6, 1.0, N_ITEMS)
    user_factors = rng.normal(0, 0.05, (N_USERS, DIM)).astype(np.float32)
    user_factors[np.arange(N_USERS), np.arange(N_USERS) % len(CATEGORIES)] += 0.9

    rows, cols = [], []
    for u in range(N_USERS):
        mine = np.flatnonzero(cat_of_item == u % len(CATEGORIES))
        for j in rng.choice(mine, 4, replace=False):
            rows.append(u)
            cols.append(int(j))
    user_items = sp.csr_matrix(
        (np.ones(len(rows), np.float32), (rows, cols)), shape=(N_USERS, N_ITEMS)
    )
    region_of_user = np.array([REGIONS[u % 2] for u in range(N_USERS)])

    availability = np.zeros((N_ITEMS, len(REGIONS)), dtype=bool)
    availability[list(NORTH_ONLY), 0] = True
    availability[list(SOUTH_ONLY), 1] = True
    # any(axis=...) is an array here; numpy's stub also allows a scalar np.bool
    everywhere = cast("np.ndarray", ~availability.any(axis=1))

    popularity = rng.uniform(0, 1, N_ITEMS).astype(np.float32)
    region_pop = np.vstack([popularity, popularity]).astype(np.float32)
    region_pop[0, list(NORTH_ONLY)] += 2.0
    region_pop[1, list(SOUTH_ONLY)] += 2.0

    scores = user_factors @ item_factors.T
    cand_rows, cand_cols, cand_vals = [], [], []
    for u in range(N_USERS):
        top = np.argsort(-scores[u])[:40]
        cand_rows += [u] * len(top)
        cand_cols += top.tolist()
        cand_vals += scores[u, top].tolist()
    candidates = _ordered_csr(cand_rows, cand_cols, cand_vals, (N_USERS, N_ITEMS))
    rc_rows: list[int] = []
    rc_cols: list[np.intp] = []
    rc_vals: list[float] = []
    for r in range(len(REGIONS)):
        allowed = everywhere | availability[:, r]
        region_top = [j for j in np.argsort(-region_pop[r]) if allowed[j]][:50]
        rc_rows += [r] * len(region_top)
        rc_cols += region_top
        rc_vals += region_pop[r, region_top].tolist()
    region_candidates = _ordered_csr(rc_rows, rc_cols, rc_vals, (len(REGIONS), N_ITEMS))

    index = faiss.IndexFlatIP(DIM)
    index.add(item_factors)
    n_variants = 1 + np.arange(N_ITEMS) % 3
    indptr = np.concatenate([[0], np.cumsum(n_variants)]).astype(np.int64)
    variants = np.array(
        [f"{item_id(j)}-v{v}" for j in range(N_ITEMS) for v in range(n_variants[j])]
    )
    user_ids = np.array([user_id(u) for u in range(N_USERS)])
    item_ids = np.array([item_id(j) for j in range(N_ITEMS)])
    return Bundle(
        path=Path("."),
        version=version,
        manifest={"params": {"model": "hand-made"}},
        user_ids=user_ids,
        item_ids=item_ids,
        user_index={str(x): i for i, x in enumerate(user_ids)},
        item_index={str(x): i for i, x in enumerate(item_ids)},
        user_factors=user_factors,
        item_factors=item_factors,
        index=index,
        user_items=user_items,
        popularity=popularity,
        region_names=np.array(REGIONS),
        region_popularity=region_pop,
        item_availability=sp.csr_matrix(availability),
        available_everywhere=everywhere,
        item_features={"category": np.array([item_category(j) for j in range(N_ITEMS)])},
        user_features={"region": region_of_user},
        candidates=candidates,
        region_candidates=region_candidates,
        hybrid=None,
        artwork=ArtworkCatalog(indptr=indptr, variant_ids=variants),
    )


def _ordered_csr(rows: list, cols: list, vals: list, shape: tuple[int, int]) -> sp.csr_matrix:
    """CSR that keeps each row's entries in the given (score) order."""
    rows_a = np.asarray(rows)
    indptr = np.concatenate([[0], np.cumsum(np.bincount(rows_a, minlength=shape[0]))])
    return sp.csr_matrix(
        (np.asarray(vals, np.float32), np.asarray(cols, np.int32), indptr.astype(np.int32)),
        shape=shape,
    )


def publish_bundle(root: Path, seed: int = 0) -> str:
    """Publish ``make_bundle(seed)`` under ``root`` and point ``current`` at it."""

    def build(tmp: Path, version: str) -> None:
        write_bundle(tmp, dataclasses.replace(make_bundle(seed), version=version))

    return publish(root, build)
