"""Regions: which row a region name is, what a region may be shown, whose popularity.

A user's region name resolves to a row of the bundle's region tables (:func:`region_row`):
no name at all is :data:`NO_REGION`, a name the bundle does not know is ``n_regions``.
The availability rule (:func:`available_items`): an item without a ``regions`` restriction
is available everywhere; a restricted item only in its regions; a user of an unknown
region gets only the unrestricted items; a user with no region has no regional rule.
Popularity (:func:`popularity_rows`): a known region's own table, anything else the
global one (the last row of the popularity tables).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import scipy.sparse as sp

NO_REGION = -1


def region_row(region_index: Mapping[str, int], name: str) -> int:
    """The region row of ``name``: :data:`NO_REGION` for ``""``, ``len(region_index)`` for
    a name the bundle does not know."""
    if not name:
        return NO_REGION
    return region_index.get(name, len(region_index))


def available_items(everywhere: np.ndarray, sold_in: sp.csr_matrix, region: int) -> np.ndarray:
    """``[I]`` bool: the items a user of region row ``region`` may be shown.

    ``everywhere`` is ``[I]`` (no restriction), ``sold_in`` the ``[R, I]`` CSR of the
    restricted items each region sells."""
    n_items = len(everywhere)
    if region == NO_REGION:
        return np.ones(n_items, dtype=bool)
    mask = np.array(everywhere, dtype=bool)
    if 0 <= region < sold_in.shape[0]:
        lo, hi = sold_in.indptr[region], sold_in.indptr[region + 1]
        mask[sold_in.indices[lo:hi][sold_in.data[lo:hi] != 0]] = True
    return mask


def availability_table(everywhere: np.ndarray, sold_in: sp.csr_matrix) -> np.ndarray:
    """``[R + 2, I]`` bool, :func:`available_items` of every region row: rows ``0..R-1``
    the bundle's regions, row ``R`` an unknown region, row ``R + 1`` (also row ``-1``, so
    :data:`NO_REGION` indexes it) no region."""
    rows = [*range(sold_in.shape[0] + 1), NO_REGION]
    return np.vstack([available_items(everywhere, sold_in, r) for r in rows])


def popularity_rows(regions: np.ndarray, n_regions: int) -> np.ndarray:
    """The popularity-table row serving each region row: its own, else global
    (``n_regions``)."""
    return np.where((regions >= 0) & (regions < n_regions), regions, n_regions)
