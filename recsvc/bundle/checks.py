"""Cross-array consistency rules, shared by the writer (refuse to write) and the reader."""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from recsvc.bundle.format import INDEX_FILE, MANIFEST, MAX_SEEN_CLASSES, SEEN_BY, Bundle


def shape_problems(b: Bundle) -> list[str]:
    """Every cross-array consistency rule, as messages naming the file at fault."""
    n_users, n_items, n_regions = len(b.user_ids), len(b.item_ids), len(b.region_names)
    out: list[str] = []

    def expect(ok: bool, message: str) -> None:
        if not ok:
            out.append(message)

    uf, itf = b.user_factors, b.item_factors
    expect(
        uf.ndim == 2 and uf.shape[0] == n_users,
        f"user_factors.npy: shape {uf.shape}, {n_users} users",
    )
    expect(
        itf.ndim == 2 and itf.shape[0] == n_items,
        f"item_factors.npy: shape {itf.shape}, {n_items} items",
    )
    if out:
        return out
    d = itf.shape[1]
    expect(uf.shape[1] == d, f"user_factors.npy: {uf.shape[1]} factors, item_factors has {d}")
    expect(uf.dtype == np.float32, f"user_factors.npy: dtype {uf.dtype}, expected float32")
    expect(itf.dtype == np.float32, f"item_factors.npy: dtype {itf.dtype}, expected float32")
    expect(
        b.index.ntotal == n_items and b.index.d == d,
        f"{INDEX_FILE}: {b.index.ntotal} vectors of dim {b.index.d}, expected {n_items} x {d}",
    )
    expect(
        b.user_items.shape == (n_users, n_items), f"user_items.*.npy: shape {b.user_items.shape}"
    )
    if b.user_items_seen_by is not None:
        seen_by, classes = b.user_items_seen_by, b.user_items_seen_classes
        expect(
            seen_by.shape == (b.user_items.nnz,) and seen_by.dtype == np.uint8,
            f"{SEEN_BY}.npy: shape {seen_by.shape} dtype {seen_by.dtype}, expected "
            f"({b.user_items.nnz},) uint8 (one per cell of user_items)",
        )
        expect(
            0 < len(classes) <= MAX_SEEN_CLASSES
            and len(set(classes)) == len(classes)
            and all(isinstance(c, str) and c for c in classes),
            f"{SEEN_BY}.npy: classes {list(classes)!r} are not 1 to {MAX_SEEN_CLASSES} "
            "distinct names",
        )
    expect(b.popularity.shape == (n_items,), f"popularity.npy: shape {b.popularity.shape}")
    expect(
        b.region_popularity.shape == (n_regions, n_items),
        f"region_popularity.npy: shape {b.region_popularity.shape}, "
        f"expected ({n_regions}, {n_items})",
    )
    expect(
        b.item_availability.shape == (n_items, n_regions),
        f"item_availability.*.npy: shape {b.item_availability.shape}",
    )
    expect(
        b.available_everywhere.shape == (n_items,) and b.available_everywhere.dtype == np.bool_,
        f"available_everywhere.npy: shape {b.available_everywhere.shape} "
        f"dtype {b.available_everywhere.dtype}",
    )
    expect(
        b.candidates.shape == (n_users, n_items), f"candidates.*.npy: shape {b.candidates.shape}"
    )
    expect(
        b.region_candidates.shape == (n_regions, n_items),
        f"region_candidates.*.npy: shape {b.region_candidates.shape}",
    )
    for name, cols, n in (
        ("item_features", b.item_features, n_items),
        ("user_features", b.user_features, n_users),
    ):
        for col, values in cols.items():
            expect(
                values.shape == (n,),
                f"{name}.npz: column '{col}' has shape {values.shape}, expected ({n},)",
            )
    if b.hybrid is not None:
        h = b.hybrid
        f = len(h.user_feature_names)
        dh = h.item_representations.shape[1] if h.item_representations.ndim == 2 else -1
        expect(
            h.item_representations.shape[0] == n_items,
            f"hybrid.npz: item_representations {h.item_representations.shape}",
        )
        expect(h.item_biases.shape == (n_items,), f"hybrid.npz: item_biases {h.item_biases.shape}")
        expect(
            h.user_feature_embeddings.shape == (f, dh),
            f"hybrid.npz: user_feature_embeddings {h.user_feature_embeddings.shape}",
        )
        expect(
            h.user_feature_biases.shape == (f,),
            f"hybrid.npz: user_feature_biases {h.user_feature_biases.shape}",
        )
    if b.artwork is not None:
        a = b.artwork
        expect(a.indptr.shape == (n_items + 1,), f"artwork.npz: indptr shape {a.indptr.shape}")
        if a.indptr.shape == (n_items + 1,):
            expect(
                a.indptr[0] == 0
                and a.indptr[-1] == len(a.variant_ids)
                and bool(np.all(np.diff(a.indptr) >= 0)),
                "artwork.npz: indptr does not cover variant_ids",
            )
        for col, values in a.attributes.items():
            expect(
                values.shape == a.variant_ids.shape,
                f"artwork.npz: attribute '{col}' shape {values.shape}",
            )
    if b.item_gram is not None:
        expect(
            b.item_gram.shape == (d, d),
            f"item_gram.npy: shape {b.item_gram.shape}, expected ({d}, {d})",
        )
    if b.user_projection is not None:
        expect(
            b.user_projection.shape == (len(b.item_ids), d),
            f"user_projection.npy: shape {b.user_projection.shape}, "
            f"expected ({len(b.item_ids)}, {d})",
        )
    return out


def manifest_problems(b: Bundle, manifest: dict[str, Any]) -> list[str]:
    """Arrays must match what the writer recorded (catches a swapped-in file)."""
    out: list[str] = []
    recorded = manifest.get("arrays", {})
    actual: dict[str, np.ndarray | sp.csr_matrix] = {
        "user_factors": b.user_factors,
        "item_factors": b.item_factors,
        "popularity": b.popularity,
        "region_popularity": b.region_popularity,
        "available_everywhere": b.available_everywhere,
        "user_items": b.user_items,
        "item_availability": b.item_availability,
        "candidates": b.candidates,
        "region_candidates": b.region_candidates,
    }
    if b.user_items_seen_by is not None:
        actual["user_items_seen_by"] = b.user_items_seen_by
    for key, value in actual.items():
        entry = recorded.get(key)
        if entry is None:
            out.append(f"{MANIFEST}: no shape recorded for '{key}'")
            continue
        if list(value.shape) != entry.get("shape") or value.dtype.str != entry.get("dtype"):
            out.append(
                f"{key}: shape {list(value.shape)} dtype {value.dtype.str} differs from the "
                f"manifest ({entry.get('shape')} {entry.get('dtype')})"
            )
    return out
