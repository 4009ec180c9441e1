"""Offline evaluation: splits, every model against the baselines, cold-start users.

Splits (``--split``), over folded (user, item) pairs so one pair never sits on both sides:

- ``random:F``: a seeded random fraction F of the distinct (user, item) pairs is held out.
- ``time:F``: a global cut: the pairs whose *last* interaction falls in the latest F of
  all pairs (by that timestamp) are held out; pairs already seen before the cut stay in
  training. Global, not per user: it mimics training today and serving tomorrow.

Warm evaluation ranks the whole catalog for every training user with held-out pairs,
items seen in training excluded, and scores the top k (``training.metrics``).

Cold start (``cold_start_users=F``): a seeded fraction F of users is removed from training
entirely; for them the hybrid model recommends from their features only
(``cold_user_vector``), the regional popularity from their region, and global popularity
from nothing. Without user features (MovieLens) the cold-start rows are ``n/a``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from training.data import Dataset, InteractionMatrix, build_matrix
from training.errors import TrainingError
from training.metrics import evaluate_scores, format_table, ranking_metrics
from training.models import make_model
from training.models.base import RecommenderBase, top_n
from training.models.ease import MAX_ITEMS as EASE_MAX_ITEMS
from training.tuning import tune_als

DEFAULT_MODELS = ("als", "bpr", "lightfm", "popularity", "region_popularity", "ease")
DEFAULT_EASE_LAMBDAS = (100.0, 500.0)
Progress = Callable[[str], None]


@dataclass
class EvaluationReport:
    """One row per model (metrics at k), plus the cold-start rows and notes."""

    k: int
    split: str
    seed: int
    rows: dict[str, dict[str, Any]] = field(default_factory=dict)
    cold_start: dict[str, dict[str, Any]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)

    def table(self) -> str:
        text = format_table(self.rows, self.k)
        if self.cold_start:
            text += "\n\ncold-start users (features only)\n" + format_table(self.cold_start, self.k)
        return text

    def as_dict(self) -> dict[str, Any]:
        return {
            "k": self.k,
            "split": self.split,
            "seed": self.seed,
            "models": self.rows,
            "cold_start": self.cold_start,
            "notes": self.notes,
            "info": self.info,
        }


# --- splits ----------------------------------------------------------------------------


def parse_split(spec: str) -> tuple[str, float]:
    """``"random:0.2"`` -> ("random", 0.2); refuses anything else with a clear message."""
    kind, _, frac = spec.partition(":")
    try:
        fraction = float(frac)
    except ValueError:
        fraction = -1.0
    if kind not in ("random", "time") or not 0.0 < fraction < 1.0:
        raise TrainingError(
            f"--split must look like random:0.2 or time:0.2 (fraction in (0, 1)), not '{spec}'"
        )
    return kind, fraction


def _pairs(interactions: pd.DataFrame) -> tuple[np.ndarray, pd.DataFrame]:
    """Pair id per row, and one row per pair with its last timestamp."""
    keys = pd.MultiIndex.from_arrays(
        [interactions["user_id"].astype(str), interactions["item_id"].astype(str)]
    )
    codes, uniques = pd.factorize(keys, sort=True)
    last = pd.Series(interactions["timestamp"].to_numpy()).groupby(codes).max()
    return codes, pd.DataFrame({"last": last.to_numpy()}, index=np.arange(len(uniques)))


def split_interactions(
    interactions: pd.DataFrame, spec: str, seed: int = 42
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train rows, test rows) per the module docstring; deterministic for a seed."""
    kind, fraction = parse_split(spec)
    if len(interactions) == 0:
        raise TrainingError("no interactions to split")
    codes, pairs = _pairs(interactions)
    n_pairs = len(pairs)
    n_test = round(fraction * n_pairs)
    if n_test == 0 or n_test == n_pairs:
        raise TrainingError(f"split {spec} leaves an empty side ({n_pairs} user-item pairs)")
    if kind == "random":
        order = np.random.default_rng(seed).permutation(n_pairs)
    else:
        order = np.argsort(-pairs["last"].to_numpy(), kind="stable")
    is_test = np.zeros(n_pairs, dtype=bool)
    is_test[order[:n_test]] = True
    row_test = is_test[codes]
    return interactions[~row_test], interactions[row_test]


