"""EASE (Steck 2019): a closed-form item-item model, the baseline to beat on small catalogs.

``B = I - P / diag(P)`` with ``P = (X^T X + lambda I)^-1`` and a zero diagonal; a user's
scores are ``x_u B``. The dense ``I x I`` inverse limits it to catalogs of at most
``MAX_ITEMS`` items. Full ``B`` has no embeddings, so it is the bar. ``EASELowRankModel``
is the shipped embedding model of this family: EASE with the dropout-emphasis
regularization of EDLAE (Steck 2020) and an inverse-activity weighting of users in the
Gram matrix, factorized into user/item embeddings that ship through FAISS.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.linalg
import scipy.sparse as sp

from training.errors import TrainingError
from training.models.base import RecommenderBase
from training.models.linear import LinearEmbeddingModel, binary_rows, popularity_scale

if TYPE_CHECKING:
    from training.data import Dataset, InteractionMatrix

MAX_ITEMS = 20_000
# SVDs this wide (items on the dense path, users on the Woodbury one) are computed exactly.
EXACT_SVD_MAX = 2_048
# Chosen on the 3 validation folds of MovieLens' training 80% only, never its test split
# (docs/benchmarks/quality.md); ``train`` re-chooses them on its own validation folds.
LOWRANK_DEFAULTS: dict[str, Any] = {
    "lambda": 300.0,
    "dropout": 0.0,
    "user_weight": 0.5,
    "rank": 512,
    "power_iterations": 3,
    "popularity_exponent": 0.0,  # item scores x (n_i + 1) ** this (training.models.linear)
    "random_state": 42,
}


class EASEModel(RecommenderBase):
    """Embarrassingly shallow autoencoder on binarized interactions (``binary=True``)."""

    name = "ease"

    def __init__(self, **params: Any) -> None:
        merged = {"lambda": 500.0, "binary": True, **params}
        super().__init__(**merged)
        self._b: np.ndarray | None = None

    def fit(self, train: InteractionMatrix, dataset: Dataset | None = None) -> EASEModel:
        x = sp.csr_matrix(train.matrix, dtype=np.float64, copy=True)
        n_items = x.shape[1]
        if n_items > MAX_ITEMS:
            raise TrainingError(
                f"EASE needs a dense {n_items}x{n_items} inverse; it is only run for catalogs "
                f"of at most {MAX_ITEMS} items"
            )
        if self.params["binary"]:
            x.data[:] = 1.0
        self._b = _ease_weights(x, float(self.params["lambda"])).astype(np.float32)
        self.n_items = n_items
        return self

    def score_users(self, user_idx: np.ndarray, user_items: sp.csr_matrix) -> np.ndarray:
        if self._b is None:
            raise TrainingError("model 'ease' is not fitted")
        x = sp.csr_matrix(user_items, dtype=np.float32, copy=True)
        if self.params["binary"]:
            x.data[:] = 1.0
        return np.asarray(x @ self._b)


class EASELowRankModel(LinearEmbeddingModel):
    """EASE / EDLAE with user weighting, as embeddings.

    ``B = I - P dMat(1 / diag P)`` with ``P = (G + Lambda)^-1``, ``G = X^T W X`` (binary X)
    and ``Lambda = lambda I + p / (1 - p) dMat(diag G)``: EASE at ``dropout`` p = 0, the
    full-emphasis EDLAE of Steck (NeurIPS 2020, "Autoencoders that don't overfit towards
    the identity") for p > 0 (popular items' weights are shrunk harder). ``W`` weighs user
    u by ``(mean activity / n_u) ** user_weight`` (0: plain EASE), so a few heavy raters do
    not dominate the item-item statistics; on MovieLens 0.5 gained ~1.7% validation NDCG.
    ``popularity_exponent`` scales item i's scores by ``(n_i + 1) ** exponent``
    (``training.models.linear``; 0: none).

    Shipped as ``B ~ projection @ items^T`` truncated to ``rank``: a user's vector is
    ``x_u @ projection`` (``x_u`` the binary row of seen items), an item's is its row of
    ``items``; a new interaction folds in exactly by adding its row of ``projection``.
    Two exact solvers, chosen by shape:

    - fewer users than items (MovieLens: 610 x 9.7k, Last.fm: 1.9k x 17.6k): Woodbury,
      ``P = Lambda^-1 - R^T M R`` with ``R = X' Lambda^-1``, ``M = (I + X' Lambda^-1 X'^T)^-1``
      (``X' = W^1/2 X``; ``M`` is users x users). Off the diagonal ``B = R^T M R / diag P``
      has rank <= users, and the diagonal only scores items the user has already seen
      (always filtered), so the factorization is exact for ranking at ``rank >= users``
      and its truncation is an exact SVD computed from users x users Gram matrices
      (``_dual_factors``); seconds instead of a dense items x items inverse.
    - otherwise: the dense inverse (Cholesky) and an SVD of ``B`` (exact up to
      ``EXACT_SVD_MAX`` items, randomized above).
    """

    name = "ease-lowrank"

    def __init__(self, **params: Any) -> None:
        merged = dict(LOWRANK_DEFAULTS)
        merged.update(params)
        super().__init__(**merged)
        self._sorted = True  # factors are an SVD sorted by singular value (a rank = a prefix)

    def fit(self, train: InteractionMatrix, dataset: Dataset | None = None) -> EASELowRankModel:
        x = binary_rows(train.matrix)
        n_users, n_items = x.shape
        if n_items > MAX_ITEMS:
            raise TrainingError(
                f"ease-lowrank needs a dense {n_items}x{n_items} inverse; it is only run for "
                f"catalogs of at most {MAX_ITEMS} items (use als)"
            )
        lam, dropout = float(self.params["lambda"]), float(self.params["dropout"])
        if lam <= 0 or not 0.0 <= dropout < 1.0 or not 0.0 <= self.params["user_weight"] <= 2:
            raise TrainingError(
                "ease-lowrank needs lambda > 0, 0 <= dropout < 1 and 0 <= user_weight <= 2 "
                f"(got {lam}, {dropout}, {self.params['user_weight']})"
            )
        rank = max(1, min(int(self.params["rank"]), n_items))
        exponent = float(self.params["popularity_exponent"])
        calibration = popularity_scale(x, exponent)[:, None]
        # The Gram matrix is learned from rows re-weighted by activity; users are still
        # scored (and folded in) from their plain binary rows: x_u @ projection.
        weighted = _weight_users(x, float(self.params["user_weight"]))
        # calibrated items are no longer an SVD's (truncated() re-sorts them)
        self._sorted = (rank < n_users or n_users >= n_items) and exponent == 0.0
        if n_users < n_items:
            projection, items = _dual_factors(weighted, lam, dropout, rank)
            self._set(projection, items * calibration, x @ projection)
            self.n_items = n_items
            return self
        b = _ease_weights(weighted, lam, dropout)
        if n_items <= EXACT_SVD_MAX:
            u, s, vt = np.linalg.svd(b, full_matrices=False)
        else:
            u, s, vt = _randomized_svd(b, rank, **self._svd_options())
        u, s, vt = u[:, :rank], s[:rank], vt[:rank]
        projection = np.ascontiguousarray(u * s[None, :], dtype=np.float32)
        self._set(projection, vt.T * calibration, x @ projection)
        self.n_items = n_items
        return self

    def _svd_options(self) -> dict[str, int]:
        return {
            "power_iterations": int(self.params["power_iterations"]),
            "seed": int(self.params["random_state"]),
        }

    def truncated(self, rank: int) -> EASELowRankModel:
        """The same fit cut to its leading ``rank`` components (the SVD is sorted), so a
        validation grid over ranks costs one fit."""
        projection, items, users = self._fitted()
        r = max(1, min(int(rank), projection.shape[1]))
        if r < projection.shape[1] and not self._sorted:
            projection, items, change = _sorted_factors(projection, items)
            users = (users @ change).astype(np.float32)
        out = EASELowRankModel(**{**self.params, "rank": int(rank)})
        out._set(projection[:, :r], items[:, :r], users[:, :r])
        out.n_items = self.n_items
        return out


def _weight_users(x: sp.csr_matrix, exponent: float) -> sp.csr_matrix:
    """Rows scaled by ``(mean activity / activity) ** (exponent / 2)``, so each user's
    weight in ``X^T X`` is ``(mean / n_u) ** exponent``: heavy raters stop dominating the
    item-item statistics (inverse user frequency). 0 leaves ``x`` as it is."""
    if exponent == 0.0:
        return x
    counts = np.asarray(x.getnnz(axis=1), dtype=np.float64)
    active = counts > 0
    scale = np.ones_like(counts)
    if active.any():
        scale[active] = (counts[active].mean() / counts[active]) ** (exponent / 2.0)
    return sp.csr_matrix(sp.diags(scale) @ sp.csr_matrix(x, dtype=np.float64))


def _regularization(x: sp.csr_matrix, lam: float, dropout: float) -> np.ndarray:
    """diag(Lambda) = lambda + p / (1 - p) * diag(X^T X), float64."""
    counts = np.asarray(sp.csr_matrix(x, dtype=np.float64).power(2).sum(axis=0)).ravel()
    return lam + dropout / (1.0 - dropout) * counts


def _ease_weights(x: sp.csr_matrix, lam: float, dropout: float = 0.0) -> np.ndarray:
    """``B`` (float64, zero diagonal) from the dense inverse of ``X^T X + Lambda``."""
    n_items = x.shape[1]
    x64 = sp.csr_matrix(x, dtype=np.float64)
    gram = (x64.T @ x64).toarray()
    gram[np.diag_indices(n_items)] += _regularization(x, lam, dropout)
    # Cholesky inverse: half the work of a general (LU) one for this positive definite G.
    factor, info = scipy.linalg.lapack.dpotrf(gram, lower=1, overwrite_a=1, clean=1)
    if info != 0:
        raise TrainingError(f"ease-lowrank: Gram matrix not positive definite (info {info})")
    p, info = scipy.linalg.lapack.dpotri(factor, lower=1, overwrite_c=1)
    p = np.tril(p) + np.tril(p, -1).T
    b = -p / np.diag(p)[None, :]
    b[np.diag_indices(n_items)] = 0.0
    return np.asarray(b)


def _dual_factors(
    x: sp.csr_matrix, lam: float, dropout: float, rank: int
) -> tuple[np.ndarray, np.ndarray]:
    """(projection [I, r], items [I, r]) of the top-``rank`` SVD of ``B`` (off its diagonal),
    for fewer users than items, with dense work on users x users matrices only.

    With ``R = X Lambda^-1`` and ``M = (I + X Lambda^-1 X^T)^-1`` (Woodbury),
    ``P = Lambda^-1 - R^T M R`` and off the diagonal ``B = R^T M R D^-1`` (``D = diag P``).
    Writing ``M = C C^T``, ``B = (R^T C)(D^-1 R^T C)^T``; both factors' Gram matrices are
    ``C^T (R R^T) C`` and ``C^T (R D^-2 R^T) C`` (users x users, from sparse products), so
    their SVD needs no dense items x users matrix until the final ``R^T @ [U, r]``: on
    1.9k users x 17.6k items this is seconds instead of minutes of dense QR. At
    ``rank >= users`` the factors ``R^T C`` and ``D^-1 R^T C`` ship as they are (exact).
    """
    x64 = sp.csr_matrix(x, dtype=np.float64)
    reg = _regularization(x, lam, dropout)
    r = sp.csr_matrix(x64 @ sp.diags(1.0 / reg))  # X Lambda^-1, users x items
    core = (r @ x64.T).toarray()
    core[np.diag_indices(core.shape[0])] += 1.0
    chol = np.linalg.cholesky(core)
    c = scipy.linalg.solve_triangular(chol, np.eye(core.shape[0]), lower=True).T  # M = C C^T
    m = c @ c.T
    diag_p = 1.0 / reg - _quadratic_diag(r, m)
    scaled = sp.csr_matrix(r @ sp.diags(1.0 / diag_p))  # R D^-1
    if rank >= core.shape[0]:  # untruncated: B = (R^T C)(D^-1 R^T C)^T exactly, no SVD
        return (
            np.asarray(r.T @ c, dtype=np.float32),
            np.asarray(scaled.T @ c, dtype=np.float32),
        )
    left_core = _gram_root(c.T @ (r @ r.T).toarray() @ c)
    right_core = _gram_root(c.T @ (scaled @ scaled.T).toarray() @ c)
    # left = R^T C = Q1 S1^1/2 V1^T: Q1 = R^T C V1 S1^-1/2 is orthonormal (likewise right).
    (v1, s1), (v2, s2) = left_core, right_core
    core = (np.sqrt(s1)[:, None] * v1.T) @ (v2 * np.sqrt(s2)[None, :])
    cu, s, cvt = np.linalg.svd(core)
    k = max(1, min(rank, s.size))
    to_left = c @ (v1 / np.sqrt(s1)[None, :]) @ (cu[:, :k] * s[None, :k])
    to_right = c @ (v2 / np.sqrt(s2)[None, :]) @ cvt[:k].T
    projection = np.asarray(r.T @ to_left, dtype=np.float32)
    items = np.asarray(scaled.T @ to_right, dtype=np.float32)
    return projection, items


def _sorted_factors(
    projection: np.ndarray, items: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(projection', items', T)``: the same product as an SVD sorted by singular value,
    with ``projection' = projection @ T`` (user vectors change the same way)."""
    q1, r1 = np.linalg.qr(projection.astype(np.float64))
    q2, r2 = np.linalg.qr(items.astype(np.float64))
    cu, s, cvt = np.linalg.svd(r1 @ r2.T)
    change = scipy.linalg.solve_triangular(r1, cu * s[None, :])
    return (q1 @ (cu * s[None, :])).astype(np.float32), (q2 @ cvt.T).astype(np.float32), change


def _quadratic_diag(r: sp.csr_matrix, m: np.ndarray, block: int = 4_096) -> np.ndarray:
    """``diag(R^T M R)`` [I] in blocks of items (never a dense users x items matrix)."""
    out = np.empty(r.shape[1], dtype=np.float64)
    rt = sp.csr_matrix(r.T)
    for lo in range(0, r.shape[1], block):
        part = rt[lo : lo + block]  # sparse: costs nnz(part) x users, not items x users^2
        out[lo : lo + block] = np.asarray(part.multiply(part @ m).sum(axis=1)).ravel()
    return out


def _gram_root(gram: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(V, S) of the symmetric PSD ``gram`` = V S V^T, directions with S ~ 0 dropped."""
    s, v = np.linalg.eigh((gram + gram.T) / 2.0)
    keep = s > s.max(initial=0.0) * 1e-12
    return v[:, keep], s[keep]


def _randomized_svd(
    a: Any, rank: int, power_iterations: int, seed: int, oversample: int = 16
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top-``rank`` SVD of a square matrix (Halko et al.)."""
    n = a.shape[1]
    width = min(n, rank + oversample)
    if width >= n and isinstance(a, np.ndarray):
        u, s, vt = np.linalg.svd(a, full_matrices=False)
        return u[:, :rank], s[:rank], vt[:rank]
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(a @ rng.standard_normal((n, width)))
    for _ in range(power_iterations):
        # Re-orthonormalize each half step so small singular directions survive in float64.
        q, _ = np.linalg.qr(a.T @ q)
        q, _ = np.linalg.qr(a @ q)
    small_u, s, vt = np.linalg.svd((a.T @ q).T, full_matrices=False)
    return (q @ small_u)[:, :rank], s[:rank], vt[:rank]
