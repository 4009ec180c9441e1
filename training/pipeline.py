"""The offline job: contract files in, one published artifact bundle out.

``train(data_dir, out_root, config)`` runs, in order (each stage timed and logged):

1. load      — read + validate the contract files and fold the interaction matrix; bad
               input raises ``DataValidationError`` before anything touches ``out_root``
2. search    — optional bounded hyperparameter search for the shipped model
   select    — ALS (as tuned) vs low-rank EASE on the search's validation folds, for
               catalogs small enough for EASE's dense inverse; the better one ships
               (part of the search: skipped with tune off)
3. als|bpr|ease-lowrank|ease-als — fit the shipped collaborative model on all interactions
4. lightfm   — the hybrid model for cold-start users, when user/item features exist
5. popularity— global and per-region (shrunk toward global) popularity
6. index     — FAISS item index, recall vs exact measured
7. candidates— per-user and per-region candidate lists, batch-precomputed
8. catalog   — availability, features and artwork aligned with the id order
9. bundle    — write + fsync into a temp dir, rename, flip ``current`` (recsvc.bundle)

Everything is computed in memory before the first byte is written, so a failed run leaves
``out_root`` exactly as it was (an interrupted write leaves only a dot-named temp dir that
the next publish removes).
"""

from __future__ import annotations

import hashlib
import importlib
import json
import platform
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from recsvc.bundle import (
    ArtworkCatalog,
    Bundle,
    ColdStartArrays,
    HybridArrays,
    publish,
    write_bundle,
)
from recsvc.events import SEEN_CLASSES
from training import catalog
from training.candidates import CandidateReport, build_user_candidates, region_allowed, top_per_row
from training.cold_start import (
    ProfileSourceChoice,
    RegionSourceChoice,
    choose_profile_source,
    choose_region_source,
    hybrid_region_scores,
)
from training.config import TrainConfig
from training.data import (
    DEFAULT_EVENT_WEIGHTS,
    Dataset,
    InteractionMatrix,
    build_matrix,
    load_dataset,
)
from training.errors import TrainingError
from training.index import IndexReport, build_index
from training.models.base import RecommenderBase
from training.models.blend import EASEALSBlendModel
from training.models.ease import MAX_ITEMS as EASE_MAX
from training.models.ease import EASELowRankModel
from training.models.linear import LinearEmbeddingModel
from training.models.popularity import item_popularity, shrunk_region_popularity
from training.stages import StageLog


@dataclass(frozen=True)
class Fitted:
    """The shipped model and why it was chosen."""

    model: RecommenderBase
    selected_by: str  # "config" | "search"
    reason: str
    tuning: dict[str, Any] | None
    selection: dict[str, Any] | None = None  # ALS vs ease-lowrank on validation


# Whether a trained bundle becomes current, and the manifest's ``promotion`` record.
Gate = Callable[[Dataset, InteractionMatrix, Bundle], tuple[bool, dict[str, Any]]]


@dataclass(frozen=True)
class TrainResult:
    version: str
    path: Path  # <out_root>/<version>
    dataset: Dataset  # validated input (the CLI materializes profiles from it)
    stages: dict[str, Any]
    promoted: bool = True  # whether current now points at this version
    promotion: dict[str, Any] | None = None  # the gate's record (manifest["promotion"])


def train(
    data_dir: Path, out_root: Path, config: TrainConfig | None = None, *, verbose: bool = True
) -> str:
    """Train everything and publish a bundle under ``out_root``; returns the version name."""
    return run_training(data_dir, out_root, config, verbose=verbose).version


