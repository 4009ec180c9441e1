"""Splits, the cold-start path, the bounded ALS search and the evaluate CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recsvc.cli import main
from training.data import Dataset, build_matrix
from training.errors import TrainingError
from training.evaluation import evaluate, evaluate_cold_start, split_interactions, split_matrix
from training.tuning import candidate_params, pick_winner, tune_als


def _pairs(frame: pd.DataFrame) -> set[tuple[str, str]]:
    return set(zip(frame["user_id"].astype(str), frame["item_id"].astype(str), strict=True))


@pytest.mark.parametrize("spec", ["random:0.2", "time:0.25"])
def test_splits_are_disjoint_and_deterministic(demo_dataset: Dataset, spec: str) -> None:
    rows = demo_dataset.interactions
    train, test = split_interactions(rows, spec, seed=5)
    assert len(train) + len(test) == len(rows)
    assert not _pairs(train) & _pairs(test)
    n_pairs = len(_pairs(rows))
    fraction = float(spec.split(":")[1])
    assert len(_pairs(test)) == round(fraction * n_pairs)
    again_train, again_test = split_interactions(rows, spec, seed=5)
    assert again_test.index.equals(test.index) and again_train.index.equals(train.index)
    if spec.startswith("time"):
        # every held-out pair's last event is at or after every training pair's last event
        last = rows.groupby([rows["user_id"].astype(str), rows["item_id"].astype(str)])[
            "timestamp"
        ].max()
        test_last = last.loc[list(_pairs(test))].min()
        train_last = last.loc[list(_pairs(train))].max()
        assert test_last >= train_last
    else:
        other_train, _ = split_interactions(rows, spec, seed=6)
        assert not other_train.index.equals(train.index)


def test_bad_split_specs_are_refused(demo_dataset: Dataset) -> None:
    for spec in ("random", "random:1.5", "user:0.2", "time:abc"):
        with pytest.raises(TrainingError, match="--split"):
            split_interactions(demo_dataset.interactions, spec)


def test_split_matrix_partitions_cells(demo_dataset: Dataset) -> None:
    m = build_matrix(demo_dataset).matrix
    a, b = split_matrix(m, 0.2, 1)
    assert a.nnz + b.nnz == m.nnz and a.multiply(b).nnz == 0
    assert abs((a + b) - m).sum() < 1e-4
    assert 0.1 < b.nnz / m.nnz < 0.3


def test_cold_start_path_beats_global_popularity(demo_dataset: Dataset) -> None:
    rows = evaluate_cold_start(
        demo_dataset, 0.2, seed=1, k=10, model_params={"lightfm": {"factors": 16, "epochs": 10}}
    )
    profile = [r for r in rows if r.startswith("profile source (")]
    assert set(rows) == {"popularity", "region_popularity", "lightfm", *profile}
    assert len(profile) == 1 and rows[profile[0]]["choice"]["source"] in profile[0]
    assert rows["popularity"]["users"] == round(0.2 * 400)
    # the demo data has regional tastes: features must help new users
    assert rows["region_popularity"]["ndcg"] > rows["popularity"]["ndcg"]
    assert rows["lightfm"]["ndcg"] > rows["popularity"]["ndcg"]


def test_cold_start_without_features_is_na(demo_dataset: Dataset) -> None:
    no_users = Dataset(
        interactions=demo_dataset.interactions,
        users=None,
        items=None,
        artwork=None,
        fingerprint="x",
        files={},
    )
    notes: list[str] = []
    rows = evaluate_cold_start(no_users, 0.2, seed=1, k=10, notes=notes)
    assert all(row["ndcg"] is None for row in rows.values())
    assert "no user features" in notes[0]


def test_tuning_is_bounded_and_reports(demo_dataset: Dataset) -> None:
    matrix = build_matrix(demo_dataset)
    base = {"factors": 8, "iterations": 3}
    summary = tune_als(demo_dataset, matrix, budget_s=60, max_trials=3, seed=2, base_params=base)
    assert len(summary["trials"]) == 3 and summary["stopped_by"] == "trials"
    assert summary["best_value"] <= max(t["ndcg@10"] for t in summary["trials"])
    assert summary["best_params"] in [t["params"] for t in summary["trials"]]
    assert summary["trials"][0]["params"]["factors"] == 8
    json.dumps(summary)  # the manifest stores it
    tiny = tune_als(demo_dataset, matrix, budget_s=1e-9, max_trials=5, seed=2, base_params=base)
    assert len(tiny["trials"]) == 1 and tiny["stopped_by"] == "budget"
    configs = candidate_params(6, seed=0)
    assert len({json.dumps(c, sort_keys=True) for c in configs}) == 6
    assert all(c["weighting"] != "log" for c in configs)  # binary data: log == none
    counts = candidate_params(6, seed=0, counts=True)  # play counts: log is tried second
    assert counts[1] == {**counts[0], "weighting": "log"}


def test_evaluate_runs_every_model(demo_dataset: Dataset) -> None:
    report = evaluate(
        demo_dataset,
        models=["als", "popularity", "ease"],
        model_params={"als": {"factors": 16, "iterations": 5}},
        ease_lambdas=(10.0, 100.0),
        k=5,
    )
    assert list(report.rows) == ["als", "popularity", "ease λ=10", "ease λ=100"]
    for row in report.rows.values():
        assert 0.0 <= row["ndcg"] <= 1.0 and row["users"] > 0
    assert report.rows["als"]["ndcg"] > report.rows["popularity"]["ndcg"] * 0.8


@pytest.mark.slow
def test_evaluate_cli_prints_table_and_writes_json(
    demo_data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "eval.json"
    rc = main(
        [
            "evaluate",
            "--data",
            str(demo_data_dir),
            "--models",
            "als",
            "popularity",
            "region_popularity",
            "--split",
            "time:0.2",
            "--json",
            str(out),
            "--cold-start-users",
            "0.2",
        ]
    )
    assert rc == 0
    text = capsys.readouterr().out
    assert "ndcg@10" in text and "region_popularity" in text and "cold-start users" in text
    doc = json.loads(out.read_text())
    assert set(doc["models"]) == {"als", "popularity", "region_popularity"}
    assert doc["cold_start"]["lightfm"]["ndcg"] > 0
    assert np.isfinite(doc["models"]["als"]["map"])


def test_evaluate_cli_refuses_bad_arguments(
    demo_data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["evaluate", "--data", str(demo_data_dir), "--split", "random:2"]) == 2
    assert "--split" in capsys.readouterr().err
    assert main(["evaluate", "--data", str(demo_data_dir), "--k", "0"]) == 2


def test_pick_winner_needs_a_clear_margin() -> None:
    base = {"params": {"n": 0}, "ndcg@10": 0.2, "folds": [0.20, 0.21, 0.19]}
    noisy = {"params": {"n": 1}, "ndcg@10": 0.2003, "folds": [0.19, 0.2109, 0.2]}
    clear = {"params": {"n": 2}, "ndcg@10": 0.21, "folds": [0.21, 0.22, 0.20]}
    assert pick_winner([base, noisy], "ndcg@10") is base
    assert pick_winner([base, noisy, clear], "ndcg@10") is clear
