"""The promotion gate: does a freshly trained bundle replace ``current``?

Holdout: the most recent interactions by time (``holdout_fraction`` of the rows; rows at
the cut-off second all go to the holdout). The candidate is evaluated as its *recipe*: the
model class and the parameters the job chose, refit on everything before the cut-off, so
it has never seen the holdout; the bundle that is published is the same recipe fit on all
rows (it includes the newest events, which is the point of retraining). The current bundle
is scored from its arrays as a server scores it: ``user_factors @ item_factors.T`` for
users it knows, its popularity for users it does not.

Both are scored on the same users — holdout users with history before the cut-off, at
most ``max_users``, drawn with the seed — with the same exclusions (items the user had
before the cut-off) and the same metric code as the training job
(``training.metrics.ranking_metrics``: NDCG@k and catalog coverage@k over the candidate's
item universe). A holdout item the user had before the cut-off is not a target (serving
never recommends seen items).

Decision (``if-better``): promote when the candidate's NDCG@k is at least the current's
times ``1 - ndcg_tolerance`` and its coverage at least the current's times
``1 - coverage_tolerance``. No current bundle, or one that cannot be loaded: promote.
No holdout user to evaluate on: refuse (nothing shows the candidate is not worse).

The holdout must be fresh for the current bundle too: when its manifest records the newest
timestamp it was trained on (``promotion.data_until``, written by every train), the
holdout starts after it (smaller than ``holdout_fraction`` when few events are new), and
with no newer interaction at all the gate refuses (retraining on the same data shows
nothing). A current bundle without that record may have seen the holdout, which favours
it; the record's ``current_saw_holdout`` is then null.
"""

from __future__ import annotations

import importlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from recsvc.bundle import Bundle, load_bundle, resolve_current
from recsvc.bundle.errors import BundleError
from training.data import Dataset, InteractionMatrix, build_matrix
from training.errors import TrainingError
from training.metrics import ranking_metrics
from training.models import model_class

PromoteMode = Literal["always", "never", "if-better"]
PROMOTE_MODES: tuple[str, ...] = ("if-better", "always", "never")
_SCORE_BLOCK_CELLS = 4_000_000  # users per block x items: one dense float32 slab