def run_training(
    data_dir: Path,
    out_root: Path,
    config: TrainConfig | None = None,
    *,
    verbose: bool = True,
    load: Callable[[], Dataset] | None = None,
    gate: Gate | None = None,
) -> TrainResult:
    """:func:`train`, also returning the dataset and the per-stage timings.

    ``load`` replaces reading ``data_dir`` (several folders merged: ``training.events``);
    ``gate`` decides whether the new version becomes current (``training.gate``) and its
    record goes into the manifest as ``promotion``."""
    config = config or TrainConfig()
    log = StageLog(verbose=verbose)
    with log.stage("load", str(data_dir)) as facts:
        dataset = load() if load is not None else load_dataset(Path(data_dir), config.event_weights)
        matrix = build_matrix(dataset, kinds=True)
        _check_trainable(matrix, data_dir)
        facts.update(
            users=len(matrix.user_ids), items=len(matrix.item_ids), nnz=int(matrix.matrix.nnz)
        )
    bundle = build_bundle(dataset, matrix, config, log)
    promoted, promotion = True, None
    if gate is not None:
        with log.stage("gate", "candidate vs current on the newest interactions") as facts:
            promoted, promotion = gate(dataset, matrix, bundle)
            facts["decision"] = promotion.get("decision")
        bundle.manifest["promotion"] = promotion
    with log.stage("bundle", str(out_root)) as facts:
        version = publish(
            Path(out_root),
            lambda tmp, version: _write(tmp, version, bundle, log),
            fingerprint=bundle.manifest["fingerprint"],
            make_current=promoted,
        )
        facts["version"] = version
    flip = f"current -> {version}" if promoted else "current unchanged"
    log.log(f"published {Path(out_root) / version} ({flip})")
    return TrainResult(
        version=version,
        path=Path(out_root) / version,
        dataset=dataset,
        stages=log.summary(),
        promoted=promoted,
        promotion=promotion,
    )


def build_bundle(
    dataset: Dataset,
    matrix: InteractionMatrix,
    config: TrainConfig,
    log: StageLog | None = None,
) -> Bundle:
    """Every model and table of a bundle, in memory (``path``/``version`` not yet set)."""
    log = log or StageLog(verbose=False)
    fitted = _fit_shipped(dataset, matrix, config, log)
    hybrid, hybrid_info = _fit_hybrid(dataset, matrix, config, log)
    return _assemble(dataset, matrix, config, fitted, hybrid, hybrid_info, log)


def _check_trainable(matrix: InteractionMatrix, data_dir: Path) -> None:
    if matrix.matrix.nnz == 0:
        raise TrainingError(f"{data_dir}: no interactions with a positive weight to learn from")
    if len(matrix.item_ids) < 2:
        raise TrainingError(f"{data_dir}: need at least 2 items to recommend, found 1")


def model_params(config: TrainConfig, tuned: dict[str, Any] | None = None) -> dict[str, Any]:
    """Parameters of the shipped model: tuned values, then explicit settings on top."""
    params: dict[str, Any] = dict(tuned or {})
    params["random_state"] = config.seed
    params["num_threads"] = config.threads
    if config.factors is not None:
        params["factors"] = config.factors
    if config.iterations is not None:
        params["iterations"] = config.iterations
    params.update(config.model_params)
    return params


def fit_shipped(
    dataset: Dataset,
    matrix: InteractionMatrix,
    config: TrainConfig,
    log: StageLog | None = None,
) -> Fitted:
    """The shipped collaborative model exactly as ``train`` chooses and fits it (search,
    selection on validation folds, fit on ``matrix``); the quality benchmark calls this."""
    return _fit_shipped(dataset, matrix, config, log or StageLog(verbose=False))


def _fit_shipped(
    dataset: Dataset, matrix: InteractionMatrix, config: TrainConfig, log: StageLog
) -> Fitted:
    tuning: dict[str, Any] | None = None
    selected_by, reason = "config", "search disabled (--no-tune): configured/default parameters"
    tuned: dict[str, Any] | None = None
    if config.tune and config.model == "als":
        with log.stage("search", f"budget {config.tune_budget_s:.0f}s") as facts:
            tuned, tuning = _search(dataset, matrix, config, log)
            facts["trials"] = len(tuning.get("trials", [])) if tuning else 0
        if tuned is not None:
            selected_by = "search"
            reason = str((tuning or {}).get("reason") or "best validation NDCG@10 of the search")
    elif config.tune:
        reason = f"search only covers ALS; {config.model} uses configured/default parameters"
    selection: dict[str, Any] | None = None
    if config.model == EASELowRankModel.name:
        return Fitted(_fit_lowrank(config, matrix, dataset, log), selected_by, reason, None)
    if config.model == EASEALSBlendModel.name:
        # ALS parameters come from factors/iterations/model_params, ease-lowrank's from
        # lowrank_ease_params; the blend weight is BLEND_DEFAULTS' (validated on MovieLens).
        params = {"ease_params": lowrank_params(config), "als_params": model_params(config)}
        blend = _fit_blend(matrix, dataset, log, {**params, "random_state": config.seed})
        return Fitted(blend, selected_by, reason, None)
    if _lowrank_eligible(config, matrix):
        with log.stage("select", "als vs ease-lowrank on validation folds") as facts:
            selection = compare_lowrank(dataset, matrix, config, tuned, tuning, log)
            facts.update(winner=selection["winner"], reason=selection["reason"])
        if selection["winner"] == EASELowRankModel.name:
            chosen = selection[EASELowRankModel.name]["params"]
            lowrank = _fit_lowrank(config, matrix, dataset, log, chosen)
            return Fitted(lowrank, "validation", selection["reason"], tuning, selection)
        if selection["winner"] == EASEALSBlendModel.name:
            blend = _fit_blend(matrix, dataset, log, selection[EASEALSBlendModel.name]["params"])
            return Fitted(blend, "validation", selection["reason"], tuning, selection)
        reason = f"{reason}; {selection['reason']}"
    with log.stage(config.model) as facts:
        model = _fit_implicit(config.model, model_params(config, tuned), matrix, dataset)
        facts["factors"] = int(model.params.get("factors", 0))
    return Fitted(model, selected_by, reason, tuning, selection)


