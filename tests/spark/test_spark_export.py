"""``recsvc export|audience --engine spark`` against the local jobs on the same bundle, and a
standalone cluster (train there, then export with a worker killed mid-job)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from feature_store.base import StoredEvent
from feature_store.factory import open_store
from recsvc.bundle import load_bundle
from recsvc.export.audience import AudienceOptions, prepare_audience
from recsvc.export.job import ExportOptions, prepare_export
from recsvc.export.spark import (
    MANIFEST_NAME,
    SUCCESS_NAME,
    SparkAudienceOptions,
    SparkExportOptions,
    audience_spark,
    export_spark,
)
from tests.spark.helpers import config, read_dataset, same_lists
from training.demo_data import generate
from training.pipeline import run_training

# Spark jobs on a busy 2-core box take minutes; the suite default (300 s) is for unit tests.
pytestmark = [pytest.mark.spark, pytest.mark.slow, pytest.mark.timeout(1200)]

SEGMENT = 'region in ("CA", "MX", "US-1") or age_bucket == "25-34"'


@pytest.fixture(scope="module")
def storefront(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A small bundle (local ALS), a feature store holding purchases made after training,
    and a suppression file (whole users and single pairs)."""
    base = tmp_path_factory.mktemp("spark-export")
    data = base / "data"
    generate(data, users=400, items=150, seed=1, fmt="csv")
    root = base / "bundles"
    run_training(data, root, config(), verbose=False)
    bundle = load_bundle(root)
    store_url = f"sqlite:///{base / 'store.sqlite'}"
    store = open_store(store_url)
    events = []
    # Users 0-19 bought their current top candidate online: it is seen now.
    for u in range(20):
        user = str(bundle.user_ids[u])
        item = str(bundle.item_ids[bundle.user_candidates(u)[0][0]])
        events.append(StoredEvent(f"e{u}", user, item, "purchase", 1_700_000_000_000 + u))
    store.record_events(events)
    store.close()
    suppress = base / "suppress.csv"
    pairs = [(str(bundle.user_ids[u]), "") for u in (30, 31)]
    pairs += [(str(bundle.user_ids[u]), str(bundle.item_ids[bundle.user_candidates(u)[0][1]]))
              for u in range(40, 45)]  # fmt: skip
    pd.DataFrame(pairs, columns=["user_id", "item_id"]).to_csv(suppress, index=False)
    return {"data": data, "root": root, "store": store_url, "suppress": suppress}


def _export_options(front: dict[str, Any], out: Path) -> ExportOptions:
    return ExportOptions(
        artifacts=front["root"],
        out=out,
        k=10,
        segment=SEGMENT,
        suppress=front["suppress"],
        feature_store=str(front["store"]),
        progress=False,
    )


def test_export_on_spark_equals_local_export(spark: Any, storefront: dict[str, Any],
                                             tmp_path: Path) -> None:  # fmt: skip
    local_out = tmp_path / "local.parquet"
    local_manifest = prepare_export(_export_options(storefront, local_out)).run()
    spark_out = tmp_path / "spark-export"
    manifest = export_spark(
        SparkExportOptions(_export_options(storefront, spark_out), partitions=3)
    )
    local, on_spark = read_dataset(local_out), read_dataset(spark_out)
    assert len(local) > 1000
    same_lists(local, on_spark, "user_id", "item_id")
    # The rules really acted: online purchases, suppressed users and pairs are left out.
    bundle = load_bundle(storefront["root"])
    bought = {(str(bundle.user_ids[u]), str(bundle.item_ids[bundle.user_candidates(u)[0][0]]))
              for u in range(20)}  # fmt: skip
    rows = set(zip(on_spark["user_id"], on_spark["item_id"], strict=True))
    assert not rows & bought
    assert not {str(bundle.user_ids[30]), str(bundle.user_ids[31])} & set(on_spark["user_id"])
    assert local_manifest["counts"]["users_outside_segment"] > 0
    for key in ("rows", "users_exported", "users_suppressed", "users_outside_segment", "by_kind"):
        assert manifest["counts"][key] == local_manifest["counts"][key], key
    names = set(os.listdir(spark_out))
    assert {SUCCESS_NAME, MANIFEST_NAME} <= names
    assert json.loads((spark_out / MANIFEST_NAME).read_text())["engine"]["name"] == "spark"
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".")]  # no staging left


def test_audience_on_spark_equals_local_audience(spark: Any, storefront: dict[str, Any],
                                                 tmp_path: Path) -> None:  # fmt: skip
    def options(out: Path) -> AudienceOptions:
        return AudienceOptions(
            artifacts=storefront["root"],
            out=out,
            top=25,
            item_filter='category in ("games", "pets", "beauty")',
            segment=SEGMENT,
            suppress=storefront["suppress"],
            progress=False,
        )

    local_out = tmp_path / "local.parquet"
    prepare_audience(options(local_out)).run()
    spark_out = tmp_path / "spark-audience"
    audience_spark(SparkAudienceOptions(options(spark_out), partitions=3))
    local, on_spark = read_dataset(local_out), read_dataset(spark_out)
    assert len(local) > 100
    same_lists(local, on_spark, "item_id", "user_id")


