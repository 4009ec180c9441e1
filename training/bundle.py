"""Artifact bundle: the versioned directory the offline job publishes and servers load.

Layout (DESIGN.md, "Artifact bundle"): ``<root>/<version>/`` holding ``manifest.json``,
plain arrays (``.npy``/``.npz``, loaded with ``allow_pickle=False``), id maps and the FAISS
index; ``<root>/current`` points at the live version. No pickle anywhere.

THIS MODULE'S PUBLIC SHAPE IS SHARED BY training (writer) AND recsvc (reader): extend the
dataclasses, do not rename fields.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class HybridArrays:
    """LightFM hybrid model as plain arrays, enough to score a cold-start user in numpy.

    A user's representation is the sum of the embeddings (and biases) of the features it
    has, each feature named ``"column=value"`` (e.g. ``"region=US-9"``), normalized the
    way the model was trained (see ``training.models.hybrid.cold_user_vector``).
    """

    user_feature_names: np.ndarray  # [F] str
    user_feature_embeddings: np.ndarray  # [F, d] float32
    user_feature_biases: np.ndarray  # [F] float32
    item_representations: np.ndarray  # [I, d] float32, aligned with Bundle.item_ids
    item_biases: np.ndarray  # [I] float32


@dataclass(frozen=True)
class ArtworkCatalog:
    """Artwork variants per item in CSR layout, aligned with Bundle.item_ids.

    Variants of item i are ``variant_ids[indptr[i]:indptr[i+1]]``; the first is the default.
    ``attributes`` maps an attribute column (e.g. ``theme``) to a [V] str array.
    """

    indptr: np.ndarray  # [I+1] int64
    variant_ids: np.ndarray  # [V] str
    attributes: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass(frozen=True)
class Bundle:
    """A loaded, validated bundle. Immutable: a hot swap replaces the whole object."""

    path: Path
    version: str
    manifest: dict[str, Any]
    user_ids: np.ndarray  # [U] str, row order of user_factors
    item_ids: np.ndarray  # [I] str, row order of item_factors
    user_index: dict[str, int]
    item_index: dict[str, int]
    user_factors: np.ndarray  # [U, d] float32 (shipped CF model)
    item_factors: np.ndarray  # [I, d] float32
    index: Any  # faiss.Index over item_factors, inner product
    user_items: sp.csr_matrix  # [U, I] float32 training interactions (seen items)
    popularity: np.ndarray  # [I] float32 global popularity score
    region_names: np.ndarray  # [R] str
    region_popularity: np.ndarray  # [R, I] float32, shrunk toward global
    item_availability: sp.csr_matrix  # [I, R] bool: item available in region; see below
    available_everywhere: np.ndarray  # [I] bool: no `regions` restriction
    item_features: dict[str, np.ndarray]  # column -> [I] str (e.g. "category")
    user_features: dict[str, np.ndarray]  # column -> [U] str for known users (incl. region)
    candidates: sp.csr_matrix  # [U, I]-shaped; row u holds its top-C item scores (precomputed)
    region_candidates: sp.csr_matrix  # [R, I]-shaped top-C per region (cold start)
    hybrid: HybridArrays | None
    artwork: ArtworkCatalog | None
