"""``recsvc export --engine spark`` and ``recsvc audience --engine spark``; the SparkSession.

Export: the driver does everything that can fail (:func:`recsvc.export.job.prepare_export`:
bundle, segment, users file, suppression, feature store, policy) and selects the users as
the local job does; the selected user ids go to the executors as a DataFrame partitioned
by position. Each executor Python worker loads the bundle's version directory once
(memory-mapped, FAISS included) and runs every batch of its users through the local job's
own chunk path (``_Selection.chunks`` + ``ChunkRunner.run``: the serving pipeline's
``rank_users`` and artwork choice, seen items including the feature store's recent events,
region availability, suppressed pairs, segment), so the rules are the local export's by
construction. Rows are written by Spark's file committer into a staging directory next to
the destination; the driver adds ``_manifest.json`` and renames the staging directory into
place only when the whole job succeeded (Spark's ``_SUCCESS`` is inside). A failed or killed
job leaves no destination directory (its staging directory is deleted, or ignored as a dot
name by readers should the driver itself die).

Audience: users are partitioned over the executors by row range; each partition finds its
best users per item with the local job's rules (eligibility mask, regional groups and the
serving filters of :class:`recsvc.export.audience.AudienceJob`), and Spark keeps the top N
per item across partitions.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import sys
import tempfile
import time
import uuid
import warnings
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from recsvc.errors import UsageError

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from recsvc.export.audience import AudienceOptions
    from recsvc.export.job import ExportJob, ExportOptions, ExportSummary

MANIFEST_NAME = "_manifest.json"
SUCCESS_NAME = "_SUCCESS"
DEFAULT_MASTER = "local[2]"
SHUFFLE_PARTITIONS = "spark.sql.shuffle.partitions"
MAX_RESULT_SIZE = "spark.driver.maxResultSize"
# Rows per Arrow batch handed to a Python worker (Spark's default, 10k, means a pipeline
# call per 10k users; bigger batches amortize it, memory stays bounded by the chunk size).
ARROW_BATCH_ROWS = 20_000


def _quiet_python_warnings() -> None:
    # pyspark warns about pandas >= 3 on every import; recsvc passes Arrow, not pandas.
    warnings.filterwarnings("ignore", category=FutureWarning, module="pyspark")
    warnings.filterwarnings("ignore", message=".*pandas.*", category=UserWarning)


# --- session ------------------------------------------------------------------------------


@dataclass(frozen=True)
class SparkSettings:
    """Where Spark runs: ``master`` (local[N], spark://HOST:PORT, yarn, k8s://…) and extra
    ``spark.*`` settings; ``None`` master = ``spark.master`` from the conf or local[2]."""

    master: str | None = None
    conf: Mapping[str, str] = field(default_factory=dict)
    app_name: str = "recsvc"
    progress: bool = True


def parse_spark_conf(pairs: Sequence[str] | None) -> dict[str, str]:
    """``--spark-conf k=v`` values as a dict; a malformed one is a usage error."""
    out: dict[str, str] = {}
    for pair in pairs or ():
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UsageError(
                f"--spark-conf {pair!r}: expected KEY=VALUE (e.g. spark.executor.memory=4g)"
            )
        out[key.strip()] = value
    return out


def require_pyspark() -> None:
    """A usage error naming the extra when pyspark is not installed."""
    try:
        import pyspark  # noqa: F401
    except ImportError:
        raise UsageError(
            "--engine spark needs pyspark: pip install 'recsvc[spark]' (and Java 17)"
        ) from None


def open_spark(settings: SparkSettings) -> SparkSession:
    """Start (or join) the SparkSession: quiet logs, scratch under the temp dir, the worker
    Python = this interpreter unless PYSPARK_PYTHON says otherwise."""
    require_pyspark()
    _quiet_python_warnings()
    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    scratch = Path(tempfile.gettempdir()) / f"recsvc-spark-{os.getuid()}"
    scratch.mkdir(parents=True, exist_ok=True)
    builder = SparkSession.builder.appName(settings.app_name)
    conf = session_conf(settings.conf)
    master = settings.master or conf.pop("spark.master", None)
    # Under spark-submit (the JVM started this Python and says so with the gateway port)
    # the master and deploy settings are spark-submit's; otherwise local[2] by default.
    if master is None and "PYSPARK_GATEWAY_PORT" not in os.environ:
        master = DEFAULT_MASTER
    if master is not None:
        builder = builder.master(master)
    defaults = {
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "true" if settings.progress else "false",
        "spark.local.dir": str(scratch),
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.sql.execution.arrow.maxRecordsPerBatch": str(ARROW_BATCH_ROWS),
        "spark.driver.extraJavaOptions": f"-Djava.io.tmpdir={scratch}",
        "spark.executor.extraJavaOptions": f"-Djava.io.tmpdir={scratch}",
        "spark.executorEnv.PYSPARK_PYTHON": os.environ["PYSPARK_PYTHON"],
    }
    for key, value in {**defaults, **conf}.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    if not spark.sparkContext.getConf().contains(SHUFFLE_PARTITIONS):
        # Spark's 200 is for big data on big clusters; 2 per core keeps the fold and joins
        # in a few tasks on a laptop and grows with a cluster (adaptive execution merges
        # small ones). Set here, after start, so that --spark-conf or spark-submit's
        # --conf (already in the conf) wins: a builder default would override the latter.
        spark.conf.set(SHUFFLE_PARTITIONS, str(default_partitions(spark)))
    return spark


def session_conf(given: Mapping[str, str]) -> dict[str, str]:
    """The ``spark.*`` settings given (``--spark-conf``) plus the ones they imply: the
    driver's result cap follows a driver memory given without one. The train job collects
    what the bundle needs on the driver (factors, seen cells, candidate lists: 8 bytes per
    list entry, ~1.3 GB for 800k users x 200) and Spark's 1g cap would stop a driver given
    more memory far short of it. Under spark-submit its own ``--conf`` applies instead."""
    conf = dict(given)
    if "spark.driver.memory" in conf:
        conf.setdefault(MAX_RESULT_SIZE, conf["spark.driver.memory"])
    return conf


def to_driver(frame: DataFrame, what: str) -> pa.Table:
    """``frame`` collected on the driver as Arrow; Spark's result cap, when hit, becomes
    an error naming ``what`` and the settings to raise."""
    try:
        return frame.toArrow()
    except Exception as exc:
        if MAX_RESULT_SIZE not in str(exc):
            raise
        sizes = re.search(
            r"results of \d+ tasks \(([^)]+)\) is bigger than [\w.]+ \(([^)]+)\)", str(exc)
        )
        detail = f" ({sizes.group(1)} > {sizes.group(2)})" if sizes else ""
        raise UsageError(
            f"{what} do not fit {MAX_RESULT_SIZE}{detail}: give the driver more memory, "
            f"--spark-conf spark.driver.memory=8g (the result cap follows it), or set "
            f"{MAX_RESULT_SIZE}"
        ) from None


def spark_version(spark: SparkSession) -> str:
    return str(spark.version)


def default_partitions(spark: SparkSession) -> int:
    """Two tasks per executor core: enough to spread the work and to retry cheaply."""
    return max(2, 2 * int(spark.sparkContext.defaultParallelism))


# --- file system (Hadoop's, so any URI Spark writes works) --------------------------------


class HadoopFs:
    """The few Hadoop FileSystem calls the commit needs, through the JVM gateway."""

    def __init__(self, spark: SparkSession, uri: str) -> None:
        jvm = spark.sparkContext._jvm
        assert jvm is not None
        self._jvm = jvm
        conf = spark.sparkContext._jsc.hadoopConfiguration()  # type: ignore[union-attr]
        self._fs = jvm.org.apache.hadoop.fs.Path(uri).getFileSystem(conf)

    def path(self, uri: str) -> Any:
        return self._jvm.org.apache.hadoop.fs.Path(uri)

    def exists(self, uri: str) -> bool:
        return bool(self._fs.exists(self.path(uri)))

    def delete(self, uri: str) -> None:
        self._fs.delete(self.path(uri), True)

    def rename(self, src: str, dst: str) -> bool:
        return bool(self._fs.rename(self.path(src), self.path(dst)))

    def write_text(self, uri: str, text: str) -> None:
        stream = self._fs.create(self.path(uri), True)
        try:
            stream.write(bytearray(text.encode("utf-8")))
        finally:
            stream.close()

    def list_names(self, uri: str) -> list[str]:
        return [str(s.getPath().getName()) for s in self._fs.listStatus(self.path(uri))]

    def sizes(self, uri: str) -> list[tuple[str, int, int]]:
        """(path, length, modification time) of every file under ``uri`` (recursive)."""
        out = []
        files = self._fs.listFiles(self.path(uri), True)
        while files.hasNext():
            status = files.next()
            out.append(
                (str(status.getPath()), int(status.getLen()), int(status.getModificationTime()))
            )
        return sorted(out)

    def is_dir(self, uri: str) -> bool:
        return self.exists(uri) and bool(self._fs.getFileStatus(self.path(uri)).isDirectory())


def uri_of(path: Path | str) -> str:
    """A URI Spark reads: ``scheme://…`` as given, a local path made absolute."""
    text = str(path)
    if "://" in text or text.startswith("file:"):
        return text
    return Path(text).resolve().as_uri()


def staging_uri(dest: str) -> str:
    """A dot-named sibling of ``dest`` (readers and ``recsvc`` ignore dot names)."""
    parent, _, name = dest.rstrip("/").rpartition("/")
    return f"{parent}/.{name}.spark-{uuid.uuid4().hex[:12]}"


@dataclass
class DatasetCommit:
    """Write a DataFrame as a Parquet dataset at ``dest`` all or nothing."""

    spark: SparkSession
    dest: str

    def __post_init__(self) -> None:
        self.fs = HadoopFs(self.spark, self.dest)
        self.staging = staging_uri(self.dest)

    def check(self) -> None:
        parent = self.dest.rstrip("/").rpartition("/")[0]
        if not self.fs.is_dir(parent):
            raise UsageError(f"--out {self.dest}: directory {parent} does not exist")
        if self.fs.exists(self.dest) and not self.fs.is_dir(self.dest):
            raise UsageError(f"--out {self.dest} exists and is not a directory (a dataset)")

    def write(self, frame: DataFrame, manifest_fn: Any) -> dict[str, Any]:
        """``frame`` → staging; ``manifest_fn()`` (after the write) → manifest; rename."""
        try:
            frame.write.mode("error").parquet(self.staging)
            names = self.fs.list_names(self.staging)
            if SUCCESS_NAME not in names:
                raise UsageError(f"spark wrote no {SUCCESS_NAME} into {self.staging}")
            manifest = manifest_fn()
            manifest["files"] = sorted(n for n in names if n.startswith("part-"))
            self.fs.write_text(f"{self.staging}/{MANIFEST_NAME}", json.dumps(manifest, indent=2))
            old = None
            if self.fs.exists(self.dest):
                old = staging_uri(self.dest) + ".old"
                self.fs.rename(self.dest, old)
            if not self.fs.rename(self.staging, self.dest):
                raise UsageError(f"cannot rename {self.staging} to {self.dest}")
            if old is not None:
                self.fs.delete(old)
            return dict(manifest)
        except BaseException:
            self.fs.delete(self.staging)
            raise


# --- export -------------------------------------------------------------------------------


@dataclass(frozen=True)
class SparkExportOptions:
    export: ExportOptions  # ``out`` is the dataset directory
    spark: SparkSettings = field(default_factory=SparkSettings)
    partitions: int | None = None  # default: 2 per executor core
    # Fault-injection tests slow each batch down so a worker can be killed mid-job.
    batch_delay_s: float = 0.0


# Executor side: one prepared job per Python worker, keyed by its options.
_EXECUTOR_JOBS: dict[str, ExportJob] = {}


def _executor_job(options: ExportOptions) -> ExportJob:
    from recsvc.export.job import prepare_export

    key = json.dumps(asdict(options), default=str, sort_keys=True)
    job = _EXECUTOR_JOBS.get(key)
    if job is None:
        _EXECUTOR_JOBS.clear()  # one bundle per worker at a time
        job = prepare_export(options)
        _EXECUTOR_JOBS[key] = job
    return job


def _executor_options(options: ExportOptions, version_dir: Path) -> ExportOptions:
    """What an executor prepares: the driver's resolved version (never ``current``, which
    may flip mid-job) and a throw-away ``out`` (executors write no file themselves)."""
    probe = Path(tempfile.gettempdir()) / "recsvc-spark-export.parquet"
    return replace(options, artifacts=version_dir, out=probe, progress=False)


def export_spark(opts: SparkExportOptions, log: Any = None) -> dict[str, Any]:
    """Run the export on Spark; returns the manifest written next to the rows."""
    from recsvc.export.job import prepare_export

    log = log if log is not None else sys.stderr
    started = time.perf_counter()
    dest = uri_of(opts.export.out)
    local_check = replace(
        opts.export, out=Path(tempfile.gettempdir()) / "recsvc-spark-check.parquet"
    )
    job = prepare_export(local_check)
    try:
        return _export_on_spark(opts, job, dest, started, log)
    finally:
        job.runner.close()


def _refuse_nobody(options: ExportOptions, summary: ExportSummary) -> None:
    """The local job's refusal of an export of nobody, unless ``--allow-empty``."""
    from recsvc.export.job import _nobody

    if not summary.users_exported and not options.allow_empty:
        raise UsageError(
            f"{_nobody(options, summary)}; nothing written (--allow-empty writes the empty file)"
        )


def _export_on_spark(
    opts: SparkExportOptions, job: ExportJob, dest: str, started: float, log: Any
) -> dict[str, Any]:
    from recsvc.export.job import EXPORT_SCHEMA, ExportSummary, _Selection

    summary = ExportSummary()
    selection = job._selection(summary)
    if not selection.total:
        # Nobody selected: refused before Spark starts (a users file with a segment can
        # still match nobody; that is known after the job, checked in manifest()).
        _refuse_nobody(opts.export, summary)
    spark = open_spark(opts.spark)
    commit = DatasetCommit(spark, dest)
    commit.check()
    partitions = opts.partitions or default_partitions(spark)
    exec_opts = _executor_options(opts.export, Path(job.bundle.path).resolve())
    users = _users_frame(spark, selection.ids, selection.features, partitions)
    filter_each = job.segment if job.users is not None else None
    # _CounterParam has AccumulatorParam's two methods (subclassing it would make pyspark
    # a hard import of this module).
    stats: Any = spark.sparkContext.accumulator(Counter(), _CounterParam())  # type: ignore[arg-type]
    delay = opts.batch_delay_s

    def run_batches(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        worker_job = _executor_job(exec_opts)
        counts: Counter[str] = Counter()
        for batch in batches:
            if delay:
                time.sleep(delay)
            ids = np.asarray(batch.column("user_id").to_pylist(), dtype=object)
            feats = {
                name: np.asarray(batch.column(name).to_pylist(), dtype=object)
                for name in batch.schema.names
                if name not in ("pos", "user_id")
            }
            chunked = _Selection(worker_job, ids, feats, filter_each=filter_each)
            for inputs in chunked.chunks():
                result = worker_job.runner.run(inputs)
                counts["users_exported"] += len(inputs)
                counts["users_short"] += result.short_users
                counts.update({f"kind:{k}": v for k, v in result.kinds.items()})
                yield from result.table.cast(EXPORT_SCHEMA).to_batches()
            counts["outside_segment"] += chunked.outside_segment
        stats.add(counts)

    rows = users.mapInArrow(run_batches, _spark_schema(EXPORT_SCHEMA))
    prepared = time.perf_counter()
    print(
        f"export (spark {spark.version}, {spark.sparkContext.master}): "
        f"{selection.total} users in {partitions} partitions",
        file=log,
        flush=True,
    )

    def manifest() -> dict[str, Any]:
        counts = stats.value
        summary.users_exported = counts["users_exported"]
        summary.users_short = counts["users_short"]
        summary.users_outside_segment += counts["outside_segment"]
        summary.kinds = Counter(
            {k.split(":", 1)[1]: v for k, v in counts.items() if k.startswith("kind:")}
        )
        _refuse_nobody(opts.export, summary)  # before the rename: nothing at --out
        summary.rows = spark.read.parquet(commit.staging).count()
        job.timings["recommend_and_write_s"] = round(time.perf_counter() - prepared, 3)
        job.options = replace(job.options, out=Path(opts.export.out))
        out = job._manifest(summary)
        out["engine"] = _engine_info(spark, partitions)
        out["timings_s"]["total_s"] = round(time.perf_counter() - started, 3)
        out["layout"] = "parquet dataset: part-* files, _SUCCESS, _manifest.json"
        return out

    return commit.write(rows, manifest)


class _CounterParam:
    """Spark accumulator of Counters (per-task counts summed on the driver)."""

    def zero(self, value: Counter[str]) -> Counter[str]:
        return Counter()

    def addInPlace(self, a: Counter[str], b: Counter[str]) -> Counter[str]:
        a.update(b)
        return a


def _engine_info(spark: SparkSession, partitions: int) -> dict[str, Any]:
    return {
        "name": "spark",
        "spark_version": spark.version,
        "master": spark.sparkContext.master,
        "partitions": partitions,
        "default_parallelism": spark.sparkContext.defaultParallelism,
    }


def _spark_schema(schema: pa.Schema) -> Any:
    from pyspark.sql.pandas.types import from_arrow_schema

    return from_arrow_schema(schema)


def _users_frame(
    spark: SparkSession, ids: np.ndarray, features: Mapping[str, np.ndarray], partitions: int
) -> DataFrame:
    """The selected users, in order, as a DataFrame split into ``partitions`` ranges."""
    columns: dict[str, pa.Array] = {
        "pos": pa.array(np.arange(len(ids), dtype=np.int64)),
        "user_id": pa.array([str(u) for u in ids.tolist()], pa.string()),
    }
    for name, values in features.items():
        columns[name] = pa.array([str(v) for v in values.tolist()], pa.string())
    table = pa.table(columns)
    frame = (
        spark.createDataFrame(table.to_pandas())
        if len(ids)
        else spark.createDataFrame([], _spark_schema(table.schema))
    )
    return frame.repartitionByRange(
        max(1, min(partitions, max(1, len(ids)))), "pos"
    ).sortWithinPartitions("pos")


# --- audience -----------------------------------------------------------------------------


@dataclass(frozen=True)
class SparkAudienceOptions:
    audience: AudienceOptions  # ``out`` is the dataset directory
    spark: SparkSettings = field(default_factory=SparkSettings)
    partitions: int | None = None
    user_block: int = 65_536  # users scored against an item block at once


_EXECUTOR_AUDIENCES: dict[str, Any] = {}


def _executor_audience(options: AudienceOptions) -> Any:
    from recsvc.export.audience import prepare_audience

    key = json.dumps(asdict(options), default=str, sort_keys=True)
    job = _EXECUTOR_AUDIENCES.get(key)
    if job is None:
        _EXECUTOR_AUDIENCES.clear()
        job = prepare_audience(options)
        _EXECUTOR_AUDIENCES[key] = job
    return job


def audience_rows(
    job: Any, items: np.ndarray, lo: int, hi: int, block: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Best users in rows [lo, hi) for each item under the local job's rules:
    (item rows, user rows, scores), at most ``top`` per item, best first.

    Candidates are found by exact inner product over the range (what the local job's
    user index does over everyone) restricted to the users the job's regional group mask
    allows, then judged pair by pair by ``AudienceJob._allowed`` (the serving filters)."""
    top = job.options.top
    factors = job.bundle.user_factors
    out_i, out_u, out_s = [], [], []
    for positions, mask in job._groups(items):
        part_items = items[positions]
        queries = np.asarray(job.bundle.item_factors[part_items], dtype=np.float32)
        best_u = np.full((len(part_items), 0), -1, np.int64)
        best_s = np.zeros((len(part_items), 0), np.float32)
        for start in range(lo, hi, block):
            stop = min(hi, start + block)
            rows = start + np.flatnonzero(mask[start:stop])
            if not len(rows):
                continue
            scores = queries @ np.asarray(factors[rows], dtype=np.float32).T
            extra = 0 if job.options.include_seen else job._max_seen(part_items)
            fetch = min(len(rows), top + max(32, top // 2) + extra)
            while True:
                pick = _top_columns(scores, fetch)
                users = rows[pick]
                ok = job._allowed(part_items, users)
                got = ok.sum(axis=1)
                if fetch >= len(rows) or (got >= min(top, len(rows))).all():
                    break
                fetch = min(len(rows), fetch * 4)
            cand_s = np.where(ok, np.take_along_axis(scores, pick, axis=1), -np.inf)
            best_u = np.concatenate([best_u, np.where(ok, users, -1)], axis=1)
            best_s = np.concatenate([best_s, cand_s.astype(np.float32)], axis=1)
            keep = _top_columns(best_s, min(top, best_s.shape[1]))
            best_u = np.take_along_axis(best_u, keep, axis=1)
            best_s = np.take_along_axis(best_s, keep, axis=1)
        for b, item in enumerate(part_items.tolist()):
            valid = (best_u[b] >= 0) & np.isfinite(best_s[b])
            out_i.append(np.full(int(valid.sum()), item, np.int64))
            out_u.append(best_u[b][valid])
            out_s.append(best_s[b][valid])
    if not out_i:
        return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float32)
    return np.concatenate(out_i), np.concatenate(out_u), np.concatenate(out_s)


def _top_columns(scores: np.ndarray, count: int) -> np.ndarray:
    """Column indices of each row's ``count`` best scores, best first (ties: lower index)."""
    n = scores.shape[1]
    count = min(count, n)
    if count <= 0:
        return np.zeros((scores.shape[0], 0), np.int64)
    part = (
        np.argpartition(-scores, count - 1, axis=1)[:, :count]
        if count < n
        else np.tile(np.arange(n), (scores.shape[0], 1))
    )
    vals = np.take_along_axis(scores, part, axis=1)
    order = np.lexsort((part, -vals), axis=1)
    return np.take_along_axis(part, order, axis=1)


def audience_spark(opts: SparkAudienceOptions, log: Any = None) -> dict[str, Any]:
    """Run the audience job on Spark; returns the manifest written next to the rows."""
    from recsvc.export.audience import AUDIENCE_SCHEMA, prepare_audience

    log = log if log is not None else sys.stderr
    started = time.perf_counter()
    dest = uri_of(opts.audience.out)
    probe = Path(tempfile.gettempdir()) / "recsvc-spark-audience.parquet"
    job = prepare_audience(replace(opts.audience, out=probe))
    spark = open_spark(opts.spark)
    commit = DatasetCommit(spark, dest)
    commit.check()
    n_users = len(job.bundle.user_ids)
    partitions = max(1, min(opts.partitions or default_partitions(spark), n_users))
    exec_opts = replace(
        opts.audience, artifacts=Path(job.bundle.path).resolve(), out=probe, progress=False
    )
    bounds = np.linspace(0, n_users, partitions + 1).astype(np.int64)
    items = job.item_rows
    block = opts.user_block

    def search(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        worker = _executor_audience(exec_opts)
        for batch in batches:
            for lo, hi in zip(
                batch.column("lo").to_pylist(), batch.column("hi").to_pylist(), strict=True
            ):
                it, us, sc = audience_rows(worker, items, int(lo), int(hi), block)
                yield pa.record_batch(
                    [pa.array(it), pa.array(us), pa.array(sc, pa.float32())],
                    names=["item_row", "user_row", "score"],
                )

    from pyspark.sql import Window
    from pyspark.sql import functions as F

    ranges = spark.createDataFrame(
        [(int(a), int(b)) for a, b in itertools.pairwise(bounds)], "lo long, hi long"
    ).repartition(partitions)
    found = ranges.mapInArrow(search, "item_row long, user_row long, score float")
    order = Window.partitionBy("item_row").orderBy(F.desc("score"), F.asc("user_row"))
    ranked = found.withColumn("rank", F.row_number().over(order)).filter(
        F.col("rank") <= job.options.top
    )
    item_ids = spark.createDataFrame(
        [(int(j), str(job.bundle.item_ids[j])) for j in items.tolist()],
        "item_row long, item_id string",
    )
    rows = ranked.join(F.broadcast(item_ids), "item_row").select(
        "item_id", F.col("rank").cast("int").alias("rank"), "user_row", "score"
    )
    user_ids = job.bundle.user_ids
    ids_bc = spark.sparkContext.broadcast(np.asarray(user_ids, dtype=str))

    def name_users(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        names = ids_bc.value
        for batch in batches:
            users = names[np.asarray(batch.column("user_row"))]
            yield pa.record_batch(
                [
                    batch.column("item_id"),
                    batch.column("rank"),
                    pa.array(users.tolist(), pa.string()),
                    batch.column("score"),
                ],
                schema=AUDIENCE_SCHEMA,
            )

    out = rows.mapInArrow(name_users, _spark_schema(AUDIENCE_SCHEMA))
    prepared = time.perf_counter()
    print(
        f"audience (spark {spark.version}, {spark.sparkContext.master}): {len(items)} items over "
        f"{n_users} users in {partitions} partitions",
        file=log,
        flush=True,
    )

    def manifest() -> dict[str, Any]:
        written = spark.read.parquet(commit.staging)
        rows_n = written.count()
        per_item = written.groupBy("item_id").count()
        short = per_item.filter(F.col("count") < min(job.options.top, job.n_eligible)).count()
        short += len(items) - per_item.count()
        job.timings["search_and_write_s"] = round(time.perf_counter() - prepared, 3)
        job.options = replace(job.options, out=Path(opts.audience.out))
        out_manifest = job._manifest(rows_n, short)
        out_manifest["user_index"] = "exact inner product per user partition (spark)"
        out_manifest["engine"] = _engine_info(spark, partitions)
        out_manifest["timings_s"]["total_s"] = round(time.perf_counter() - started, 3)
        return out_manifest

    return commit.write(out, manifest)


def remove_local(path: Path) -> None:
    """Delete a local dataset directory (tests, benchmarks)."""
    shutil.rmtree(path, ignore_errors=True)


def manifest_of(dataset: Path) -> dict[str, Any]:
    """The ``_manifest.json`` of a local dataset written by this module."""
    return dict(json.loads((Path(dataset) / MANIFEST_NAME).read_text(encoding="utf-8")))
