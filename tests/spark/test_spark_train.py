"""``recsvc train --engine spark`` (local[2]): the bundle serves, its quality matches the
local ALS at the same settings, and bad input gives the local job's error."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
import pytest

from recsvc.bundle import load_bundle
from recsvc.errors import DataValidationError
from recsvc.export.spark import SparkSettings
from recsvc.settings import ServingSettings
from recsvc.v1 import recommender_pb2 as pb
from recsvc.v1 import recommender_pb2_grpc as pb_grpc
from tests.fixtures.data import write_contract
from tests.spark.helpers import config, held_out_ndcg, split_storefront
from training.data import load_dataset
from training.pipeline import run_training

# Spark jobs on a busy 2-core box take minutes; the suite default (300 s) is for unit tests.
pytestmark = [pytest.mark.spark, pytest.mark.slow, pytest.mark.timeout(1200)]


@pytest.fixture(scope="module")
def trained(spark: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The same training split trained by both engines (shared by the module)."""
    from training.spark.train import train_spark

    base = tmp_path_factory.mktemp("spark-train")
    train_dir, held = split_storefront(base)
    local_root, spark_root = base / "local", base / "spark"
    run_training(train_dir, local_root, config(), verbose=False)
    train_spark(train_dir, spark_root, config(), SparkSettings(progress=False), verbose=False)
    return {"train": train_dir, "held": held, "local": local_root, "spark": spark_root}


def test_spark_bundle_serves_over_grpc(trained: dict[str, Any], tmp_path: Path) -> None:
    from recsvc.serving.server import ServerThread

    bundle = load_bundle(trained["spark"])
    engine = bundle.manifest["engine"]
    assert engine["name"] == "spark" and engine["spark_version"] and engine["partitions"] >= 2
    assert {"load", "als", "candidates", "validation"} <= set(bundle.manifest["stages"])
    assert bundle.manifest["metrics"]["validation"]["computed_on"] == "executors"
    assert bundle.manifest["metrics"]["validation"]["ndcg@10"] > 0.05
    # Candidates from the executors: score order, seen items removed, full length.
    row = 5
    items, scores = bundle.user_candidates(row)
    assert len(items) == 50 and (scores[:-1] >= scores[1:]).all()
    assert not set(items.tolist()) & set(bundle.user_items[row].indices.tolist())

    # Field(default, ...) reads as required to mypy without the pydantic plugin
    settings = ServingSettings(
        artifacts=trained["spark"],
        host="127.0.0.1",
        port=0,
        feature_store=f"sqlite:///{tmp_path / 'store.sqlite'}",
    )
    server = ServerThread(settings).start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = pb_grpc.RecommenderStub(channel)
            user = str(bundle.user_ids[row])
            reply = stub.Recommend(pb.RecommendRequest(user_id=user, k=10), timeout=30)
            served = [bundle.item_index[i.item_id] for i in reply.items]
            assert reply.model_version == bundle.version and len(served) == 10
            assert not set(served) & set(bundle.user_items[row].indices.tolist())
            # The served list is the executors' candidates re-scored by the same vectors.
            assert len(set(served) & set(items.tolist())) >= 8
            cold = stub.Recommend(pb.RecommendRequest(user_id="nobody-new", k=5), timeout=30)
            assert len(cold.items) == 5
    finally:
        server.stop()


def test_spark_quality_within_two_percent_of_local(trained: dict[str, Any]) -> None:
    local = held_out_ndcg(load_bundle(trained["local"]), trained["held"])
    spark = held_out_ndcg(load_bundle(trained["spark"]), trained["held"])
    assert spark >= 0.98 * local, (spark, local)


BAD_INPUTS = {
    "unknown event type": {
        "interactions": "user_id,item_id,timestamp,event_type\n"
        "u1,i1,1700000000,view\nu2,i2,1700000001,clik\n",
    },
    "bad timestamp": {
        "interactions": "user_id,item_id,timestamp\nu1,i1,1700000000\nu2,i2,1700000001\n"
        "u3,i1,yesterday\n",
    },
    "unknown user": {
        "interactions": "user_id,item_id,timestamp\nu1,i1,1700000000\nu9,i2,1700000001\n",
        "users": "user_id,region\nu1,CA\n",
    },
    "misspelt column": {"interactions": "user_id,item_id,timestmp\nu1,i1,1700000000\n"},
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_gives_the_local_error(spark: Any, tmp_path: Path, case: str) -> None:
    from training.spark.train import train_spark

    data = write_contract(tmp_path / "data", **BAD_INPUTS[case])
    with pytest.raises(DataValidationError) as local:
        load_dataset(data)
    with pytest.raises(DataValidationError) as on_spark:
        train_spark(data, tmp_path / "out", config(), verbose=False)
    assert str(on_spark.value) == str(local.value)
    assert not (tmp_path / "out" / "current").exists()


def test_spark_bundle_keeps_the_kinds_of_each_cell_as_the_local_job(
    trained: dict[str, Any],
) -> None:
    """The seen rule applies to a Spark bundle's history as to a local one: same cells,
    same kinds of event per cell (the storefront has views, clicks, carts and purchases)."""
    local, spark = load_bundle(trained["local"]), load_bundle(trained["spark"])
    assert spark.user_items_seen_classes == local.user_items_seen_classes
    assert spark.user_items_seen_by is not None and local.user_items_seen_by is not None
    assert (spark.user_ids == local.user_ids).all() and (spark.item_ids == local.item_ids).all()
    assert (spark.user_items.indptr == local.user_items.indptr).all()
    assert (spark.user_items.indices == local.user_items.indices).all()
    assert (spark.user_items_seen_by == local.user_items_seen_by).all()
    assert len(set(spark.user_items_seen_by.tolist())) > 2  # several kinds, mixed cells


def test_spark_bundle_ships_the_profile_source_the_local_job_counts(
    trained: dict[str, Any],
) -> None:
    """Users known only by profile: the Spark bundle ships the source the local job picks
    among the counted candidates (same held-out users, same choice, same arrays), and it
    ranks by the profile, not by global popularity."""
    from recsvc.bundle.scoring import cold_start_scores
    from training.cold_start import choose_profile_source
    from training.data import build_matrix

    dataset = load_dataset(trained["train"])
    local = choose_profile_source(dataset, build_matrix(dataset), seed=config().seed)
    bundle = load_bundle(trained["spark"])
    shipped = bundle.manifest["cold_start"]
    assert bundle.cold_start is not None
    assert local.arrays.source == shipped["source"] == bundle.cold_start.source == "segments"
    assert shipped["groupings"] == [list(g) for g in local.arrays.groupings]
    assert shipped["prior_strength"] == pytest.approx(local.arrays.prior_strength)
    assert shipped["held_out_users"] == local.held_out_users > 0
    assert "spark engine" in shipped["reason"]
    assert list(bundle.cold_start.group_keys) == list(local.arrays.group_keys)
    assert (bundle.cold_start.group_counts != local.arrays.group_counts).nnz == 0
    a = cold_start_scores(bundle, {"region": "US-9", "age_bucket": "18-24", "gender": "f"})
    b = cold_start_scores(bundle, {"region": "JP", "age_bucket": "65+", "gender": "m"})
    assert not (a.argsort()[-10:] == b.argsort()[-10:]).all()
