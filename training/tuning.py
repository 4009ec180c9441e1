"""A small, bounded hyperparameter search for the shipped ALS model.

Validation is carved out of the *training* matrix only, so a test split held out by
``evaluate`` is never looked at: the training cells are dealt at random into 5 parts and
each trial is scored on ``folds`` of them in turn (fit on the other 80%), averaged. One
split alone is too noisy to rank configs: on MovieLens the default's validation NDCG@10
moved 0.215-0.224 between three random 20% splits, more than the gaps between configs,
and a single split picked a config that was 4% worse on the test split. A challenger must
beat the incumbent by more than the fold noise (``pick_winner``). The first trial
is ``ALS_DEFAULTS`` (themselves the winners of the MovieLens study in
docs/benchmarks/quality.md); the rest are seeded random perturbations around them:
factors, regularization, alpha, iterations and the weighting (BM25 K1/B). The search
stops at ``max_trials`` or when the next trial would overrun ``budget_s``. On a matrix of
more than ``MAX_SEARCH_CELLS`` cells it runs on a seeded sample of whole users holding
about that many (``search_sample``): the budget is only checked between trials, so an
unsampled first trial at 20M cells would take hours on its own.

Returns a JSON-serializable summary: the winner, its validation NDCG@k, how it compares
with the defaults, and every trial (the bundle records it in the manifest).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp

from training.data import Dataset, InteractionMatrix
from training.errors import TrainingError
from training.metrics import evaluate_scores
from training.models.als import ALS_DEFAULTS, ALSModel

VALIDATION_FRACTION = 0.2  # each fold holds out 1/5 of the training cells
DEFAULT_FOLDS = 3
MAX_VALIDATION_USERS = 20_000
MAX_SEARCH_CELLS = 2_000_000  # larger matrices are searched on a sample of whole users
# Multipliers around the defaults (the MovieLens optimum was flat within ~2x of them).
FACTOR_CHOICES = (64, 128, 256)
REG_SCALES = (0.5, 0.75, 1.0, 1.5, 2.0)
ALPHA_SCALES = (0.5, 0.67, 1.0, 1.33, 2.0)
ITERATION_CHOICES = (15, 20, 30)
WEIGHTING_CHOICES: tuple[dict[str, Any], ...] = (
    {"weighting": "none"},
    {"weighting": "none"},
    {"weighting": "bm25", "bm25_k1": 100.0, "bm25_b": 0.8},
    {"weighting": "bm25", "bm25_k1": 1.2, "bm25_b": 0.75},
)


def candidate_params(
    n: int, seed: int, base: Mapping[str, Any] | None = None, counts: bool = False
) -> list[dict[str, Any]]:
    """``n`` distinct ALS configs: ``base`` (default ``ALS_DEFAULTS``) first, then random.

    ``counts`` (the weights are not all equal, e.g. play counts): the second config is
    ``base`` with ``log`` weighting, and the random ones draw their weighting from
    ``none``/``log`` (confidence from raw counts in the hundreds of thousands is rarely
    what ALS wants; validation decides)."""
    base = {**ALS_DEFAULTS, **(base or {})}
    rng = np.random.default_rng(seed)
    out = [dict(base)]
    seen = {_key(base)}
    choices = WEIGHTING_CHOICES + (({"weighting": "log"},) * 2 if counts else ())
    if counts and n > 1 and base.get("weighting") != "log":
        logged = {**base, "weighting": "log"}
        out.append(logged)
        seen.add(_key(logged))
    for _ in range(50 * max(n, 1)):
        if len(out) >= n:
            break
        trial = dict(base)
        trial["factors"] = int(rng.choice(FACTOR_CHOICES))
        trial["regularization"] = round(float(base["regularization"]) * rng.choice(REG_SCALES), 4)
        trial["alpha"] = round(float(base["alpha"]) * rng.choice(ALPHA_SCALES), 4)
        trial["iterations"] = int(rng.choice(ITERATION_CHOICES))
        trial.update(choices[int(rng.integers(len(choices)))])
        if _key(trial) not in seen:
            seen.add(_key(trial))
            out.append(trial)
    return out


def _key(params: Mapping[str, Any]) -> tuple[Any, ...]:
    return tuple(sorted((k, str(v)) for k, v in params.items()))


def tune_als(
    dataset: Dataset | None,
    matrix: InteractionMatrix,
    budget_s: float = 300.0,
    max_trials: int = 20,
    seed: int = 42,
    k: int = 10,
    base_params: Mapping[str, Any] | None = None,
    progress: Callable[[str], None] | None = None,
    folds: int = DEFAULT_FOLDS,
    max_cells: int = MAX_SEARCH_CELLS,
) -> dict[str, Any]:
    """Search ALS params on validation folds of ``matrix``; JSON summary (module doc)."""
    if matrix.matrix.nnz == 0:
        raise TrainingError("cannot tune ALS on an empty interaction matrix")
    if not 1 <= folds <= 5:
        raise TrainingError(f"folds must be between 1 and 5, not {folds}")
    searched = search_sample(matrix, max_cells, seed)
    splits = validation_folds(searched, folds, seed)
    start = time.perf_counter()
    trials: list[dict[str, Any]] = []
    stopped = "trials"
    last_s = 0.0
    for params in candidate_params(max_trials, seed, base_params, counts=has_counts(matrix)):
        elapsed = time.perf_counter() - start
        if trials and elapsed + last_s > budget_s:
            stopped = "budget"
            break
        t0 = time.perf_counter()
        values = []
        for fit_matrix, held in splits:
            model = ALSModel(**{**params, "random_state": seed})
            model.fit(fit_matrix, dataset)
            metrics = evaluate_scores(model, fit_matrix.matrix, held, k, MAX_VALIDATION_USERS, seed)
            values.append(metrics.ndcg)
        last_s = time.perf_counter() - t0
        trials.append(
            {
                "params": _plain(params),
                f"ndcg@{k}": round(float(np.mean(values)), 5),
                "folds": [round(v, 5) for v in values],
                "seconds": round(last_s, 2),
            }
        )
        if progress is not None:
            progress(f"trial {len(trials)}: ndcg@{k}={np.mean(values):.4f} {params}")
    metric = f"ndcg@{k}"
    best = pick_winner(trials, metric)
    default_value = trials[0][metric]
    reason = (
        f"best validation {metric} ({best[metric]:.4f}, beating the incumbent by more than "
        f"one standard error of the paired fold differences) of {len(trials)} ALS trials "
        f"(defaults: {default_value:.4f}); validation = mean over {folds} folds, each a "
        f"random {VALIDATION_FRACTION:.0%} of the training cells (seed {seed}); "
        f"stopped by {stopped}"
    )
    if searched is not matrix:
        reason += (
            f"; searched on a sample of {len(searched.user_ids)} of {len(matrix.user_ids)} "
            f"users ({searched.matrix.nnz} of {matrix.matrix.nnz} cells)"
        )
    return {
        "model": "als",
        "metric": metric,
        "best_params": best["params"],
        "best_value": best[metric],
        "default_value": default_value,
        "trials": trials,
        "reason": reason,
        "stopped_by": stopped,
        "budget_s": budget_s,
        "elapsed_s": round(time.perf_counter() - start, 2),
        "validation": {"fraction": VALIDATION_FRACTION, "folds": folds, "seed": seed},
        "sample": {"users": len(searched.user_ids), "cells": int(searched.matrix.nnz)},
    }


def has_counts(matrix: InteractionMatrix) -> bool:
    """Whether the folded weights vary (counts or weighted events), not all one value."""
    data = sp.csr_matrix(matrix.matrix).data
    return bool(data.size) and float(data.min()) != float(data.max())


def search_sample(matrix: InteractionMatrix, max_cells: int, seed: int) -> InteractionMatrix:
    """``matrix`` itself when it has at most ``max_cells`` cells; else the rows of a seeded
    random set of whole users holding at most ``max_cells`` cells (users stay sorted)."""
    x = sp.csr_matrix(matrix.matrix)
    if x.nnz <= max_cells:
        return matrix
    order = np.random.default_rng(seed).permutation(x.shape[0])
    counts = np.diff(x.indptr)[order]
    take = max(1, int(np.searchsorted(np.cumsum(counts), max_cells, side="right")))
    keep = np.sort(order[:take])
    return InteractionMatrix(matrix.user_ids[keep], matrix.item_ids, x[keep])


def pick_winner(trials: list[dict[str, Any]], metric: str) -> dict[str, Any]:
    """The incumbent (first trial = defaults) unless a challenger beats it clearly.

    A challenger replaces the incumbent when its mean paired fold improvement exceeds one
    standard error of those differences (with one fold: when it is simply higher). Ties
    within the noise keep the defaults, which were chosen on more data than a fold has.
    """
    best = trials[0]
    for trial in trials[1:]:
        if beats(trial["folds"], best["folds"]):
            best = trial
    return best


def beats(challenger: Sequence[float], incumbent: Sequence[float]) -> bool:
    """True when the mean paired fold gain of ``challenger`` over ``incumbent`` exceeds one
    standard error of those differences (with one fold: when it is simply higher)."""
    diff = np.asarray(challenger) - np.asarray(incumbent)
    margin = float(diff.std(ddof=1) / np.sqrt(diff.size)) if diff.size > 1 else 0.0
    return float(diff.mean()) > margin


def validation_folds(
    matrix: InteractionMatrix, folds: int, seed: int
) -> list[tuple[InteractionMatrix, sp.csr_matrix]]:
    """``folds`` (fit matrix, held-out cells) pairs; the held-out parts are disjoint."""
    coo = sp.coo_matrix(matrix.matrix)
    part = np.random.default_rng(seed).integers(0, 5, coo.nnz)
    out = []
    for f in range(folds):
        held = part == f
        cells = [
            sp.csr_matrix(
                (coo.data[m], (coo.row[m], coo.col[m])), shape=coo.shape, dtype=np.float32
            )
            for m in (~held, held)
        ]
        out.append((InteractionMatrix(matrix.user_ids, matrix.item_ids, cells[0]), cells[1]))
    return out


def _plain(params: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in params.items():
        out[key] = value.item() if isinstance(value, np.generic) else value
    return out


# --- ease-lowrank (EASE / EDLAE factorized): a small grid on the same folds ----------------

# The EASE family on the same folds. lambda's scale depends on the data (MovieLens and
# Last.fm optima differ by an order of magnitude), so it is found by a line search in
# factors of LAMBDA_STEP from the default, for each user weight (0 = plain EASE, the bar
# itself, exact at full rank). Then the blend with ALS may replace the winner.
LOWRANK_USER_WEIGHTS: tuple[float, ...] = (0.0, 0.5)
LAMBDA_STEP = 2.0
# No finer step around the best: a sqrt(2) refinement was measured to chase fold noise
# (MovieLens: validation +0.0001 at lambda 424 vs 300, test NDCG@10 -0.7%;
# docs/benchmarks/quality.md).
MAX_LAMBDA_TRIALS = 6  # per user weight
EMPHASIS_DROPOUT = 0.25  # one EDLAE trial at the best weighted setting
LOWRANK_RANKS: tuple[int, ...] = (256, 512, 1024)
LOWRANK_SEARCHED = ("lambda", "dropout", "user_weight")


def tune_lowrank(
    dataset: Dataset | None,
    matrix: InteractionMatrix,
    splits: list[tuple[InteractionMatrix, sp.csr_matrix]] | None = None,
    seed: int = 42,
    k: int = 10,
    fixed: Mapping[str, Any] | None = None,
    budget_s: float = 300.0,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Choose ease-lowrank's lambda, user weight, dropout and rank on validation folds.

    1. Full rank (exact: for fewer users than items the factorization has rank <= users):
       for each of ``LOWRANK_USER_WEIGHTS`` a line search on lambda (x/÷ ``LAMBDA_STEP``
       from the default for the first weight and from the previous weight's best for the
       next, while the mean validation NDCG improves). Plain EASE (user
       weight 0, dropout 0) at its best lambda is the incumbent; a weighted or emphasized
       setting replaces it only for a gain beyond the fold noise (``pick_qualified``).
    2. Rank: the chosen setting's SVD cut to ``LOWRANK_RANKS``; the smallest rank not
       clearly worse than full rank ships (ties go to the cheaper model).

    Every trial is scored on ``splits`` (default ``validation_folds(matrix, DEFAULT_FOLDS,
    seed)``). ``fixed`` settings (``TrainConfig.lowrank_ease_params``) are not searched.
    Stops searching before a trial that would overrun ``budget_s``.
    """
    from training.models.ease import LOWRANK_DEFAULTS, EASELowRankModel

    fixed = dict(fixed or {})
    if splits is None:
        splits = validation_folds(matrix, DEFAULT_FOLDS, seed)
    n_users, n_items = matrix.matrix.shape
    # Full rank is exact and cheap on the dual (users x users) path; otherwise the largest
    # searched rank stands in for it.
    full = n_items if n_users < n_items else max(LOWRANK_RANKS)
    metric = f"ndcg@{k}"
    start = time.perf_counter()
    trials: list[dict[str, Any]] = []
    stopped, last_s = "grid", 0.0
    cache: dict[tuple[float, float, float], dict[str, Any]] = {}

    def over_budget() -> bool:
        return bool(trials) and time.perf_counter() - start + last_s > budget_s

    def score(setting: dict[str, float], ranks: Sequence[int]) -> list[dict[str, Any]]:
        nonlocal last_s
        t0 = time.perf_counter()
        top = max(ranks)
        scores: dict[int, list[float]] = {r: [] for r in ranks}
        for fit_matrix, held in splits:
            params = {**LOWRANK_DEFAULTS, **fixed, **setting, "rank": top}
            model = EASELowRankModel(**{**params, "random_state": seed}).fit(fit_matrix, dataset)
            for r in ranks:
                cut = model if r == top else model.truncated(r)
                m = evaluate_scores(cut, fit_matrix.matrix, held, k, MAX_VALIDATION_USERS, seed)
                scores[r].append(m.ndcg)
        last_s = time.perf_counter() - t0
        out = []
        for r in ranks:
            trial = {
                "params": {**setting, "rank": int(r)},
                metric: round(float(np.mean(scores[r])), 5),
                "folds": [round(v, 5) for v in scores[r]],
                "seconds": round(last_s / len(ranks), 2),
            }
            trials.append(trial)
            out.append(trial)
            if progress is not None:
                progress(
                    f"lowrank trial {len(trials)}: {metric}={trial[metric]:.4f} {trial['params']}"
                )
        return out

    def at(lam: float, weight: float, dropout: float) -> dict[str, Any]:
        key = (round(lam, 6), weight, dropout)
        if key not in cache:
            setting = {"lambda": float(lam), "dropout": float(dropout), "user_weight": weight}
            cache[key] = score(setting, [int(fixed.get("rank", full))])[0]
        return cache[key]

    lam0 = float(fixed.get("lambda", LOWRANK_DEFAULTS["lambda"]))
    weights = [float(fixed["user_weight"])] if "user_weight" in fixed else LOWRANK_USER_WEIGHTS
    dropout0 = float(fixed.get("dropout", 0.0))
    best_per_weight: dict[float, dict[str, Any]] = {}
    start_lam = lam0
    for weight in weights:
        if over_budget():
            stopped = "budget"
            break
        best = at(start_lam, weight, dropout0)
        if "lambda" not in fixed:
            for direction in (LAMBDA_STEP, 1.0 / LAMBDA_STEP):
                lam = float(best["params"]["lambda"])
                for _ in range(MAX_LAMBDA_TRIALS):
                    if over_budget():
                        stopped = "budget"
                        break
                    lam *= direction
                    trial = at(lam, weight, dropout0)
                    if trial[metric] <= best[metric]:
                        break
                    best = trial
                if best["params"]["lambda"] != start_lam:
                    break  # moved up: no need to try down
        best_per_weight[weight] = best
        # lambda's scale is the data's more than the weight's: the next weight's line
        # search starts where this one ended (fewer trials where the default is far off)
        start_lam = float(best["params"]["lambda"])
    weighted = [w for w in best_per_weight if w > 0]
    if weighted and "dropout" not in fixed and not over_budget():
        w = max(weighted, key=lambda v: best_per_weight[v][metric])
        at(float(best_per_weight[w]["params"]["lambda"]), w, EMPHASIS_DROPOUT)
    # Plain EASE (or the first weight searched) is the incumbent.
    incumbent = best_per_weight.get(weights[0]) or trials[0]
    ordered = [incumbent, *[t for t in cache.values() if t is not incumbent]]
    chosen = pick_qualified(ordered, metric)
    if "rank" not in fixed and not over_budget():
        smaller = [r for r in LOWRANK_RANKS if r < min(full, n_users)]
        if smaller:
            cut = score({k2: chosen["params"][k2] for k2 in LOWRANK_SEARCHED}, smaller)
            for trial in sorted(cut, key=lambda t: t["params"]["rank"]):
                if not beats(chosen["folds"], trial["folds"]):
                    chosen = trial  # the cheaper rank is not clearly worse
                    break
    elif "rank" not in fixed:
        stopped = "budget"
    best = chosen
    reason = (
        f"best validation {metric} ({best[metric]:.4f}) of {len(trials)} ease-lowrank trials: "
        f"lambda by line search per user weight at full rank (plain EASE "
        f"{incumbent[metric]:.4f} at lambda {incumbent['params']['lambda']:g} is the "
        f"incumbent; another setting must beat it by more than one standard error of the "
        f"paired fold differences), then the smallest rank not clearly worse; validation = "
        f"{len(splits)} folds of the training cells (seed {seed}); stopped by {stopped}"
    )
    return {
        "model": EASELowRankModel.name,
        "metric": metric,
        "best_params": {**fixed, **best["params"]},
        "best_value": best[metric],
        "best_folds": best["folds"],
        "default_value": trials[0][metric],
        "ease": {
            "lambda": incumbent["params"]["lambda"],
            metric: incumbent[metric],
            "folds": incumbent["folds"],
        },
        "full_rank": int(full),
        "trials": trials,
        "reason": reason,
        "stopped_by": stopped,
        "budget_s": budget_s,
        "elapsed_s": round(time.perf_counter() - start, 2),
        "validation": {"fraction": VALIDATION_FRACTION, "folds": len(splits), "seed": seed},
    }


