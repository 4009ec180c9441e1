"""``recsvc train --engine spark``: the contract on Spark in, the same bundle out.

Stages (timed in the manifest like the local job's):

1. session    — start/join Spark (local[2] by default, a standalone master, YARN, k8s)
2. load       — read + validate on the executors (:mod:`training.spark.data`), fold cells
3. validation — ALS fit on a random 80% of each user's cells; NDCG@10 of the held-out 20%
                computed on the executors (recommend top 10 unseen, the local metric code)
4. als        — Spark MLlib implicit ALS on all cells, factors collected in id order
5. popularity — global and regional (shrunk) popularity, the local functions
6. index      — FAISS item index on the driver (the item side is small)
7. catalog    — availability, features, artwork (the local functions)
8. candidates — per-user top-C unseen items on the executors (the local exact search per
                partition, item factors broadcast)
9. region_lists, bundle — as the local job; published through :func:`recsvc.bundle.publish`

Confidence semantics match implicit's ALS: a cell of folded weight ``w`` gets confidence
``alpha * w`` and preference 1, every other cell confidence 1 and preference 0. MLlib
weights a rating ``r`` as ``1 + alpha' * r``, so it is given ``r = alpha * w - 1`` with
``alpha' = 1``. MLlib scales the L2 penalty of each row by its number of observed cells;
:func:`reg_param` maps implicit's ``regularization`` onto it (recorded in the manifest).

Not on Spark: the hyperparameter search and the LightFM hybrid are skipped (the manifest
notes it); EASE, BPR and bm25/tfidf weighting are refused rather than silently replaced.
Cold start: regions by regional popularity; users known by profile only by the source
chosen on held-out users among the counted candidates (global or segment popularity,
``training.pipeline.counted_profile_source``, on the driver's folded cells); the embedding
and LightFM candidates need refits and are not tried.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import scipy.sparse as sp

from recsvc.bundle import Bundle, publish, write_bundle
from recsvc.export.spark import (
    SparkSettings,
    default_partitions,
    open_spark,
    to_driver,
    uri_of,
)
from training.candidates import region_allowed, top_per_row, user_candidates
from training.config import TrainConfig
from training.data import InteractionMatrix, resolve_event_weights
from training.errors import TrainingError
from training.metrics import per_user_ndcg
from training.models.als import ALS_DEFAULTS
from training.pipeline import (
    counted_profile_source,
    engine_bundle,
    item_side,
    library_versions,
)
from training.spark.data import SparkContract, read_contract, universe
from training.stages import StageLog

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

VALIDATION_FRACTION = 0.2
VALIDATION_K = 10


@dataclass(frozen=True)
class SparkTrainResult:
    version: str
    path: Path
    stages: dict[str, Any]
    manifest: dict[str, Any]


def als_params(config: TrainConfig) -> dict[str, Any]:
    """The local ALS parameters of ``config`` (defaults, then explicit settings)."""
    unsupported = []
    if config.model != "als":
        unsupported.append(f"--model {config.model}")
    params = {**ALS_DEFAULTS, **config.model_params}
    if config.factors is not None:
        params["factors"] = config.factors
    if config.iterations is not None:
        params["iterations"] = config.iterations
    if params.get("weighting", "none") != "none":
        unsupported.append(f"weighting {params['weighting']}")
    if unsupported:
        raise TrainingError(
            "--engine spark trains implicit ALS only (weighting none); "
            f"not {', '.join(unsupported)}"
        )
    return params


def reg_param(regularization: float, nnz: int, n_users: int, n_items: int) -> float:
    """MLlib's ``regParam`` for implicit's ``regularization``: MLlib multiplies it by each
    row's observed cells, so divide by the geometric mean of the mean user and mean item
    counts (a typical user and item are then penalized like the local ALS's; the user-side
    mean alone over-regularized items: held-out NDCG@10 0.168 vs 0.184 local, this rule
    0.185, tests/spark)."""
    mean_user = nnz / max(n_users, 1)
    mean_item = nnz / max(n_items, 1)
    return regularization / max(float(np.sqrt(mean_user * mean_item)), 1.0)


def train_spark(
    data: str | Path,
    out_root: Path,
    config: TrainConfig | None = None,
    settings: SparkSettings | None = None,
    *,
    partitions: int | None = None,
    validate: bool = True,
    verbose: bool = True,
) -> SparkTrainResult:
    """Train on Spark and publish a bundle under ``out_root``."""
    config = config or TrainConfig(tune=False, hybrid=False)
    params = als_params(config)
    settings = settings or SparkSettings()
    log = StageLog(verbose=verbose, prefix="train spark")
    notes = []
    if config.tune:
        notes.append("hyperparameter search skipped (not on spark): configured ALS parameters")
    if config.hybrid:
        notes.append(
            "LightFM hybrid skipped (not on spark): cold start by regional and segment popularity"
        )
    for note in notes:
        log.log(note)
    with log.stage("session") as facts:
        spark = open_spark(replace(settings, progress=settings.progress and verbose))
        parts = partitions or default_partitions(spark)
        facts.update(master=spark.sparkContext.master, version=spark.version, partitions=parts)
    uri = uri_of(data)
    with log.stage("load", uri) as facts:
        contract = read_contract(spark, uri, config.event_weights)
        user_ids, item_ids = universe(contract)
        cells = _indexed_cells(spark, contract, user_ids, item_ids, parts)
        seen, seen_by = _seen_matrix(cells, len(user_ids), len(item_ids))
        if seen.nnz == 0:
            raise TrainingError(f"{uri}: no interactions with a positive weight to learn from")
        if len(item_ids) < 2:
            raise TrainingError(f"{uri}: need at least 2 items to recommend, found 1")
        facts.update(users=len(user_ids), items=len(item_ids), nnz=int(seen.nnz))
    positive = cells.filter("weight > 0")
    reg = reg_param(float(params["regularization"]), seen.nnz, len(user_ids), len(item_ids))
    validation: dict[str, Any] = {}
    if validate:
        with log.stage("validation", f"{VALIDATION_FRACTION:.0%} held out") as facts:
            validation = _validate(spark, positive, params, reg, len(item_ids), parts, config)
            facts.update(ndcg_at_10=validation.get(f"ndcg@{VALIDATION_K}"))
    with log.stage("als") as facts:
        model = _fit(positive, params, reg, parts, config.seed)
        user_factors = _factors(model.userFactors, len(user_ids), int(params["factors"]))
        item_factors = _factors(model.itemFactors, len(item_ids), int(params["factors"]))
        facts.update(factors=int(params["factors"]), reg_param=round(reg, 6))
    bundle = _assemble(
        spark,
        contract,
        config,
        params,
        reg,
        user_ids,
        item_ids,
        seen,
        seen_by,
        user_factors,
        item_factors,
        positive,
        parts,
        log,
    )
    manifest = dict(bundle.manifest)
    manifest["metrics"] = {"validation": validation} if validation else {}
    manifest["engine"]["notes"] = notes
    bundle = replace(bundle, manifest=manifest)
    cells.unpersist()
    with log.stage("bundle", str(out_root)) as facts:
        version = publish(
            Path(out_root),
            lambda tmp, v: _write(tmp, v, bundle, log),
            fingerprint=manifest["fingerprint"],
        )
        facts["version"] = version
    log.log(f"published {Path(out_root) / version} (current -> {version})")
    written = json.loads((Path(out_root) / version / "manifest.json").read_text())
    return SparkTrainResult(version, Path(out_root) / version, log.summary(), written)


def _write(tmp: Path, version: str, bundle: Bundle, log: StageLog) -> None:
    write_bundle(
        tmp, replace(bundle, version=version, manifest={**bundle.manifest, **log.summary()})
    )


def _indexed_cells(
    spark: SparkSession,
    contract: SparkContract,
    user_ids: np.ndarray,
    item_ids: np.ndarray,
    parts: int,
) -> DataFrame:
    """Cells as (u, i, weight) row/column numbers of the bundle's id order, cached."""
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    def id_frame(name: str, ids: np.ndarray, index: str) -> DataFrame:
        table = pa.table(
            {name: pa.array(ids.tolist(), pa.string()), index: pa.array(np.arange(len(ids)))}
        )
        return spark.createDataFrame(table.to_pandas())

    users = id_frame("user_id", user_ids, "u")
    items = id_frame("item_id", item_ids, "i")
    cells = (
        contract.cells.join(users, "user_id")
        .join(F.broadcast(items) if len(item_ids) < 2_000_000 else items, "item_id")
        .select(
            F.col("u").cast("int"),
            F.col("i").cast("int"),
            F.col("weight").cast("float"),
            F.col("kinds").cast("int"),
        )
        .repartition(parts, "u")
        .persist(StorageLevel.MEMORY_AND_DISK)
    )
    contract.cells.unpersist()
    return cells