def _fit_lowrank(
    config: TrainConfig,
    matrix: InteractionMatrix,
    dataset: Dataset,
    log: StageLog,
    chosen: dict[str, Any] | None = None,
) -> EASELowRankModel:
    with log.stage(EASELowRankModel.name) as facts:
        model = EASELowRankModel(**lowrank_params(config, chosen)).fit(matrix, dataset)
        factors = model.item_factors
        facts["rank"] = 0 if factors is None else int(factors.shape[1])
    return model


def _fit_blend(
    matrix: InteractionMatrix, dataset: Dataset, log: StageLog, params: dict[str, Any]
) -> EASEALSBlendModel:
    with log.stage(EASEALSBlendModel.name) as facts:
        importlib.import_module("implicit.cpu.als")
        model = EASEALSBlendModel(**params).fit(matrix, dataset)
        factors = model.item_factors
        facts["dims"] = 0 if factors is None else int(factors.shape[1])
    return model


def linear_projection(model: RecommenderBase) -> np.ndarray | None:
    """[I, d] user projection of a linear model (user vector = binary seen row @ it)."""
    if isinstance(model, LinearEmbeddingModel):
        return model.projection
    return None


def _fit_implicit(
    name: str, params: dict[str, Any], matrix: InteractionMatrix, dataset: Dataset | None
) -> RecommenderBase:
    model = _shipped_class(name)(**params)
    # implicit warns unless BLAS is single-threaded (it parallelizes itself); the limit
    # only reaches libraries already loaded, so load implicit's first.
    importlib.import_module(f"implicit.cpu.{name}")
    with threadpool_limits(1, "blas"):
        model.fit(matrix, dataset)
    return model


def lowrank_params(config: TrainConfig, chosen: dict[str, Any] | None = None) -> dict[str, Any]:
    """Parameters of ease-lowrank: validated choice (lambda, dropout, user weight, rank) or
    the defaults (``training.models.ease.LOWRANK_DEFAULTS``), explicit settings on top."""
    return {"random_state": config.seed, **(chosen or {}), **config.lowrank_ease_params}


def _lowrank_eligible(config: TrainConfig, matrix: InteractionMatrix) -> bool:
    # Part of the search: --no-tune (configured parameters, as the scale benchmarks and
    # tests use) ships the configured model without fitting candidates on folds.
    eligible = config.lowrank_ease and config.tune and config.model == "als"
    return eligible and len(matrix.item_ids) <= EASE_MAX


