"""Per-item and per-user side tables of a bundle, aligned with the matrix's id order.

Regions, availability, categorical features and artwork come from the optional contract
files (``users``, ``items``, ``artwork``); a missing file or column yields empty tables, so
a bundle always has every array (R = 0 when nobody has a region).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recsvc.bundle import ArtworkCatalog
from training.data import Dataset

REGION = "region"
REGIONS = "regions"


def _str_array(values: pd.Series | np.ndarray) -> np.ndarray:
    """Fixed-width unicode (no pickle needed to load it); missing values become ''."""
    series = pd.Series(np.asarray(values, dtype=object)).fillna("").astype(str)
    out = series.to_numpy(dtype=np.str_)
    return out if out.size else np.empty(0, dtype="U1")


def _split_regions(items: pd.DataFrame) -> pd.DataFrame:
    """Long table (item_id, region) of the items file's ``regions`` column."""
    regions = items[REGIONS].fillna("").astype(str)
    long = pd.DataFrame({"item_id": items["item_id"].astype(str), REGION: regions.str.split("|")})
    long = long.explode(REGION)
    long[REGION] = long[REGION].astype(str).str.strip()
    return long[long[REGION] != ""]


def region_names(dataset: Dataset) -> np.ndarray:
    """[R] sorted union of the users' regions and the items' availability regions."""
    names: set[str] = set()
    if dataset.users is not None and REGION in dataset.users.columns:
        names.update(dataset.users[REGION].dropna().astype(str))
    if dataset.items is not None and REGIONS in dataset.items.columns:
        names.update(_split_regions(dataset.items)[REGION])
    names.discard("")
    return np.asarray(sorted(names), dtype=np.str_) if names else np.empty(0, dtype="U1")


def user_region_index(dataset: Dataset, user_ids: np.ndarray, names: np.ndarray) -> np.ndarray:
    """[U] int64 region row of each user (-1: unknown)."""
    out = np.full(len(user_ids), -1, dtype=np.int64)
    if dataset.users is None or REGION not in dataset.users.columns or len(names) == 0:
        return out
    region_of = dataset.users.set_index(dataset.users["user_id"].astype(str))[REGION]
    per_user = region_of.reindex(pd.Index(user_ids.astype(str))).fillna("").astype(str)
    lookup = pd.Series(np.arange(len(names)), index=pd.Index(names.astype(str)))
    found = lookup.reindex(per_user.to_numpy()).to_numpy()
    return np.where(np.isnan(found), -1, found).astype(np.int64)


def item_availability(
    dataset: Dataset, item_ids: np.ndarray, names: np.ndarray
) -> tuple[sp.csr_matrix, np.ndarray]:
    """([I, R] bool CSR item-in-region, [I] bool no restriction)."""
    n_items, n_regions = len(item_ids), len(names)
    everywhere = np.ones(n_items, dtype=bool)
    empty = sp.csr_matrix((n_items, n_regions), dtype=bool)
    items = dataset.items
    if items is None or REGIONS not in items.columns or n_items == 0:
        return empty, everywhere
    long = _split_regions(items)
    item_pos = pd.Series(np.arange(n_items), index=pd.Index(item_ids.astype(str)))
    region_pos = pd.Series(np.arange(n_regions), index=pd.Index(names.astype(str)))
    rows = item_pos.reindex(long["item_id"].to_numpy()).to_numpy()
    cols = region_pos.reindex(long[REGION].to_numpy()).to_numpy()
    ok = ~(np.isnan(rows) | np.isnan(cols))
    rows, cols = rows[ok].astype(np.int64), cols[ok].astype(np.int64)
    matrix = sp.csr_matrix(
        (np.ones(len(rows), dtype=bool), (rows, cols)), shape=(n_items, n_regions)
    )
    matrix.sum_duplicates()
    matrix.data[:] = True
    everywhere[np.unique(rows)] = False
    return matrix, everywhere


def feature_columns(frame: pd.DataFrame | None, key: str, skip: tuple[str, ...]) -> list[str]:
    if frame is None:
        return []
    return [c for c in frame.columns if c != key and c not in skip]


def item_features(dataset: Dataset, item_ids: np.ndarray) -> dict[str, np.ndarray]:
    """Categorical item columns (all but ``item_id``/``regions``) as [I] str; missing ''."""
    return _aligned(dataset.items, "item_id", item_ids, (REGIONS,))


def user_features(dataset: Dataset, user_ids: np.ndarray) -> dict[str, np.ndarray]:
    """User columns (``region`` included) as [U] str for the known users; missing ''."""
    return _aligned(dataset.users, "user_id", user_ids, ())


def _aligned(
    frame: pd.DataFrame | None, key: str, ids: np.ndarray, skip: tuple[str, ...]
) -> dict[str, np.ndarray]:
    columns = feature_columns(frame, key, skip)
    if frame is None or not columns:
        return {}
    table = frame.set_index(frame[key].astype(str))[columns]
    table = table[~table.index.duplicated(keep="first")].reindex(pd.Index(ids.astype(str)))
    return {c: _str_array(table[c].fillna("").astype(str).to_numpy()) for c in columns}


def artwork_catalog(dataset: Dataset, item_ids: np.ndarray) -> ArtworkCatalog | None:
    """Variants per item in item order; file order within an item (first = default)."""
    art = dataset.artwork
    if art is None or art.empty:
        return None
    item_pos = pd.Series(np.arange(len(item_ids)), index=pd.Index(item_ids.astype(str)))
    rows = item_pos.reindex(art["item_id"].astype(str).to_numpy()).to_numpy()
    keep = ~np.isnan(rows)
    art = art[keep]
    rows = rows[keep].astype(np.int64)
    order = np.argsort(rows, kind="stable")
    art = art.iloc[order]
    counts = np.bincount(rows[order], minlength=len(item_ids))
    indptr = np.zeros(len(item_ids) + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    attributes = {
        c: _str_array(art[c].fillna("").astype(str).to_numpy())
        for c in art.columns
        if c not in ("item_id", "variant_id")
    }
    return ArtworkCatalog(
        indptr=indptr,
        variant_ids=_str_array(art["variant_id"].astype(str).to_numpy()),
        attributes=attributes,
    )