def _seen_matrix(cells: DataFrame, n_users: int, n_items: int) -> tuple[sp.csr_matrix, np.ndarray]:
    """The bundle's ``user_items`` (folded positive weights, [U, I] CSR, on the driver,
    where the bundle is written) and its ``seen_by`` kinds, aligned with its data. Cells
    are unique per (u, i) (folded by ``read_contract``), so sorting them is the CSR."""
    table = to_driver(cells.filter("weight > 0"), "the seen cells")
    rows = np.asarray(table.column("u"), dtype=np.int64)
    cols = np.asarray(table.column("i"), dtype=np.int64)
    order = np.lexsort((cols, rows))
    indptr = np.zeros(n_users + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=n_users), out=indptr[1:])
    data = np.asarray(table.column("weight"), dtype=np.float32)[order]
    matrix = sp.csr_matrix((data, cols[order], indptr), shape=(n_users, n_items))
    kinds = np.asarray(table.column("kinds"), dtype=np.uint8)[order]
    return matrix, kinds


def _fit(cells: DataFrame, params: dict[str, Any], reg: float, parts: int, seed: int) -> Any:
    from pyspark.ml.recommendation import ALS
    from pyspark.sql import functions as F

    alpha = float(params["alpha"])
    ratings = cells.select(
        "u", "i", F.greatest(F.lit(alpha) * F.col("weight") - 1.0, F.lit(1e-6)).alias("r")
    )
    als = ALS(
        rank=int(params["factors"]),
        maxIter=int(params["iterations"]),
        regParam=reg,
        implicitPrefs=True,
        alpha=1.0,
        userCol="u",
        itemCol="i",
        ratingCol="r",
        seed=int(seed),
        numUserBlocks=parts,
        numItemBlocks=parts,
        checkpointInterval=-1,
    )
    return als.fit(ratings)