@dataclass(frozen=True)
class GateConfig:
    holdout_fraction: float = 0.1
    k: int = 10
    ndcg_tolerance: float = 0.05  # relative: candidate >= current * (1 - tol)
    coverage_tolerance: float = 0.10  # relative
    max_users: int = 20_000
    seed: int = 42

    def __post_init__(self) -> None:
        if not 0.0 < self.holdout_fraction < 1.0:
            raise TrainingError(f"holdout fraction must be in (0, 1), got {self.holdout_fraction}")
        for name in ("ndcg_tolerance", "coverage_tolerance"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise TrainingError(f"{name.replace('_', ' ')} must be in [0, 1), got {value}")
        if self.k < 1 or self.max_users < 1:
            raise TrainingError("gate k and max users must be positive")


@dataclass(frozen=True)
class Holdout:
    cutoff: int  # epoch seconds; rows at or after it are held out
    train: InteractionMatrix  # rows before the cut-off, the full id universes
    users: np.ndarray  # [n] row indices evaluated
    relevant: sp.csr_matrix  # [n, I] held-out targets of those users (not seen before)
    rows: int  # held-out interaction rows

    def info(self) -> dict[str, Any]:
        return {"cutoff": self.cutoff, "rows": self.rows, "users": len(self.users)}


def split_holdout(
    dataset: Dataset,
    matrix: InteractionMatrix,
    config: GateConfig,
    fresh_after: int | None = None,
) -> Holdout | None:
    """The time split; None when it leaves no user to evaluate. With ``fresh_after`` (the
    newest timestamp the current bundle was trained on) the holdout starts after it, so
    neither side has seen it."""
    frame = dataset.interactions
    stamps = frame["timestamp"].to_numpy()
    n = len(stamps)
    if n < 2:
        return None
    n_hold = max(1, round(config.holdout_fraction * n))
    cutoff = int(np.partition(stamps, n - n_hold)[n - n_hold])
    if fresh_after is not None and cutoff <= fresh_after:
        cutoff = fresh_after + 1
    held = stamps >= cutoff
    if held.all() or not held.any():  # nothing to train on, or nothing fresh
        return None
    train = build_matrix(dataset, frame[~held], matrix.user_ids, matrix.item_ids)
    later = build_matrix(dataset, frame[held], matrix.user_ids, matrix.item_ids)
    target = sp.csr_matrix(later.matrix > 0, dtype=np.float32)
    seen = sp.csr_matrix(train.matrix > 0, dtype=np.float32)
    target = sp.csr_matrix(target - target.multiply(seen))
    target.eliminate_zeros()
    has_history = np.diff(train.matrix.indptr) > 0
    has_target = np.diff(target.indptr) > 0
    users = np.flatnonzero(has_history & has_target)
    if len(users) == 0:
        return None
    if len(users) > config.max_users:
        rng = np.random.default_rng(config.seed)
        users = np.sort(rng.choice(users, config.max_users, replace=False))
    return Holdout(cutoff, train, users, target[users], int(held.sum()))


def fit_recipe(
    bundle: Bundle, train: InteractionMatrix, dataset: Dataset
) -> tuple[np.ndarray, np.ndarray]:
    """The candidate bundle's model class with its chosen parameters, fit on ``train``;
    returns (user_factors, item_factors) in ``train``'s id order."""
    info = bundle.manifest.get("model") or {}
    name = str(info.get("name", ""))
    params = dict(info.get("params") or {})
    model = model_class(name)(**params)
    if name in ("als", "bpr"):
        # implicit wants single-threaded BLAS (it parallelizes itself); load it first so
        # the limit reaches the BLAS it uses.
        importlib.import_module(f"implicit.cpu.{name}")
        with threadpool_limits(1, "blas"):
            model.fit(train, dataset)
    else:
        model.fit(train, dataset)
    users, items = model.user_factors, model.item_factors
    if users is None or items is None:
        raise TrainingError(f"model '{name}' has no embeddings to score the holdout with")
    return _rows(users, len(train.user_ids)), _rows(items, len(train.item_ids))


def _rows(factors: np.ndarray, n: int) -> np.ndarray:
    factors = np.ascontiguousarray(factors, dtype=np.float32)
    if factors.shape[0] < n:  # trailing all-zero rows dropped by the model: zero vectors
        pad = np.zeros((n - factors.shape[0], factors.shape[1]), dtype=np.float32)
        factors = np.vstack([factors, pad])
    return factors


def top_k(
    vectors: np.ndarray | None,
    item_factors: np.ndarray,
    seen: sp.csr_matrix,
    k: int,
    fallback: np.ndarray | None = None,
) -> np.ndarray:
    """[n, k] best item indices per row: ``vectors @ item_factors.T`` (or ``fallback``
    scores for rows whose vector is all NaN), ``seen`` items excluded; -1 pads."""
    n, n_items = seen.shape
    k = min(k, n_items)
    out = np.full((n, k), -1, dtype=np.int64)
    block = max(1, _SCORE_BLOCK_CELLS // max(n_items, 1))
    for start in range(0, n, block):
        stop = min(n, start + block)
        if vectors is None:
            assert fallback is not None
            scores = np.tile(fallback.astype(np.float32), (stop - start, 1))
        else:
            scores = vectors[start:stop] @ item_factors.T
            if fallback is not None:
                unknown = np.isnan(scores[:, 0]) if n_items else np.zeros(0, bool)
                scores[unknown] = fallback
        part = seen[start:stop]
        rows = np.repeat(np.arange(stop - start), np.diff(part.indptr))
        scores[rows, part.indices] = -np.inf
        best = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(scores, best, axis=1), axis=1, kind="stable")
        best = np.take_along_axis(best, order, axis=1)
        chosen = np.take_along_axis(scores, best, axis=1)
        best[~np.isfinite(chosen)] = -1
        out[start:stop] = best
    return out


def score_current(current: Bundle, holdout: Holdout, k: int) -> np.ndarray:
    """Top-k of the current bundle for the holdout users, in the candidate's item indices."""
    user_ids = holdout.train.user_ids[holdout.users]
    item_ids = holdout.train.item_ids
    cur_users = np.asarray(current.user_ids).astype(str)
    cur_items = np.asarray(current.item_ids).astype(str)
    user_pos = _lookup(cur_users, user_ids.astype(str))
    # The seen items of each user, as the current bundle's columns.
    seen_rows = holdout.train.matrix[holdout.users]
    to_cur = _lookup(cur_items, item_ids.astype(str))
    coo = seen_rows.tocoo()
    cols = to_cur[coo.col]
    keep = cols >= 0
    seen = sp.csr_matrix(
        (np.ones(int(keep.sum()), np.float32), (coo.row[keep], cols[keep])),
        shape=(len(user_ids), len(cur_items)),
    )
    factors = np.asarray(current.user_factors)
    dim = factors.shape[1]
    vectors = np.full((len(user_ids), dim), np.nan, dtype=np.float32)
    known = user_pos >= 0
    vectors[known] = factors[user_pos[known]]
    popularity = np.asarray(current.popularity, dtype=np.float32)
    item_factors = np.asarray(current.item_factors, dtype=np.float32)
    best = top_k(vectors, item_factors, seen, k, fallback=popularity)
    # Back into the candidate's item universe (an item it does not know can never hit).
    mapped = np.full(best.shape, -1, dtype=np.int64)
    valid = best >= 0
    mapped[valid] = _lookup(item_ids.astype(str), cur_items[best[valid]])
    return mapped


def _lookup(sorted_ids: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """Position of each ``wanted`` id in ``sorted_ids`` (sorted), -1 when absent."""
    if len(sorted_ids) == 0:
        return np.full(len(wanted), -1, dtype=np.int64)
    order = np.argsort(sorted_ids, kind="stable")
    ids = sorted_ids[order]
    pos = np.searchsorted(ids, wanted)
    pos = np.clip(pos, 0, len(ids) - 1)
    found = ids[pos] == wanted
    return np.where(found, order[pos], -1).astype(np.int64)


def load_current(root: Path) -> tuple[Bundle | None, str]:
    """(the current bundle, "") or (None, why not)."""
    try:
        path = resolve_current(Path(root))
    except BundleError as exc:
        return None, str(exc)
    try:
        return load_bundle(path, map_user_arrays=True), ""
    except Exception as exc:  # a corrupt current must not block its replacement
        return None, f"current bundle {path.name} cannot be loaded: {exc}"


def decide(
    dataset: Dataset,
    matrix: InteractionMatrix,
    candidate: Bundle,
    root: Path,
    config: GateConfig,
) -> tuple[bool, dict[str, Any]]:
    """Evaluate the candidate recipe and ``root``'s current bundle on the fresh holdout;
    returns (promote, the manifest's ``promotion`` record)."""
    started = time.perf_counter()
    data_until = int(dataset.interactions["timestamp"].max())
    record: dict[str, Any] = {
        "mode": "if-better",
        "data_until": data_until,
        "tolerance": {"ndcg": config.ndcg_tolerance, "coverage": config.coverage_tolerance},
        "k": config.k,
        "holdout_fraction": config.holdout_fraction,
    }
    current, why_not = load_current(root)
    if current is None:
        record.update(decision="promoted", reason=f"no usable current bundle ({why_not})")
        record["seconds"] = round(time.perf_counter() - started, 3)
        return True, record
    record["current"] = current.version
    cur_until = (current.manifest.get("promotion") or {}).get("data_until")
    cur_until = int(cur_until) if isinstance(cur_until, int | float) else None
    holdout = split_holdout(dataset, matrix, config, fresh_after=cur_until)
    if holdout is None:
        if cur_until is not None and data_until <= cur_until:
            why = (
                f"no interaction newer than the current bundle's training data (up to "
                f"{cur_until}): nothing fresh to compare on (--promote always publishes anyway)"
            )
        else:
            why = (
                "no holdout user to evaluate on (too few interactions, all at one second, "
                "or no held-out user with earlier history)"
            )
        record.update(decision="refused", reason=f"{why}; nothing shows the candidate is not worse")
        record["seconds"] = round(time.perf_counter() - started, 3)
        return False, record
    record["holdout"] = holdout.info()
    user_f, item_f = fit_recipe(candidate, holdout.train, dataset)
    seen = holdout.train.matrix[holdout.users]
    cand_top = top_k(user_f[holdout.users], item_f, seen, config.k)
    cur_top = score_current(current, holdout, config.k)
    n_items = len(holdout.train.item_ids)
    cand = ranking_metrics(cand_top, holdout.relevant, config.k, n_items)
    cur = ranking_metrics(cur_top, holdout.relevant, config.k, n_items)
    k = config.k
    record["candidate"] = {
        f"ndcg@{k}": round(cand.ndcg, 6),
        f"coverage@{k}": round(cand.coverage, 6),
    }
    record["current_scores"] = {
        f"ndcg@{k}": round(cur.ndcg, 6),
        f"coverage@{k}": round(cur.coverage, 6),
    }
    # Unknown for a current bundle trained before the gate recorded data_until.
    record["current_saw_holdout"] = None if cur_until is None else cur_until >= holdout.cutoff
    ndcg_floor = cur.ndcg * (1.0 - config.ndcg_tolerance)
    cov_floor = cur.coverage * (1.0 - config.coverage_tolerance)
    failures = []
    if cand.ndcg < ndcg_floor:
        failures.append(
            f"ndcg@{k} {cand.ndcg:.4f} < {ndcg_floor:.4f} "
            f"(current {cur.ndcg:.4f} - {config.ndcg_tolerance:.0%})"
        )
    if cand.coverage < cov_floor:
        failures.append(
            f"coverage@{k} {cand.coverage:.4f} < {cov_floor:.4f} "
            f"(current {cur.coverage:.4f} - {config.coverage_tolerance:.0%})"
        )
    scores = (
        f"candidate ndcg@{k} {cand.ndcg:.4f} coverage@{k} {cand.coverage:.4f} vs current "
        f"{current.version} ndcg@{k} {cur.ndcg:.4f} coverage@{k} {cur.coverage:.4f} on "
        f"{len(holdout.users)} holdout users"
    )
    if failures:
        record.update(
            decision="refused", reason=f"worse beyond tolerance: {'; '.join(failures)}; {scores}"
        )
    else:
        record.update(decision="promoted", reason=f"not worse beyond tolerance: {scores}")
    record["seconds"] = round(time.perf_counter() - started, 3)
    return not failures, record


def fixed_decision(mode: str, dataset: Dataset) -> tuple[bool, dict[str, Any]]:
    """``--promote always|never``: no evaluation; the record still carries ``data_until``."""
    promote = mode == "always"
    return promote, {
        "mode": mode,
        "decision": "promoted" if promote else "never",
        "reason": f"--promote {mode}",
        "data_until": int(dataset.interactions["timestamp"].max()),
    }