def split_matrix(
    matrix: sp.csr_matrix, fraction: float, seed: int
) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """Random split of a matrix's nonzero cells: (train, held out), same shape."""
    coo = sp.coo_matrix(matrix)
    rng = np.random.default_rng(seed)
    held = rng.random(coo.nnz) < fraction

    def part(mask: np.ndarray) -> sp.csr_matrix:
        return sp.csr_matrix(
            (coo.data[mask], (coo.row[mask], coo.col[mask])), shape=matrix.shape, dtype=np.float32
        )

    return part(~held), part(held)


# --- evaluating -------------------------------------------------------------------------


def fit_and_score(
    model: RecommenderBase,
    train: InteractionMatrix,
    test: sp.csr_matrix,
    dataset: Dataset | None,
    k: int,
) -> dict[str, Any]:
    start = time.perf_counter()
    model.fit(train, dataset)
    fit_s = time.perf_counter() - start
    metrics = evaluate_scores(model, train.matrix, test, k)
    return {**metrics.as_dict(), "fit_s": round(fit_s, 2), "params": _jsonable(model.params)}


def evaluate(
    dataset: Dataset,
    split: str = "random:0.2",
    seed: int = 42,
    k: int = 10,
    models: Sequence[str] = DEFAULT_MODELS,
    model_params: Mapping[str, Mapping[str, Any]] | None = None,
    ease_lambdas: Sequence[float] = DEFAULT_EASE_LAMBDAS,
    cold_start_users: float | None = None,
    tune: bool = False,
    tune_budget_s: float = 300.0,
    tune_trials: int = 20,
    progress: Progress | None = None,
) -> EvaluationReport:
    """Every requested model on one split, in one table (see the module docstring)."""
    say = progress or (lambda _msg: None)
    model_params = model_params or {}
    report = EvaluationReport(k=k, split=split, seed=seed)
    train_rows, test_rows = split_interactions(dataset.interactions, split, seed)
    train = build_matrix(dataset, train_rows)
    test = build_matrix(dataset, test_rows, user_ids=train.user_ids, item_ids=train.item_ids)
    report.info.update(
        users=len(train.user_ids),
        items=len(train.item_ids),
        train_pairs=int(train.matrix.nnz),
        test_pairs=int(test.matrix.nnz),
    )
    if tune:
        say("tuning ALS on a validation split of the training data")
        summary = tune_als(
            dataset, train, budget_s=tune_budget_s, max_trials=tune_trials, seed=seed, k=k
        )
        report.info["tuning"] = summary
        model_params = {**model_params, "als (tuned)": summary["best_params"]}
        models = [*models, "als (tuned)"]
    for name in models:
        for label, model in _candidates(name, train, dataset, model_params, ease_lambdas, report):
            say(f"fitting {label}")
            report.rows[label] = fit_and_score(model, train, test.matrix, dataset, k)
    if cold_start_users:
        report.cold_start = evaluate_cold_start(
            dataset, cold_start_users, seed, k, model_params, say, report.notes
        )
    return report


def _candidates(
    name: str,
    train: InteractionMatrix,
    dataset: Dataset,
    model_params: Mapping[str, Mapping[str, Any]],
    ease_lambdas: Sequence[float],
    report: EvaluationReport,
) -> list[tuple[str, RecommenderBase]]:
    """(row label, unfitted model) pairs for one requested model name."""
    base_name = name.split(" ", 1)[0]
    params = dict(model_params.get(name, {}))
    if base_name == "region_popularity" and not _has_regions(dataset):
        report.notes.append("region_popularity: no user regions in the data (skipped)")
        return []
    if base_name == "ease":
        n_items = len(train.item_ids)
        if n_items > EASE_MAX_ITEMS:
            report.notes.append(f"ease: skipped, {n_items} items > {EASE_MAX_ITEMS}")
            return []
        lambdas = [params.pop("lambda")] if "lambda" in params else list(ease_lambdas)
        return [
            (f"ease λ={lam:g}", make_model("ease", **params, **{"lambda": lam})) for lam in lambdas
        ]
    return [(name, make_model(base_name, **params))]


def _has_regions(dataset: Dataset) -> bool:
    users = dataset.users
    return users is not None and "region" in users.columns


# --- cold start -------------------------------------------------------------------------