def _factors(frame: DataFrame, n: int, d: int) -> np.ndarray:
    """[n, d] float32 in id order; rows MLlib has no factor for (no positive cell) stay 0,
    as the local job pads them."""
    table = to_driver(frame, "the factors")
    out = np.zeros((n, d), dtype=np.float32)
    ids = np.asarray(table.column("id"), dtype=np.int64)
    if len(ids):
        flat = table.column("features").combine_chunks()
        values = np.asarray(flat.flatten(), dtype=np.float32).reshape(len(ids), d)
        out[ids] = values
    return out


def _block_candidates(item_bc: Any, count: int, n_items: int) -> Any:
    """mapInArrow function: a partition's users -> their top-``count`` unseen items."""

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        items = item_bc.value
        d = items.shape[1]
        for batch in batches:
            users = np.asarray(batch.column("u"), dtype=np.int64)
            factors = _dense(batch.column("features"), len(users), d)
            seen = _csr(batch.column("seen"), n_items)
            cands = user_candidates(factors, items, seen, count=count, threads=1)
            yield pa.RecordBatch.from_pydict(
                {
                    "u": pa.array(users),
                    "items": _lists(cands.indices, cands.indptr, pa.int32()),
                    "scores": _lists(cands.data, cands.indptr, pa.float32()),
                }
            )

    return run