# --- ease-als: ease-lowrank blended with a linear ALS read-out, and the popularity ------------
# calibration of either, on the same folds

# w_ease values tried against the incumbent w = 1 (ease-lowrank alone).
BLEND_WEIGHTS: tuple[float, ...] = (0.8, 0.7, 0.6, 0.5, 0.4, 0.3)
# Popularity calibration of the item scores, (n_i + 1) ** exponent (training.models.linear),
# tried with every weight (0 = none, the incumbent's). Both signs: a data set may want
# popular items damped or boosted; steps of 0.05-0.1, coarse next to the fold noise.
POPULARITY_EXPONENTS: tuple[float, ...] = (0.0, -0.05, -0.1, -0.15, -0.2, -0.3, 0.1)


def pick_qualified(trials: list[dict[str, Any]], metric: str) -> dict[str, Any]:
    """The incumbent (first trial) unless a challenger beats it by more than one standard
    error of the paired fold differences (``pick_winner``'s test, each challenger against
    the incumbent); among those that do, the highest mean (order does not matter)."""
    best = trials[0]
    for trial in trials[1:]:
        if beats(trial["folds"], trials[0]["folds"]) and trial[metric] > best[metric]:
            best = trial
    return best


def tune_blend(
    dataset: Dataset | None,
    splits: list[tuple[InteractionMatrix, sp.csr_matrix]],
    ease_params: Mapping[str, Any],
    als_params: Mapping[str, Any],
    seed: int = 42,
    k: int = 10,
    weights: tuple[float, ...] = BLEND_WEIGHTS,
    progress: Callable[[str], None] | None = None,
    exponents: tuple[float, ...] = POPULARITY_EXPONENTS,
) -> dict[str, Any]:
    """Choose ease-als's ``w_ease`` and the popularity calibration on validation folds
    (``splits``, the ALS search's).

    Per fold both parts are fitted once (ease-lowrank with ``ease_params``, ALS with
    ``als_params``: what would ship alone) and every (weight, exponent) pair is scored:
    both only rescale fitted embeddings. ``w_ease = 1`` with exponent 0 (ease-lowrank
    alone, as chosen) is the incumbent and ``pick_qualified`` decides; a winner at
    ``w_ease = 1`` is ease-lowrank with that calibration (the ALS part has weight 0).
    """
    from training.models.blend import EASEALSBlendModel
    from training.models.linear import binary_rows

    metric = f"ndcg@{k}"
    start = time.perf_counter()
    grid = (1.0, *[float(w) for w in weights if float(w) != 1.0])
    powers = (0.0, *[float(e) for e in exponents if float(e) != 0.0])
    scores: dict[tuple[float, float], list[float]] = {(w, e): [] for w in grid for e in powers}
    base = {"ease_params": dict(ease_params), "als_params": dict(als_params)}
    for fit_matrix, held in splits:
        blend = EASEALSBlendModel(**base, random_state=seed)
        parts = blend.fit_parts(fit_matrix, dataset)
        x = binary_rows(fit_matrix.matrix)
        normalized = blend.normalized_parts(*parts, x=x)  # the same for every weight
        for w, e in scores:
            model = EASEALSBlendModel(
                **base, w_ease=w, popularity_exponent=e, random_state=seed
            ).combine(*parts, x=x, normalized=normalized)
            m = evaluate_scores(model, fit_matrix.matrix, held, k, MAX_VALIDATION_USERS, seed)
            scores[(w, e)].append(m.ndcg)
    trials: list[dict[str, Any]] = [
        {
            "params": {"w_ease": w, "popularity_exponent": e},
            metric: round(float(np.mean(v)), 5),
            "folds": [round(x, 5) for x in v],
        }
        for (w, e), v in scores.items()
    ]
    if progress is not None:
        for t in trials:
            p = t["params"]
            progress(
                f"blend w_ease {p['w_ease']:g} popularity^{p['popularity_exponent']:g}: "
                f"{metric}={t[metric]:.4f}"
            )
    best = pick_qualified(trials, metric)
    chosen = best["params"]
    reason = (
        f"w_ease {chosen['w_ease']:g}, popularity exponent {chosen['popularity_exponent']:g}: "
        f"validation {metric} {best[metric]:.4f} vs ease-lowrank alone, uncalibrated (w_ease "
        f"1, exponent 0) {trials[0][metric]:.4f}; a challenger must beat it by more than one "
        f"standard error of the paired fold differences, the best such ships "
        f"({len(splits)} folds, seed {seed})"
    )
    return {
        "model": EASEALSBlendModel.name,
        "metric": metric,
        "best_params": {**base, **chosen},
        "best_value": best[metric],
        "best_folds": best["folds"],
        "incumbent_folds": trials[0]["folds"],
        "trials": trials,
        "reason": reason,
        "elapsed_s": round(time.perf_counter() - start, 2),
    }