def compare_lowrank(
    dataset: Dataset,
    matrix: InteractionMatrix,
    config: TrainConfig,
    tuned: dict[str, Any] | None,
    tuning: dict[str, Any] | None,
    log: StageLog,
) -> dict[str, Any]:
    """Validation NDCG@10 of ALS (as it would ship) and of ease-lowrank (lambda, dropout,
    user weight and rank chosen by ``training.tuning.tune_lowrank``) on the same folds of
    the training cells the search used; the higher mean wins (ties keep ALS). When
    ease-lowrank wins, its blend with ALS (ease-als) and a popularity calibration of the
    item scores (``training.tuning.tune_blend``: weight x exponent) are scored on the same
    folds and replace it only for a gain beyond the fold noise (at weight 1 a calibrated
    ease-lowrank ships alone)."""
    from training.evaluation import evaluate_scores
    from training.tuning import (
        DEFAULT_FOLDS,
        MAX_VALIDATION_USERS,
        POPULARITY_EXPONENTS,
        VALIDATION_FRACTION,
        tune_blend,
        tune_lowrank,
        validation_folds,
    )

    folds = int(((tuning or {}).get("validation") or {}).get("folds", DEFAULT_FOLDS))
    splits = validation_folds(matrix, folds, config.seed)
    k = 10
    als = _search_folds(config, tuned, tuning)
    if als is None:
        als = []
        for fit, held in splits:
            model = _fit_implicit("als", model_params(config, tuned), fit, dataset)
            als.append(
                evaluate_scores(model, fit.matrix, held, k, MAX_VALIDATION_USERS, config.seed).ndcg
            )
    grid = tune_lowrank(
        dataset,
        matrix,
        splits,
        seed=config.seed,
        k=k,
        fixed=config.lowrank_ease_params,
        budget_s=config.tune_budget_s,
        progress=lambda line: log.log(f"  select {line}"),
    )
    ease = [float(v) for v in grid["best_folds"]]
    als_mean, ease_mean = float(np.mean(als)), float(np.mean(ease))
    winner = EASELowRankModel.name if ease_mean > als_mean else "als"
    chosen = grid["best_params"]
    blend: dict[str, Any] = {}
    calibration = ""  # why ease-lowrank ships with a popularity calibration, when it does
    first, first_mean = winner, ease_mean  # ALS vs ease-lowrank, before blend/calibration
    if winner == EASELowRankModel.name:
        # a configured calibration is ease-lowrank's own: not searched on top of it
        fixed = "popularity_exponent" in config.lowrank_ease_params
        exponents = (0.0,) if fixed else POPULARITY_EXPONENTS
        found = tune_blend(
            dataset,
            splits,
            lowrank_params(config, chosen),
            model_params(config, tuned),
            seed=config.seed,
            k=k,
            progress=lambda line: log.log(f"  select {line}"),
            exponents=exponents,
        )
        blend = {
            EASEALSBlendModel.name: {
                "mean": found["best_value"],
                "folds": found["best_folds"],
                "params": _jsonable({**found["best_params"], "random_state": config.seed}),
                "choice": found["reason"],
                "trials": found["trials"],
            }
        }
        exponent = float(found["best_params"]["popularity_exponent"])
        if found["best_params"]["w_ease"] < 1.0:
            winner = EASEALSBlendModel.name
        elif exponent != 0.0:
            # ease-lowrank alone, calibrated: no ALS part (its weight is 0) to fit and ship
            chosen = {**chosen, "popularity_exponent": exponent}
            ease = [float(v) for v in found["best_folds"]]
            ease_mean = float(np.mean(ease))
            calibration = f"; popularity calibration: {found['reason']}"
    return {
        "metric": f"ndcg@{k}",
        "winner": winner,
        **blend,
        "als": {"mean": round(als_mean, 5), "folds": [round(float(v), 5) for v in als]},
        EASELowRankModel.name: {
            "mean": round(ease_mean, 5),
            "folds": [round(float(v), 5) for v in ease],
            "params": _jsonable(lowrank_params(config, chosen)),
            "choice": grid["reason"],
            "trials": grid["trials"],
        },
        # plain EASE (user weight 0, dropout 0, full rank) at its validation-best lambda:
        # the bar the shipped model is measured against
        "ease": _jsonable(grid["ease"]),
        "reason": (
            f"{first} has the higher validation ndcg@{k} (ease-lowrank {first_mean:.4f} with "
            f"lambda {chosen['lambda']:g}, dropout {chosen['dropout']:g}, user weight "
            f"{chosen['user_weight']:g}, rank {chosen['rank']} vs als {als_mean:.4f}, mean "
            f"over the same {folds} folds of "
            f"random {VALIDATION_FRACTION:.0%} of the training cells, seed {config.seed})"
            + (f"; blend with als: {blend[winner]['choice']}" if winner in blend else "")
            + calibration
        ),
        "validation": {"fraction": VALIDATION_FRACTION, "folds": folds, "seed": config.seed},
    }


