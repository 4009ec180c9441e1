"""Contract files (DESIGN.md, "Input data contract"): load, validate, fold.

STUB: the signatures below are shared; the implementation is being written.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

DEFAULT_EVENT_WEIGHTS: dict[str, float] = {
    "view": 1.0,
    "impression": 0.0,
    "click": 2.0,
    "add_to_cart": 4.0,
    "purchase": 8.0,
    "rating": 1.0,
}


@dataclass(frozen=True)
class Dataset:
    """Validated contract files. IDs are str; feature columns are str (categorical)."""

    interactions: pd.DataFrame  # user_id, item_id, timestamp (int64 epoch s), event_type, weight
    users: pd.DataFrame | None  # user_id, [region], other feature columns
    items: pd.DataFrame | None  # item_id, [regions] ("|"-separated, "" = everywhere), others
    artwork: pd.DataFrame | None  # item_id, variant_id, attribute columns
    fingerprint: str  # sha256 over the input files' bytes
    files: Mapping[str, str]  # contract name -> path read


@dataclass(frozen=True)
class InteractionMatrix:
    """Users x items confidence matrix, duplicates folded (summed weights)."""

    user_ids: np.ndarray  # [U] str, sorted
    item_ids: np.ndarray  # [I] str, sorted; union of items file and interactions
    matrix: sp.csr_matrix  # [U, I] float32


def load_dataset(data_dir: Path, event_weights: Mapping[str, float] | None = None) -> Dataset:
    raise NotImplementedError


def build_matrix(
    dataset: Dataset,
    interactions: pd.DataFrame | None = None,
    user_ids: np.ndarray | None = None,
    item_ids: np.ndarray | None = None,
) -> InteractionMatrix:
    """Fold ``interactions`` (default: all of the dataset's) into a matrix over the given id
    universes (default: users of the interactions; items of items file + interactions).
    Interactions whose user/item is outside the given universes are dropped."""
    raise NotImplementedError