KILL_SCRIPT = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from recsvc.export.job import ExportOptions
    from recsvc.export.spark import SparkExportOptions, SparkSettings, export_spark

    root, out, master = sys.argv[1:4]
    options = ExportOptions(artifacts=Path(root), out=Path(out), k=10, progress=False,
                            chunk_size=16)
    export_spark(SparkExportOptions(options, SparkSettings(master=master, progress=False),
                                    partitions=8, batch_delay_s=1.5))
    """
)


@pytest.mark.timeout(1200)  # two Spark jobs on 1-core workers: minutes on a busy box
def test_standalone_cluster_train_then_export_with_a_worker_killed(
    standalone_cluster: Any, storefront: dict[str, Any], tmp_path: Path
) -> None:
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable}
    # Train on the cluster through the CLI: the bundle loads.
    root = tmp_path / "bundles"
    trained = subprocess.run(
        [sys.executable, "-m", "recsvc.cli", "train", "--engine", "spark",
         "--spark-master", standalone_cluster.url, "--data", str(storefront["data"]),
         "--out", str(root), "--factors", "16", "--iterations", "3", "--no-tune",
         "--no-hybrid", "--candidates", "20", "--no-validation",
         "--spark-conf", "spark.default.parallelism=2"],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr[-3000:]
    bundle = load_bundle(root)
    assert bundle.manifest["engine"]["master"] == standalone_cluster.url

    # Export with one worker SIGKILLed once tasks are running: Spark retries them on the
    # other worker (success: the full dataset) or the job fails (nothing at --out).
    out = tmp_path / "campaign"
    proc = subprocess.Popen(
        [sys.executable, "-c", KILL_SCRIPT, str(root), str(out), standalone_cluster.url],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        staging = [p for p in tmp_path.iterdir() if p.name.startswith(".campaign.spark-")]
        if staging and any((s / "_temporary").exists() for s in staging):
            time.sleep(3)  # tasks are running on both workers
            break
        time.sleep(0.5)
    assert proc.poll() is None, "export ended before the worker could be killed"
    standalone_cluster.kill_worker(0)
    output, _ = proc.communicate(timeout=600)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".campaign")]
    if proc.returncode != 0:
        assert not out.exists(), output[-3000:]
        return
    local_out = tmp_path / "local.parquet"
    prepare_export(ExportOptions(artifacts=root, out=local_out, k=10, progress=False)).run()
    same_lists(read_dataset(local_out), read_dataset(out), "user_id", "item_id")
    assert (out / SUCCESS_NAME).exists() and (out / MANIFEST_NAME).exists()
    assert np.isfinite(read_dataset(out)["score"]).all()


NOBODY = 'region == "atlantis"'


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    """Exit code and the ``error:`` line (or "") of one CLI run."""
    from recsvc.cli import main

    code = main(list(argv))
    err = capsys.readouterr().err
    return code, next((line for line in err.splitlines() if ": error: " in line), "")


@pytest.mark.parametrize(
    "command, users",
    [("export", False), ("export", True), ("audience", False)],
    ids=["export-segment", "export-users-and-segment", "audience-segment"],
)
def test_a_selection_of_nobody_is_refused_as_locally_unless_allowed(
    spark: Any,
    storefront: dict[str, Any],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    command: str,
    users: bool,
) -> None:
    """A segment (or a users file with a segment) matching nobody: the local job's line
    and exit 2 on Spark too, nothing at --out and no staging left; --allow-empty writes
    the empty dataset. With a users file the segment is judged per user on the executors,
    so that refusal comes after the Spark job, before the rename."""
    argv = [command, "--artifacts", str(storefront["root"]), "--segment", NOBODY,
            "--feature-store", "none", "--no-progress"]  # fmt: skip
    if command == "export":
        argv += ["--k", "3"]
    else:
        argv += ["--top", "3", "--item-filter", 'category == "games"']
    if users:
        ids = load_bundle(storefront["root"]).user_ids[:5].astype(str)
        (tmp_path / "users.txt").write_text("".join(f"{u}\n" for u in ids))
        argv += ["--users", str(tmp_path / "users.txt")]
    local_code, local_line = _cli(capsys, *argv, "--out", str(tmp_path / "local.parquet"))
    assert local_code == 2 and "matches none of" in local_line and "--allow-empty" in local_line

    out = tmp_path / "nobody"
    code, line = _cli(capsys, *argv, "--out", str(out), "--engine", "spark")
    assert (code, line) == (local_code, local_line)
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]

    code, _ = _cli(capsys, *argv, "--out", str(out), "--engine", "spark", "--allow-empty")
    assert code == 0
    assert (out / SUCCESS_NAME).exists() and (out / MANIFEST_NAME).exists()
    assert len(read_dataset(out)) == 0
