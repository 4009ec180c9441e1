"""The bundle format: file names, schema version and the in-memory dataclasses.

A bundle is the versioned directory the offline job publishes and servers load:
``<root>/<version>/`` holding ``manifest.json``, plain arrays (``.npy``/``.npz``, loaded with
``allow_pickle=False``), id lists and the FAISS index; ``<root>/current`` is a relative
symlink to the live version. No pickle anywhere. ``training`` writes through
:mod:`recsvc.bundle.write`; serving, export, audience and the bandit read through
:mod:`recsvc.bundle.read`. No other module knows a file name.

Files of one version (every one listed in ``manifest["files"]`` with its size and sha256):

==========================  ======================================================
``manifest.json``           schema version, params, metrics, files, array shapes
``user_ids.json``           [U] str, row order of every per-user array
``item_ids.json``           [I] str, row order of every per-item array
``region_names.json``       [R] str
``user_factors.npy``        [U, d] float32
``item_factors.npy``        [I, d] float32
``item_gram.npy``           [d, d] float64 ``item_factors.T @ item_factors`` (ALS fold-in)
``user_projection.npy``     [I, d] float32 linear fold-in: user vector = x_u @ P (optional)
``item_index.faiss``        FAISS index over item_factors (inner product)
``user_items.*.npy``        CSR [U, I] float32 folded interaction weights (seen items)
``user_items.seen_by.npy``  [nnz] uint8 per cell of user_items: which kinds of event made
                            it, bit i = ``arrays.user_items_seen_by.classes[i]`` (optional)
``popularity.npy``          [I] float32
``region_popularity.npy``   [R, I] float32
``item_availability.*.npy`` CSR [I, R] bool
``available_everywhere.npy``  [I] bool
``item_features.npz``       column -> [I] str
``user_features.npz``       column -> [U] str
``candidates.*.npy``        CSR [U, I] float32; each row's items in descending score order
``region_candidates.*.npy`` CSR [R, I] float32; same order rule
``hybrid.npz``              :class:`HybridArrays` (optional)
``artwork.npz``             :class:`ArtworkCatalog` (optional)
``cold_start.npz``          :class:`ColdStartArrays`: profile -> list source (optional)
==========================  ======================================================

A CSR matrix ``X`` is three plain files ``X.indptr.npy`` (int64), ``X.indices.npy`` (int32)
and ``X.data.npy`` (shape in ``manifest["arrays"]``): plain ``.npy`` loads several times faster
than a zip member and can be memory-mapped. Candidate rows keep *score order*, not column
order: never call ``sort_indices()`` on them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

SCHEMA_VERSION = 1


CURRENT = "current"


MANIFEST = "manifest.json"


INDEX_FILE = "item_index.faiss"


CSR_KEYS = ("user_items", "item_availability", "candidates", "region_candidates")


TMP_PREFIX = ".tmp-"


@dataclass(frozen=True)
class HybridArrays:
    """LightFM hybrid model as plain arrays, enough to score a cold-start user in numpy.

    A user's representation is the sum of the embeddings (and biases) of the features it
    has, each feature named ``"column=value"`` (e.g. ``"region=US-9"``), normalized the
    way the model was trained (see ``recsvc.bundle.scoring.cold_user_vector``).
    """

    user_feature_names: np.ndarray  # [F] str
    user_feature_embeddings: np.ndarray  # [F, d] float32
    user_feature_biases: np.ndarray  # [F] float32
    item_representations: np.ndarray  # [I, d] float32, aligned with Bundle.item_ids
    item_biases: np.ndarray  # [I] float32


@dataclass(frozen=True)
class ColdStartArrays:
    """The cold-start source chosen on held-out whole users: how a user with no history is
    ranked from profile features (``recsvc.bundle.scoring.cold_start_scores``).

    ``source`` is ``popularity`` | ``segments`` | ``embedding`` | ``lightfm``. Segments:
    row g of ``group_counts`` counts the training users of group ``group_keys[g]`` (e.g.
    ``"age=25-34"`` or ``"age=25-34|gender=f"``) per item; ``groupings`` are the column
    sets whose log-ratios to global popularity are summed. Embedding: a user's vector in
    the shipped model's space is ``intercept + sum(feature_weights[f])`` over its known
    ``"column=value"`` features, scored against ``Bundle.item_factors``.
    """

    source: str
    prior_strength: float = 0.0
    groupings: tuple[tuple[str, ...], ...] = ()
    group_keys: np.ndarray = field(default_factory=lambda: np.array([], dtype=str))  # [G]
    group_counts: sp.csr_matrix = field(default_factory=lambda: sp.csr_matrix((0, 0)))  # [G, I]
    feature_names: np.ndarray = field(default_factory=lambda: np.array([], dtype=str))  # [F]
    feature_weights: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    intercept: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))  # [d]


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
    # Extensions (defaults keep older constructors valid).
    # item_factors.T @ item_factors in float64: the Gram matrix ALS fold-in of a user's recent
    # events needs (x_u = (YtY + Y_u^T (C_u - I) Y_u + reg*I)^-1 Y_u^T C_u p_u); the
    # regularization and alpha are in manifest["model"]["fold_in"].
    item_gram: np.ndarray | None = None
    # Linear models (low-rank EASE): a user's vector is x_u @ user_projection with x_u the
    # binary row of seen items, so folding in a new item adds its row of P.
    user_projection: np.ndarray | None = None
    # Cold start from profile features (source chosen on held-out users); None: older bundle.
    cold_start: ColdStartArrays | None = None
    # Which kinds of event made each cell of user_items ([nnz] uint8 aligned with its data):
    # bit i set = an event of class user_items_seen_classes[i] (recsvc.events.SEEN_CLASSES
    # when written) contributed, so the seen setting applies to the training history
    # (recsvc.events.hidden_cells). None (older or Spark-trained bundles): every cell hides.
    user_items_seen_by: np.ndarray | None = None
    user_items_seen_classes: tuple[str, ...] = ()

    @property
    def region_index(self) -> dict[str, int]:
        """Region name -> row of region_popularity / region_candidates."""
        return {str(name): i for i, name in enumerate(self.region_names)}

    def user_candidates(self, user_idx: int) -> tuple[np.ndarray, np.ndarray]:
        """(item indices, scores) precomputed for a known user, best first."""
        return csr_row(self.candidates, user_idx)

    def cold_candidates(self, region_idx: int) -> tuple[np.ndarray, np.ndarray]:
        """(item indices, scores) precomputed for a user known only by region, best first."""
        return csr_row(self.region_candidates, region_idx)


def csr_row(matrix: sp.csr_matrix, row: int) -> tuple[np.ndarray, np.ndarray]:
    start, stop = matrix.indptr[row], matrix.indptr[row + 1]
    return matrix.indices[start:stop], matrix.data[start:stop]


CSR_PARTS = ("indptr", "indices", "data")


SEEN_BY = "user_items.seen_by"  # the optional per-cell array (file SEEN_BY + ".npy")
MAX_SEEN_CLASSES = 8  # bits of a uint8