def _dense(column: pa.Array, n: int, d: int) -> np.ndarray:
    out = np.zeros((n, d), dtype=np.float32)
    present = ~np.asarray(column.is_null())
    if present.any():
        values = column.filter(pa.array(present)).flatten()
        out[present] = np.asarray(values, dtype=np.float32).reshape(-1, d)
    return out


def _csr(column: pa.Array, n_items: int) -> sp.csr_matrix:
    lengths = np.array(column.value_lengths().fill_null(0), dtype=np.int64)
    indptr = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=indptr[1:])
    # A copy: Arrow's buffers are read-only and scipy sorts/prunes in place.
    indices = np.array(column.flatten(), dtype=np.int32)
    data = np.ones(len(indices), dtype=np.float32)
    return sp.csr_matrix((data, indices, indptr), shape=(len(lengths), n_items))


def _lists(values: np.ndarray, indptr: np.ndarray, kind: pa.DataType) -> pa.Array:
    return pa.ListArray.from_arrays(
        pa.array(indptr.astype(np.int32)), pa.array(np.asarray(values), type=kind)
    )


def _users_with_seen(
    spark: SparkSession, cells: DataFrame, factors: DataFrame | None, n_users: int, parts: int
) -> DataFrame:
    """Every user row with its factors (null = zero vector) and seen item list."""
    from pyspark.sql import functions as F

    everyone = spark.range(0, n_users, numPartitions=parts).select(
        F.col("id").cast("int").alias("u")
    )
    seen = cells.groupBy("u").agg(F.collect_list("i").alias("seen"))
    out = everyone.join(seen, "u", "left")
    if factors is not None:
        out = out.join(factors.select(F.col("id").alias("u"), "features"), "u", "left")
    return out.repartition(parts, "u")


def candidates_on_executors(
    spark: SparkSession,
    cells: DataFrame,
    user_frame: DataFrame,
    item_factors: np.ndarray,
    n_users: int,
    count: int,
    parts: int,
) -> sp.csr_matrix:
    """Per-user candidate lists (score order) computed by the executors."""
    item_bc = spark.sparkContext.broadcast(item_factors)
    try:
        frame = _users_with_seen(spark, cells, user_frame, n_users, parts)
        lists = to_driver(
            frame.mapInArrow(
                _block_candidates(item_bc, count, item_factors.shape[0]),
                "u long, items array<int>, scores array<float>",
            ),
            f"the candidate lists ({n_users:,} users x {count})",
        )
    finally:
        item_bc.unpersist()
    users = np.asarray(lists.column("u"), dtype=np.int64)
    order = np.argsort(users)
    items_col = lists.column("items").combine_chunks()
    scores_col = lists.column("scores").combine_chunks()
    lengths = np.asarray(items_col.value_lengths(), dtype=np.int64)
    offsets = np.asarray(items_col.offsets, dtype=np.int64)
    all_items = np.asarray(items_col.flatten(), dtype=np.int32)
    all_scores = np.asarray(scores_col.flatten(), dtype=np.float32)
    indptr = np.zeros(n_users + 1, dtype=np.int64)
    per_user = np.zeros(n_users, dtype=np.int64)
    per_user[users] = lengths
    np.cumsum(per_user, out=indptr[1:])
    idx = (
        np.concatenate([np.arange(offsets[k], offsets[k] + lengths[k]) for k in order])
        if len(order)
        else np.empty(0, np.int64)
    )
    return sp.csr_matrix(
        (all_scores[idx], all_items[idx], indptr), shape=(n_users, item_factors.shape[0])
    )


