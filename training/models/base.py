"""One small interface for every model, in the style of implicit's ``RecommenderBase``.

A model is fitted on an ``InteractionMatrix`` (users x items confidences) and optionally
the whole ``Dataset`` (for user/item features and regions). It answers in batch:
``recommend`` takes an array of user rows and the matching rows of the user-items matrix
and returns ``[n, N]`` item indices and scores. ``save``/``load`` write ``model.json`` plus
``.npy`` arrays only (loaded with ``allow_pickle=False``), never pickle.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import scipy.sparse as sp

from training.errors import TrainingError

if TYPE_CHECKING:
    from training.data import Dataset, InteractionMatrix

MODEL_FILE = "model.json"
# Scores are computed in blocks of users so a dense [block, I] slab stays small.
_SCORE_BLOCK_CELLS = 8_000_000


class RecommenderBase(ABC):
    """fit / recommend / similar_items / save / load; subclasses fill ``score_users``."""

    name: ClassVar[str]

    def __init__(self, **params: Any) -> None:
        self.params: dict[str, Any] = dict(params)
        self.n_items = 0

    # --- learning -------------------------------------------------------------------
    @abstractmethod
    def fit(self, train: InteractionMatrix, dataset: Dataset | None = None) -> RecommenderBase:
        """Learn from the training matrix; returns self."""

    @abstractmethod
    def score_users(self, user_idx: np.ndarray, user_items: sp.csr_matrix) -> np.ndarray:
        """Dense [n, I] float32 scores for the given users (rows of ``user_items``)."""

    # --- embeddings (models that have them) -----------------------------------------
    @property
    def user_factors(self) -> np.ndarray | None:
        return None

    @property
    def item_factors(self) -> np.ndarray | None:
        return None

    # --- queries --------------------------------------------------------------------
    def recommend(
        self,
        user_idx: np.ndarray,
        user_items: sp.csr_matrix,
        N: int,
        filter_already_liked_items: bool = True,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top ``N`` items for each user in ``user_idx``.

        ``user_items`` holds one row per entry of ``user_idx`` (as in implicit 0.7): the
        items each user interacted with, masked out when ``filter_already_liked_items``.
        Returns ``(items [n, N] int64, scores [n, N] float32)``, best first; slots with
        nothing left to recommend hold item -1 and score -inf.
        """
        user_idx = np.atleast_1d(np.asarray(user_idx, dtype=np.int64))
        user_items = sp.csr_matrix(user_items)
        if user_items.shape[0] != user_idx.size:
            raise ValueError("user_items must have one row per entry of user_idx")
        n_items = self.n_items
        N = int(min(N, n_items))
        ids = np.full((user_idx.size, N), -1, dtype=np.int64)
        scores = np.full((user_idx.size, N), -np.inf, dtype=np.float32)
        block = max(1, _SCORE_BLOCK_CELLS // max(n_items, 1))
        for start in range(0, user_idx.size, block):
            stop = min(start + block, user_idx.size)
            rows = user_items[start:stop]
            s = np.asarray(self.score_users(user_idx[start:stop], rows), dtype=np.float32)
            if filter_already_liked_items:
                r, c = rows.nonzero()
                s[r, c] = -np.inf
            ids[start:stop], scores[start:stop] = top_n(s, N)
        return ids, scores

    def similar_items(self, item_idx: np.ndarray, N: int) -> tuple[np.ndarray, np.ndarray]:
        """Top ``N`` items by cosine similarity of item factors (the item itself first)."""
        factors = self.item_factors
        if factors is None:
            raise TrainingError(f"model '{self.name}' has no item embeddings")
        item_idx = np.atleast_1d(np.asarray(item_idx, dtype=np.int64))
        norms = np.linalg.norm(factors, axis=1)
        normed = factors / np.maximum(norms, 1e-12)[:, None]
        s = normed[item_idx] @ normed.T
        s[np.arange(item_idx.size), item_idx] = np.inf  # the item itself ranks first
        ids, scores = top_n(s.astype(np.float32), int(min(N, factors.shape[0])))
        scores[scores == np.inf] = 1.0
        return ids, scores

    # --- persistence ----------------------------------------------------------------
    def arrays(self) -> dict[str, np.ndarray]:
        """The learned state as plain (non-object) arrays."""
        return {}

    def set_arrays(self, arrays: Mapping[str, np.ndarray]) -> None:
        """Restore the learned state written by ``arrays``."""
        return None

    def meta(self) -> dict[str, Any]:
        """Extra JSON-serializable state (id lists, feature names...)."""
        return {}

    def set_meta(self, meta: Mapping[str, Any]) -> None:
        """Restore the state written by ``meta``."""
        return None

    def save(self, directory: Path | str) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        arrays = self.arrays()
        for key, value in arrays.items():
            if value.dtype == object:
                raise TrainingError(f"array '{key}' has dtype object; cannot save without pickle")
            np.save(directory / f"{key}.npy", value, allow_pickle=False)
        doc = {
            "model": self.name,
            "params": self.params,
            "n_items": self.n_items,
            "arrays": sorted(arrays),
            "meta": self.meta(),
        }
        (directory / MODEL_FILE).write_text(json.dumps(doc, indent=2, sort_keys=True))
        return directory

    @classmethod
    def load(cls, directory: Path | str) -> RecommenderBase:
        """Load any saved model (dispatching on the name in ``model.json``)."""
        directory = Path(directory)
        path = directory / MODEL_FILE
        try:
            doc = json.loads(path.read_text())
        except FileNotFoundError as exc:
            raise TrainingError(f"{path}: no saved model here") from exc
        except json.JSONDecodeError as exc:
            raise TrainingError(f"{path}: not valid JSON ({exc})") from exc
        from training.models import model_class

        model_cls = model_class(str(doc.get("model")))
        if cls is not RecommenderBase and not issubclass(model_cls, cls):
            raise TrainingError(f"{path}: holds a '{doc.get('model')}' model, not {cls.name}")
        model = model_cls(**doc.get("params", {}))
        model.n_items = int(doc.get("n_items", 0))
        arrays = {
            key: np.load(directory / f"{key}.npy", allow_pickle=False) for key in doc["arrays"]
        }
        model.set_arrays(arrays)
        model.set_meta(doc.get("meta", {}))
        return model


def top_n(scores: np.ndarray, N: int) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise top ``N`` of a dense [n, I] score matrix, best first (-inf slots -> -1)."""
    n, n_items = scores.shape
    N = min(N, n_items)
    if N <= 0:
        return np.empty((n, 0), np.int64), np.empty((n, 0), np.float32)
    if n_items > N:
        part = np.argpartition(-scores, N - 1, axis=1)[:, :N]
    else:
        part = np.broadcast_to(np.arange(n_items), (n, n_items)).copy()
    part_scores = np.take_along_axis(scores, part, axis=1)
    order = np.argsort(-part_scores, axis=1, kind="stable")
    ids = np.take_along_axis(part, order, axis=1).astype(np.int64)
    top = np.take_along_axis(part_scores, order, axis=1).astype(np.float32)
    ids[~np.isfinite(top) & (top < 0)] = -1
    return ids, top


def dense_factors(values: Any) -> np.ndarray:
    """implicit may hand back GPU or non-contiguous arrays: plain C float32."""
    if hasattr(values, "to_numpy"):
        values = values.to_numpy()
    return np.ascontiguousarray(values, dtype=np.float32)
