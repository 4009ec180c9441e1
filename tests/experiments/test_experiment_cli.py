"""`recsvc experiments` on a real SQLite store: round trip, refusals change nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from feature_store.factory import open_store
from recsvc.cli import main
from recsvc.experiments.router import NAMESPACE, ExperimentRouter

GOOD = {
    "name": "artwork-policy",
    "salt": "artwork-policy-2026-11",
    "traffic": 1.0,
    "segment": 'region in ("US-9", "CA")',
    "variants": [
        {"name": "control", "weight": 0.5},
        {"name": "contextual", "weight": 0.5, "overrides": {"bandit_policy": "lints"}},
    ],
}


def _write(tmp_path: Path, doc: dict, name: str = "exp.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return path


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_create_list_show_stop_report_round_trip(tmp_path: Path, store_url: str, capsys) -> None:
    path = _write(tmp_path, GOOD)
    code, out, _ = _run(
        capsys, "experiments", "create", "--file", str(path), "--feature-store", store_url
    )
    assert code == 0 and "artwork-policy" in out

    code, out, _ = _run(capsys, "experiments", "list", "--feature-store", store_url)
    assert code == 0 and "artwork-policy" in out and "running" in out

    code, out, _ = _run(
        capsys, "experiments", "show", "artwork-policy", "--feature-store", store_url
    )
    shown = yaml.safe_load(out)
    assert code == 0 and shown["salt"] == GOOD["salt"]
    assert shown["variants"][1]["overrides"] == {"bandit_policy": "lints"}

    store = open_store(store_url)
    try:
        router = ExperimentRouter(store, background=False)
        got = router.assign("u1", {"region": "CA"})
        assert got is not None and got.experiment == "artwork-policy"
        assert router.assign("u1", {"region": "DE"}) is None

        code, out, _ = _run(
            capsys,
            "experiments",
            "report",
            "artwork-policy",
            "--format",
            "json",
            "--feature-store",
            store_url,
        )
        doc = json.loads(out)
        assert code == 0 and doc["experiment"] == "artwork-policy"
        required = {
            "name",
            "users",
            "exposed_users",
            "impressions",
            "clicks",
            "ctr",
            "lift",
            "ci_low",
            "ci_high",
            "p_value",
        }
        assert all(required <= set(v) for v in doc["variants"])
        assert [v["name"] for v in doc["variants"]] == ["control", "contextual"]
        assert doc["variants"][0]["lift"] is None and "srm_p_value" in doc

        plot = tmp_path / "report.png"
        code, out, _err = _run(
            capsys,
            "experiments",
            "report",
            "artwork-policy",
            "--format",
            "csv",
            "--plot",
            str(plot),
            "--feature-store",
            store_url,
        )
        assert code == 0 and out.startswith("experiment,name,users") and plot.exists()

        code, out, _ = _run(
            capsys, "experiments", "stop", "artwork-policy", "--feature-store", store_url
        )
        assert code == 0 and "stopped" in out
        router.refresh()
        assert router.assign("u1", {"region": "CA"}) is None
        code, out, _ = _run(capsys, "experiments", "list", "--feature-store", store_url)
        assert "stopped" in out
    finally:
        store.close()


BAD = [
    ({"variants": [{"name": "control", "weight": 0.5}, {"name": "b", "weight": 0.4}]}, "variants"),
    (
        {
            "variants": [
                {"name": "control", "weight": 0.5},
                {"name": "b", "weight": 0.5, "overrides": {"bandit_policy": "nope"}},
            ]
        },
        "bandit_policy",
    ),
    (
        {
            "variants": [
                {"name": "control", "weight": 0.5},
                {"name": "b", "weight": 0.5, "overrides": {"colour": "red"}},
            ]
        },
        "overrides.colour",
    ),
    (
        {
            "variants": [
                {"name": "control", "weight": 0.5},
                {"name": "b", "weight": 0.5, "overrides": {"model_version": "nope"}},
            ]
        },
        "model_version",
    ),
    ({"variants": [{"name": "same", "weight": 0.5}, {"name": "same", "weight": 0.5}]}, "variants"),
    ({"segment": 'region in ("US-9"'}, "segment"),
    ({"traffic": 1.5}, "traffic"),
    ({"traffic": -0.1}, "traffic"),
    ({"name": "bad name!"}, "name"),
    ({"colour": "red"}, "colour"),
    ({"variants": [{"name": "only", "weight": 1.0}]}, "variants"),
    ({"start": "2026-02-01T00:00:00Z", "stop": "2026-01-01T00:00:00Z"}, "stop"),
    ({"holdout": 1.0}, "holdout"),
    ({"layer_start": 10}, "layer_start"),
    (
        {
            "variants": [
                {"name": "control", "weight": 0.5},
                {"name": "b", "weight": 0.5, "overrides": {"k": 0}},
            ]
        },
        "overrides.k",
    ),
]


@pytest.mark.parametrize(("change", "field"), BAD)
def test_invalid_definitions_are_refused_and_nothing_is_stored(
    tmp_path: Path, store_url: str, capsys, change: dict, field: str
) -> None:
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    path = _write(tmp_path, GOOD | change)
    code, _out, err = _run(
        capsys,
        "experiments",
        "create",
        "--file",
        str(path),
        "--artifacts",
        str(artifacts),
        "--feature-store",
        store_url,
    )
    assert code == 2
    assert field in err and len(err.strip().splitlines()) == 1, err
    store = open_store(store_url)
    try:
        assert store.list_documents(NAMESPACE) == {}
    finally:
        store.close()


def test_clashes_with_stored_experiments_are_refused(
    tmp_path: Path, store_url: str, capsys
) -> None:
    create = ["experiments", "create", "--feature-store", store_url, "--file"]
    assert _run(capsys, *create, str(_write(tmp_path, GOOD)))[0] == 0
    store = open_store(store_url)
    try:
        before = store.list_documents(NAMESPACE)
        clashes = [
            (GOOD | {"name": "ARTWORK-policy", "salt": "other"}, "'name'"),
            (GOOD | {"name": "second"}, "'salt'"),
        ]
        for doc, field in clashes:
            code, _, err = _run(capsys, *create, str(_write(tmp_path, doc, "x.yaml")))
            assert code == 2 and field in err, err
        assert store.list_documents(NAMESPACE) == before
    finally:
        store.close()


def test_layers_fill_up_and_refuse_overlap(tmp_path: Path, store_url: str, capsys) -> None:
    create = ["experiments", "create", "--feature-store", store_url, "--file"]
    layered = {**GOOD, "layer": "ranking", "traffic": 0.6, "segment": None}
    del layered["segment"]
    a = _write(tmp_path, layered | {"name": "a", "salt": "sa"}, "a.yaml")
    b = _write(tmp_path, layered | {"name": "b", "salt": "sb", "traffic": 0.4}, "b.yaml")
    c = _write(tmp_path, layered | {"name": "c", "salt": "sc", "traffic": 0.1}, "c.yaml")
    assert _run(capsys, *create, str(a))[0] == 0
    assert _run(capsys, *create, str(b))[0] == 0
    code, _, err = _run(capsys, *create, str(c))
    assert code == 2 and "layer 'ranking'" in err
    store = open_store(store_url)
    try:
        docs = store.list_documents(NAMESPACE)
        assert (docs["a"]["layer_start"], docs["b"]["layer_start"]) == (0, 6000)
        router = ExperimentRouter(store, background=False)
        for i in range(3000):
            assert len(router.assign_all(f"u{i}", {})) == 1  # exactly one of the layer
    finally:
        store.close()
    # Stopping one frees its range for the next.
    assert _run(capsys, "experiments", "stop", "b", "--feature-store", store_url)[0] == 0
    assert _run(capsys, *create, str(c))[0] == 0


def test_unknown_experiment_is_a_clear_error(store_url: str, capsys) -> None:
    code, _, err = _run(capsys, "experiments", "show", "nope", "--feature-store", store_url)
    assert code == 2 and "no experiment named 'nope'" in err


def test_dry_run_stores_nothing(tmp_path: Path, store_url: str, capsys) -> None:
    path = _write(tmp_path, GOOD)
    code, out, _ = _run(
        capsys, "experiments", "create", "--dry-run", "--file", str(path),
        "--feature-store", store_url,
    )  # fmt: skip
    assert code == 0 and "valid" in out
    store = open_store(store_url)
    try:
        assert store.list_documents(NAMESPACE) == {}
    finally:
        store.close()


def _stored(store_url: str) -> dict:
    store = open_store(store_url)
    try:
        return store.list_documents(NAMESPACE)
    finally:
        store.close()


def test_segment_fields_are_checked_or_refused_never_silently_accepted(
    tmp_path: Path, store_url: str, trained_bundle_root: Path, capsys, monkeypatch
) -> None:
    """A segment on a user feature needs a bundle to check it against (as export checks
    against its bundle): refused in one line with exit 2 when there is none, accepted
    unchecked only when asked; region (on every request) needs none."""
    monkeypatch.delenv("RECSVC_ARTIFACTS", raising=False)
    create = ["experiments", "create", "--feature-store", store_url, "--file"]
    aged = _write(tmp_path, GOOD | {"segment": 'age_bucket == "25-34"'}, "aged.yaml")

    code, _, err = _run(capsys, *create, str(aged))
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert f"{aged}: field 'segment': user feature 'age_bucket' cannot be checked" in err
    assert "no --artifacts ROOT nor RECSVC_ARTIFACTS" in err
    assert "--artifacts ROOT" in err and "--allow-unchecked-segment" in err

    empty = tmp_path / "no-bundle"
    empty.mkdir()
    code, _, err = _run(capsys, *create, str(aged), "--artifacts", str(empty))
    assert code == 2 and f"{empty} has no current bundle" in err
    monkeypatch.setenv("RECSVC_ARTIFACTS", str(empty))  # serve's variable: the same check
    code, _, err = _run(capsys, *create, str(aged))
    assert code == 2 and f"{empty} has no current bundle" in err
    monkeypatch.delenv("RECSVC_ARTIFACTS")
    assert _stored(store_url) == {}

    # The bundle knows the field: accepted; a field it lacks: refused naming it.
    code, _, err = _run(capsys, *create, str(aged), "--artifacts", str(trained_bundle_root))
    assert code == 0, err
    typo = _write(tmp_path, GOOD | {"name": "typo", "segment": 'age_buckt == "25-34"'}, "t.yaml")
    code, _, err = _run(capsys, *create, str(typo), "--artifacts", str(trained_bundle_root))
    assert code == 2 and "age_buckt" in err and len(err.strip().splitlines()) == 1, err

    # The explicit opt-out stores it, with a warning naming the unchecked field.
    unchecked = _write(tmp_path, GOOD | {"name": "unchecked", "salt": "u-1",
                                         "segment": 'tier == "gold"'}, "u.yaml")  # fmt: skip
    code, _, err = _run(capsys, *create, str(unchecked), "--allow-unchecked-segment")
    assert code == 0 and "warning: segment field(s) tier not checked" in err
    assert set(_stored(store_url)) == {"artwork-policy", "unchecked"}


def test_the_shared_create_path_refuses_an_unchecked_segment_too(store_url: str) -> None:
    """The console creates through manage.prepare_experiment as the CLI does: with no
    bundle to read fields from it refuses the same way."""
    from recsvc.experiments.definition import ExperimentDefinitionError, parse_experiment
    from recsvc.experiments.manage import prepare_experiment

    experiment = parse_experiment(GOOD | {"segment": 'tier == "gold"'}, "form")
    store = open_store(store_url)
    try:
        with pytest.raises(ExperimentDefinitionError, match="user feature 'tier' cannot be"):
            prepare_experiment(store, experiment, source="form", model_versions=None)
        placed = prepare_experiment(
            store, experiment, source="form", model_versions=None, allow_unchecked_segment=True
        )
        assert placed.segment == 'tier == "gold"'
        region_only = parse_experiment(GOOD, "form")  # region: on every request
        assert prepare_experiment(store, region_only, source="form", model_versions=None)
    finally:
        store.close()