def evaluate_cold_start(
    dataset: Dataset,
    fraction: float,
    seed: int,
    k: int,
    model_params: Mapping[str, Mapping[str, Any]] | None = None,
    progress: Progress | None = None,
    notes: list[str] | None = None,
) -> dict[str, dict[str, Any]]:
    """Rows ``popularity`` / ``region_popularity`` / ``lightfm`` for held-out whole users."""
    say = progress or (lambda _msg: None)
    notes = notes if notes is not None else []
    model_params = model_params or {}
    if not 0.0 < fraction < 1.0:
        raise TrainingError(f"--cold-start-users must be a fraction in (0, 1), not {fraction}")
    users = dataset.users
    feature_cols = [] if users is None else [c for c in users.columns if c != "user_id"]
    if not feature_cols:
        notes.append("cold start: the data has no user features; cold-start rows are n/a")
        return {
            name: dict.fromkeys(("precision", "recall", "ndcg", "map", "coverage", "users"))
            for name in ("popularity", "region_popularity", "lightfm")
        }
    all_users = np.unique(dataset.interactions["user_id"].astype(str).to_numpy())
    rng = np.random.default_rng(seed)
    n_cold = max(1, round(fraction * all_users.size))
    cold = np.sort(rng.choice(all_users, n_cold, replace=False))
    is_cold = dataset.interactions["user_id"].astype(str).isin(set(cold)).to_numpy()
    train = build_matrix(dataset, dataset.interactions[~is_cold])
    held = build_matrix(dataset, dataset.interactions[is_cold], item_ids=train.item_ids)
    relevant = held.matrix
    assert users is not None  # feature_cols is non-empty
    frame = users.assign(user_id=users["user_id"].astype(str)).set_index("user_id")
    frame = frame.reindex(held.user_ids.astype(str))
    rows: dict[str, dict[str, Any]] = {}

    def score(name: str, scores: np.ndarray, fit_s: float) -> None:
        ids, _ = top_n(scores.astype(np.float32), k)
        metrics = ranking_metrics(ids, relevant, k, n_items=len(train.item_ids))
        rows[name] = {**metrics.as_dict(), "fit_s": round(fit_s, 2)}

    start = time.perf_counter()
    pop = make_model("popularity").fit(train, dataset)
    score("popularity", pop.score_users(np.zeros(len(held.user_ids), np.int64), held.matrix), 0.0)
    if "region" in feature_cols:
        from training.models.popularity import RegionalPopularityModel

        start = time.perf_counter()
        regional = RegionalPopularityModel(**model_params.get("region_popularity", {}))
        regional.fit(train, dataset)
        regions = frame["region"].astype("string").fillna("").to_numpy(dtype=str)
        score("region_popularity", regional.region_scores(regions), time.perf_counter() - start)
    say("fitting lightfm for cold-start users")
    from recsvc.bundle.scoring import cold_user_scores
    from training.models.hybrid import LightFMHybrid

    start = time.perf_counter()
    hybrid = LightFMHybrid(**model_params.get("lightfm", {})).fit(train, dataset)
    arrays = hybrid.to_arrays(train.item_ids)
    fit_s = time.perf_counter() - start
    values = frame[feature_cols].astype("string").fillna("").to_numpy(dtype=str)
    scores = np.vstack(
        [
            cold_user_scores(arrays, {c: v for c, v in zip(feature_cols, row, strict=True) if v})
            for row in values
        ]
    )
    score("lightfm", scores, fit_s)
    # What train would ship for these users: the profile source chosen on held-out users
    # of the training part only, refitted on it, scored on the cold users' profiles.
    from recsvc.bundle.scoring import segment_scores
    from training.cold_start import choose_profile_source

    start = time.perf_counter()
    choice = choose_profile_source(
        dataset, train, hybrid_params=dict(model_params.get("lightfm", {})), seed=seed, k=k
    )
    cold = choice.arrays
    pop_counts = np.asarray(sp.csr_matrix(train.matrix).getnnz(axis=0), dtype=np.float64)
    profiles = [{c: v for c, v in zip(feature_cols, row, strict=True) if v} for row in values]
    if cold.source == "segments":
        chosen = np.vstack([segment_scores(cold, pop_counts, f) for f in profiles])
    elif cold.source == "lightfm":
        chosen = scores
    else:
        chosen = np.tile(pop_counts, (len(profiles), 1))
    score(f"profile source ({cold.source})", chosen, time.perf_counter() - start)
    rows[f"profile source ({cold.source})"]["choice"] = choice.to_dict()
    base = rows["popularity"]["ndcg"]
    for row in rows.values():
        row["ndcg_vs_popularity"] = round(row["ndcg"] / base, 4) if base else None
    return rows


def _jsonable(params: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in params.items():
        if isinstance(value, np.generic):
            value = value.item()
        out[key] = value if isinstance(value, (int, float, str, bool, type(None))) else str(value)
    return out