def _validate(
    spark: SparkSession,
    cells: DataFrame,
    params: dict[str, Any],
    reg: float,
    n_items: int,
    parts: int,
    config: TrainConfig,
) -> dict[str, Any]:
    """NDCG@10 on a held-out 20% of the cells, computed on the executors."""
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    marked = cells.withColumn("held", F.rand(config.seed) < VALIDATION_FRACTION).persist(
        StorageLevel.MEMORY_AND_DISK
    )
    train = marked.filter(~F.col("held")).drop("held")
    held = marked.filter(F.col("held")).groupBy("u").agg(F.collect_list("i").alias("relevant"))
    model = _fit(train, params, reg, parts, config.seed)
    item_factors = _factors(model.itemFactors, n_items, int(params["factors"]))
    item_bc = spark.sparkContext.broadcast(item_factors)
    frame = (
        train.groupBy("u")
        .agg(F.collect_list("i").alias("seen"))
        .join(held, "u")
        .join(model.userFactors.select(F.col("id").alias("u"), "features"), "u", "left")
        .repartition(parts, "u")
    )

    def score(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        items = item_bc.value
        d = items.shape[1]
        for batch in batches:
            n = batch.num_rows
            factors = _dense(batch.column("features"), n, d)
            seen = _csr(batch.column("seen"), n_items)
            relevant = _csr(batch.column("relevant"), n_items)
            top = user_candidates(factors, items, seen, count=VALIDATION_K, threads=1)
            recommended = np.full((n, VALIDATION_K), -1, dtype=np.int64)
            for r in range(n):
                row = top.indices[top.indptr[r] : top.indptr[r + 1]]
                recommended[r, : len(row)] = row
            values = per_user_ndcg(recommended, relevant, VALIDATION_K)
            yield pa.RecordBatch.from_pydict(
                {"ndcg": pa.array([float(values.sum())]), "users": pa.array([len(values)])}
            )

    try:
        sums = (
            frame.mapInArrow(score, "ndcg double, users long")
            .agg(F.sum("ndcg").alias("ndcg"), F.sum("users").alias("users"))
            .collect()[0]
        )
    finally:
        item_bc.unpersist()
        marked.unpersist()
    users = int(sums["users"] or 0)
    return {
        f"ndcg@{VALIDATION_K}": round(float(sums["ndcg"] or 0.0) / users, 5) if users else None,
        "users": users,
        "split": {"kind": "random cells", "fraction": VALIDATION_FRACTION, "seed": config.seed},
        "computed_on": "executors",
    }


def _assemble(
    spark: SparkSession,
    contract: SparkContract,
    config: TrainConfig,
    params: dict[str, Any],
    reg: float,
    user_ids: np.ndarray,
    item_ids: np.ndarray,
    seen: sp.csr_matrix,
    seen_by: np.ndarray,
    user_factors: np.ndarray,
    item_factors: np.ndarray,
    positive: DataFrame,
    parts: int,
    log: StageLog,
) -> Bundle:
    dataset = contract.dataset
    user_ids = user_ids.astype(np.str_)
    item_ids = item_ids.astype(np.str_)
    side = item_side(dataset, seen, user_ids, item_ids, user_factors, item_factors, config, log)
    with log.stage("candidates", f"{config.candidates} per user, on the executors") as facts:
        started = time.perf_counter()
        factor_frame = _factor_frame(spark, user_factors, parts)
        candidates = candidates_on_executors(
            spark, positive, factor_frame, item_factors, len(user_ids), config.candidates, parts
        )
        facts.update(nnz=int(candidates.nnz))
        cand_seconds = time.perf_counter() - started
    with log.stage("region_lists"):
        allowed = region_allowed(side.availability, side.everywhere)
        region_cands = top_per_row(side.region_pop, count=config.region_candidates, allowed=allowed)
    with log.stage("cold_start", "profile source on held-out users, on the driver") as facts:
        # The folded cells are on the driver already (they ship as user_items), so the
        # counted candidates are chosen as the local job chooses them.
        profile = counted_profile_source(
            dataset, InteractionMatrix(user_ids, item_ids, seen), config, log, "spark engine"
        )
        facts.update(source=profile.arrays.source)
    index_info = side.index_report.to_dict()
    manifest = _manifest(
        spark, contract, config, params, reg, user_ids, item_ids, seen, parts, index_info
    )
    manifest["cold_start"] = profile.to_dict()
    manifest["candidates"] = {
        "per_user": config.candidates,
        "per_region": config.region_candidates,
        "user_lists": {
            "method": "exact",
            "count": config.candidates,
            "recall": 1.0,
            "computed_on": "executors",
            "seconds": round(cand_seconds, 3),
        },
        "region_source": "region_popularity",
        "region_source_choice": {"source": "region_popularity", "reason": "spark engine"},
        "order": "descending score within each row; seen items removed",
    }
    return engine_bundle(
        side,
        manifest=manifest,
        user_ids=user_ids,
        item_ids=item_ids,
        user_factors=user_factors,
        item_factors=item_factors,
        seen=seen,
        seen_by=seen_by,
        candidates=candidates,
        region_candidates=region_cands,
        cold_start=profile.arrays,
    )


def _factor_frame(spark: SparkSession, user_factors: np.ndarray, parts: int) -> DataFrame:
    """The shipped user factors as (id, features) for the executors (the MLlib frame has
    the same values; this one is in the bundle's exact float32 form)."""
    d = user_factors.shape[1]
    nonzero = np.flatnonzero(user_factors.any(axis=1))
    flat = pa.array(user_factors[nonzero].reshape(-1))
    offsets = pa.array((np.arange(len(nonzero) + 1) * d).astype(np.int32))
    table = pa.table(
        {
            "id": pa.array(nonzero.astype(np.int32)),
            "features": pa.ListArray.from_arrays(offsets, flat),
        }
    )
    return spark.createDataFrame(table.to_pandas()).repartition(parts, "id")


def _manifest(
    spark: SparkSession,
    contract: SparkContract,
    config: TrainConfig,
    params: dict[str, Any],
    reg: float,
    user_ids: np.ndarray,
    item_ids: np.ndarray,
    seen: sp.csr_matrix,
    parts: int,
    index_report: dict[str, Any],
) -> dict[str, Any]:
    import hashlib
    from datetime import UTC, datetime

    from training.pipeline import _jsonable

    dataset = contract.dataset
    fingerprint = hashlib.sha256(
        (dataset.fingerprint + json.dumps(config.model_dump(), sort_keys=True) + "spark").encode()
    ).hexdigest()
    weights = resolve_event_weights(config.event_weights)
    shipped = {k: v for k, v in params.items() if k != "num_threads"}
    return {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "data_fingerprint": dataset.fingerprint,
        "fingerprint": fingerprint,
        "data_files": dict(contract.files),
        "config": config.model_dump(),
        "params": {"event_weights": weights},
        "model": {
            "name": "als",
            "params": _jsonable(shipped),
            "selected_by": "config",
            "reason": "spark engine: configured/default ALS parameters (no search)",
            "fold_in": {
                "kind": "als",
                "regularization": float(params["regularization"]),
                "alpha": float(params["alpha"]),
                "weighting": "none",
                "bm25_k1": float(params.get("bm25_k1", 0.0)),
                "bm25_b": float(params.get("bm25_b", 0.0)),
            },
            "selection": None,
        },
        "engine": {
            "name": "spark",
            "spark_version": spark.version,
            "master": spark.sparkContext.master,
            "default_parallelism": spark.sparkContext.defaultParallelism,
            "partitions": parts,
            "als": {
                "library": "pyspark.ml.recommendation.ALS (implicitPrefs)",
                "reg_param": reg,
                "reg_rule": "regularization / sqrt(mean cells per user * mean cells per item) "
                "(MLlib scales each row's penalty by its observed cells)",
                "rating": "alpha * weight - 1 with MLlib alpha 1 (confidence alpha * weight)",
            },
        },
        "tuning": None,
        "hybrid": {"skipped": "not trained on spark"},
        "index": index_report,
        "popularity": {"prior_strength": config.region_prior_strength},
        "training_data": {
            "users": len(user_ids),
            "items": len(item_ids),
            "interactions": contract.interaction_rows,
            "nonzero_cells": int(seen.nnz),
        },
        "libraries": {**library_versions(), "pyspark": spark.version},
    }