def _search_folds(
    config: TrainConfig, tuned: dict[str, Any] | None, tuning: dict[str, Any] | None
) -> list[float] | None:
    """The search's fold scores of the ALS that will ship, when nothing overrides it."""
    if not tuning or tuned is None or config.factors or config.iterations or config.model_params:
        return None
    for trial in tuning.get("trials", []):
        if trial.get("params") == tuning.get("best_params") and trial.get("folds"):
            return [float(v) for v in trial["folds"]]
    return None


def _shipped_class(name: str) -> type[RecommenderBase]:
    from training.models.als import ALSModel, BPRModel

    return ALSModel if name == "als" else BPRModel


def _search(
    dataset: Dataset, matrix: InteractionMatrix, config: TrainConfig, log: StageLog
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The models area's bounded ALS search; (best params, JSON summary)."""
    from training.tuning import tune_als

    summary = tune_als(
        dataset,
        matrix,
        budget_s=config.tune_budget_s,
        seed=config.seed,
        progress=lambda line: log.log(f"  search {line}"),
    )
    return dict(summary["best_params"]), summary


def _fit_hybrid(
    dataset: Dataset, matrix: InteractionMatrix, config: TrainConfig, log: StageLog
) -> tuple[HybridArrays | None, dict[str, Any] | None]:
    if not config.hybrid:
        return None, {"skipped": "disabled by config"}
    has_user_features = bool(catalog.feature_columns(dataset.users, "user_id", ()))
    has_item_features = bool(catalog.feature_columns(dataset.items, "item_id", ("regions",)))
    if not (has_user_features or has_item_features):
        return None, {"skipped": "no user or item feature columns"}
    from training.models.hybrid import LightFMHybrid

    with log.stage("lightfm") as facts:
        params = {"random_state": config.seed, "num_threads": config.threads}
        model = LightFMHybrid(**{**params, **config.hybrid_params})
        model.fit(matrix, dataset)
        arrays = model.to_arrays(matrix.item_ids, dataset.items)
        facts["features"] = len(arrays.user_feature_names)
        facts["interactions"] = model.fitted_interactions
    info = {"params": _jsonable(model.params), "fitted_interactions": model.fitted_interactions}
    return arrays, info


class ItemSide(NamedTuple):
    """What a bundle ships besides its factors and candidate lists, built the same way by
    every engine: popularity (global and per region), the FAISS index over the item
    factors, and the catalog arrays."""

    regions: np.ndarray
    user_region: np.ndarray
    popularity: np.ndarray
    region_pop: np.ndarray
    index: Any
    index_report: IndexReport
    availability: sp.csr_matrix
    everywhere: np.ndarray
    item_features: dict[str, np.ndarray]
    user_features: dict[str, np.ndarray]
    artwork: ArtworkCatalog | None


def item_side(
    dataset: Dataset,
    seen: sp.csr_matrix,
    user_ids: np.ndarray,
    item_ids: np.ndarray,
    user_factors: np.ndarray,
    item_factors: np.ndarray,
    config: TrainConfig,
    log: StageLog,
) -> ItemSide:
    """The popularity, index and catalog stages of a train (local or Spark)."""
    with log.stage("popularity"):
        regions = catalog.region_names(dataset)
        user_region = catalog.user_region_index(dataset, user_ids, regions)
        popularity = item_popularity(seen).astype(np.float32)
        region_pop = shrunk_region_popularity(
            seen, user_region, len(regions), config.region_prior_strength
        ).astype(np.float32)
        region_pop = region_pop.reshape(len(regions), len(item_ids))
    with log.stage("index") as facts:
        index, report = build_index(
            item_factors,
            threshold=config.index_threshold,
            recall_target=config.index_recall_target,
            user_factors=user_factors,
            seed=config.seed,
            threads=config.faiss_threads,
        )
        facts.update(kind=report.kind, recall_at_10=round(report.recall_at_10, 4))
    with log.stage("catalog"):
        availability, everywhere = catalog.item_availability(dataset, item_ids, regions)
        item_features = catalog.item_features(dataset, item_ids)
        user_features = catalog.user_features(dataset, user_ids)
        artwork = catalog.artwork_catalog(dataset, item_ids)
    return ItemSide(
        regions, user_region, popularity, region_pop, index, report,
        availability, everywhere, item_features, user_features, artwork,
    )  # fmt: skip


def _assemble(
    dataset: Dataset,
    matrix: InteractionMatrix,
    config: TrainConfig,
    fitted: Fitted,
    hybrid: HybridArrays | None,
    hybrid_info: dict[str, Any] | None,
    log: StageLog,
) -> Bundle:
    model = fitted.model
    user_factors, item_factors = model.user_factors, model.item_factors
    if user_factors is None or item_factors is None:
        raise TrainingError(f"model '{model.name}' has no embeddings to ship")
    user_ids, item_ids = matrix.user_ids.astype(np.str_), matrix.item_ids.astype(np.str_)
    user_factors = _full_rows(user_factors, len(user_ids), "user", log)
    item_factors = _full_rows(item_factors, len(item_ids), "item", log)
    seen = sp.csr_matrix(matrix.matrix, dtype=np.float32)

    side = item_side(dataset, seen, user_ids, item_ids, user_factors, item_factors, config, log)

    with log.stage("candidates", f"{config.candidates} per user") as facts:
        candidates, cand_report = build_user_candidates(
            user_factors,
            item_factors,
            seen,
            count=config.candidates,
            exact_max_cells=config.candidate_exact_max_cells,
            recall_target=config.candidate_recall_target,
            seed=config.seed,
            threads=config.faiss_threads,
            progress=log.verbose,
        )
        facts.update(method=cand_report.method, recall=cand_report.recall, nnz=int(candidates.nnz))
    with log.stage("region_lists") as facts:
        allowed = region_allowed(side.availability, side.everywhere)
        choice = _region_source(
            dataset, matrix, side.regions, side.user_region, allowed, config, hybrid
        )
        region_scores = side.region_pop
        if choice.source == "lightfm" and hybrid is not None:
            region_scores = hybrid_region_scores(hybrid, side.regions)
        region_cands = top_per_row(region_scores, count=config.region_candidates, allowed=allowed)
        facts.update(source=choice.source)

    with log.stage("cold_start", "profile source on held-out users") as facts:
        profile = _profile_source(dataset, matrix, config, fitted, hybrid, log)
        facts.update(source=profile.arrays.source)

    manifest = _manifest(
        dataset, matrix, config, fitted, hybrid_info, side.index_report.to_dict(), log
    )
    manifest["candidates"] = _candidates_info(config, cand_report, choice)
    manifest["cold_start"] = profile.to_dict()
    return engine_bundle(
        side,
        manifest=manifest,
        user_ids=user_ids,
        item_ids=item_ids,
        user_factors=user_factors,
        item_factors=item_factors,
        seen=seen,
        seen_by=matrix.seen_by,
        candidates=candidates,
        region_candidates=region_cands,
        cold_start=profile.arrays,
        hybrid=hybrid,
        user_projection=linear_projection(model),
    )


def engine_bundle(
    side: ItemSide,
    *,
    manifest: dict[str, Any],
    user_ids: np.ndarray,
    item_ids: np.ndarray,
    user_factors: np.ndarray,
    item_factors: np.ndarray,
    seen: sp.csr_matrix,
    seen_by: np.ndarray | None,
    candidates: sp.csr_matrix,
    region_candidates: sp.csr_matrix,
    cold_start: ColdStartArrays,
    hybrid: HybridArrays | None = None,
    user_projection: np.ndarray | None = None,
) -> Bundle:
    """The bundle every engine publishes, from what it computed and :func:`item_side`."""
    return Bundle(
        path=Path("."),
        version="",
        manifest=manifest,
        user_ids=user_ids,
        item_ids=item_ids,
        user_index={},
        item_index={},
        user_factors=user_factors,
        item_factors=item_factors,
        index=side.index,
        user_items=seen,
        popularity=side.popularity,
        region_names=side.regions,
        region_popularity=side.region_pop,
        item_availability=side.availability,
        available_everywhere=side.everywhere,
        item_features=side.item_features,
        user_features=side.user_features,
        candidates=candidates,
        region_candidates=region_candidates,
        hybrid=hybrid,
        artwork=side.artwork,
        item_gram=item_factors.astype(np.float64).T @ item_factors.astype(np.float64),
        user_projection=user_projection,
        cold_start=cold_start,
        # Which kinds of event made each training cell: the seen setting applies to them
        # (a matrix built without kinds ships none, and all of its history hides).
        user_items_seen_by=seen_by,
        user_items_seen_classes=SEEN_CLASSES if seen_by is not None else (),
    )


def cold_start_source(
    dataset: Dataset,
    matrix: InteractionMatrix,
    config: TrainConfig,
    fitted: Fitted,
    log: StageLog | None = None,
) -> tuple[ProfileSourceChoice, HybridArrays | None]:
    """The hybrid fit and the profile cold-start choice exactly as ``train`` makes them
    (the quality benchmark calls this)."""
    log = log or StageLog(verbose=False)
    hybrid, _ = _fit_hybrid(dataset, matrix, config, log)
    return _profile_source(dataset, matrix, config, fitted, hybrid, log), hybrid


def _profile_source(
    dataset: Dataset,
    matrix: InteractionMatrix,
    config: TrainConfig,
    fitted: Fitted,
    hybrid: HybridArrays | None,
    log: StageLog,
) -> ProfileSourceChoice:
    """The cold-start source for users known by profile only (``choose_profile_source``);
    above ``region_validation_max_nnz`` interactions the candidates that need a refit are
    skipped (``counted_profile_source``)."""
    if matrix.matrix.nnz > config.region_validation_max_nnz:
        return counted_profile_source(
            dataset,
            matrix,
            config,
            log,
            f"{matrix.matrix.nnz:,} interactions > {config.region_validation_max_nnz:,}",
        )
    shipped = fitted.model

    def embedding_fit(part: InteractionMatrix) -> tuple[np.ndarray, np.ndarray]:
        model = type(shipped)(**shipped.params)
        with threadpool_limits(1, "blas") if shipped.name in ("als", "bpr") else _nothing():
            model.fit(part, dataset)
        if model.user_factors is None or model.item_factors is None:
            raise TrainingError(f"model '{model.name}' has no embeddings")
        return model.user_factors, model.item_factors

    params = {"random_state": config.seed, "num_threads": config.threads, **config.hybrid_params}
    return choose_profile_source(
        dataset,
        matrix,
        embedding_fit=embedding_fit,
        hybrid_params=params if hybrid is not None else None,
        seed=config.seed,
        progress=lambda line: log.log(f"  {line}"),
    )


def counted_profile_source(
    dataset: Dataset, matrix: InteractionMatrix, config: TrainConfig, log: StageLog, why: str
) -> ProfileSourceChoice:
    """The profile cold-start source chosen among the candidates that are counts (global
    and segment popularity) on held-out users; the embedding and LightFM candidates, which
    each need a refit, are not tried (``why`` says why: size, engine)."""
    choice = choose_profile_source(
        dataset, matrix, seed=config.seed, progress=lambda line: log.log(f"  {line}")
    )
    return replace(choice, reason=f"{choice.reason}; embedding and LightFM not tried: {why}")


def _nothing() -> Any:
    import contextlib

    return contextlib.nullcontext()


def _region_source(
    dataset: Dataset,
    matrix: InteractionMatrix,
    regions: np.ndarray,
    user_region: np.ndarray,
    allowed: np.ndarray,
    config: TrainConfig,
    hybrid: HybridArrays | None,
) -> RegionSourceChoice:
    if config.region_source != "auto":
        return RegionSourceChoice(config.region_source, "set by config")
    if hybrid is None or len(regions) == 0:
        return RegionSourceChoice("region_popularity", "no hybrid model or no regions")
    return choose_region_source(
        dataset,
        matrix,
        regions,
        user_region,
        allowed,
        {"random_state": config.seed, "num_threads": config.threads, **config.hybrid_params},
        prior_strength=config.region_prior_strength,
        max_nnz=config.region_validation_max_nnz,
        seed=config.seed,
    )


def _candidates_info(
    config: TrainConfig, report: CandidateReport, choice: RegionSourceChoice
) -> dict[str, Any]:
    return {
        "per_user": config.candidates,
        "per_region": config.region_candidates,
        "user_lists": report.to_dict(),
        "region_source": choice.source,
        "region_source_choice": choice.to_dict(),
        "order": "descending score within each row; seen items removed",
    }


def _validation_metrics(tuning: dict[str, Any] | None) -> dict[str, Any]:
    """What the search measured on its validation split (empty without a search)."""
    if not tuning:
        return {}
    return {
        "validation": {
            tuning["metric"]: tuning["best_value"],
            f"{tuning['metric']}_defaults": tuning["default_value"],
            "split": tuning.get("validation"),
        }
    }


def _full_rows(factors: np.ndarray, n: int, what: str, log: StageLog) -> np.ndarray:
    """Factors for all n rows. A model may drop trailing all-zero columns of the matrix;
    ALS's solution for a row with no interactions is the zero vector, so pad with zeros."""
    factors = np.ascontiguousarray(factors, dtype=np.float32)
    if factors.shape[0] == n:
        return factors
    if factors.shape[0] > n:
        raise TrainingError(f"model returned {factors.shape[0]} {what} factors for {n} {what}s")
    log.log(f"warning: model returned {factors.shape[0]} {what} factors for {n}; zero-padded")
    pad = np.zeros((n - factors.shape[0], factors.shape[1]), dtype=np.float32)
    return np.vstack([factors, pad])


def _manifest(
    dataset: Dataset,
    matrix: InteractionMatrix,
    config: TrainConfig,
    fitted: Fitted,
    hybrid_info: dict[str, Any] | None,
    index_report: dict[str, Any],
    log: StageLog,
) -> dict[str, Any]:
    model = fitted.model
    params = _jsonable(model.params)
    weights = {**DEFAULT_EVENT_WEIGHTS, **(config.event_weights or {})}
    fingerprint = hashlib.sha256(
        (dataset.fingerprint + json.dumps(config.model_dump(), sort_keys=True)).encode()
    ).hexdigest()
    fold_in: dict[str, Any] = {"kind": model.name}
    if model.name == "als":
        # user_items holds the folded raw weights; ALS was fit on
        # confidence = alpha * weighting(user_items) (implicit adds the 1).
        fold_in.update(
            regularization=float(model.params["regularization"]),
            alpha=float(model.params["alpha"]),
            weighting=str(model.params.get("weighting", "none")),
            bm25_k1=float(model.params.get("bm25_k1", 0.0)),
            bm25_b=float(model.params.get("bm25_b", 0.0)),
        )
    elif linear_projection(model) is not None:
        # user vector = binary seen row @ bundle.user_projection: a new item adds its row.
        fold_in.update(method="linear", binary=True)
    return {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "data_fingerprint": dataset.fingerprint,
        "fingerprint": fingerprint,
        "data_files": dict(dataset.files),
        "config": config.model_dump(),
        "params": {"event_weights": weights},
        "model": {
            "name": model.name,
            "params": params,
            "selected_by": fitted.selected_by,
            "reason": fitted.reason,
            "fold_in": fold_in,
            "selection": _jsonable(fitted.selection),
        },
        "tuning": _jsonable(fitted.tuning),
        "metrics": {
            **_validation_metrics(fitted.tuning),
            **({"model_selection": _jsonable(fitted.selection)} if fitted.selection else {}),
        },
        "hybrid": hybrid_info,
        "index": index_report,
        "popularity": {"prior_strength": config.region_prior_strength},
        "training_data": {
            "users": len(matrix.user_ids),
            "items": len(matrix.item_ids),
            "interactions": len(dataset.interactions),
            "nonzero_cells": int(matrix.matrix.nnz),
        },
        "libraries": library_versions(),
    }


def _write(tmp: Path, version: str, bundle: Bundle, log: StageLog) -> None:
    """build_fn of publish: arrays, then the manifest with the stage timings so far."""
    summary = log.summary()
    manifest = {**bundle.manifest, **summary}
    write_bundle(tmp, replace(bundle, version=version, manifest=manifest))


def library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for dist in ("recsvc", "numpy", "scipy", "pandas", "implicit", "faiss-cpu", "lightfm-next"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            continue
    return out


def _jsonable(value: Any) -> Any:
    """Round-trip through JSON so numpy scalars and tuples become plain JSON types."""
    if value is None:
        return None
    return json.loads(json.dumps(value, default=_default))


def _default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)
