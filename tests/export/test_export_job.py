"""`recsvc export` end to end on a tiny real bundle: schema, rules, streaming, safety."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from recsvc.bundle import Bundle
from recsvc.export.batch import ChunkRunner
from recsvc.export.job import ExportOptions, prepare_export
from recsvc.export.output import manifest_path

COLUMNS = ["user_id", "rank", "item_id", "score", "artwork_variant_id", "model_version"]
Cli = Callable[..., tuple[int, str, str]]


def _read(path: Path) -> pd.DataFrame:
    if path.suffix == ".csv":
        return pd.read_csv(path, dtype={"user_id": str, "item_id": str}, keep_default_na=False)
    return pq.read_table(path).to_pandas()


def _seen_pairs(bundle: Bundle) -> set[tuple[str, str]]:
    coo = bundle.user_items.tocoo()
    return {
        (str(bundle.user_ids[u]), str(bundle.item_ids[i]))
        for u, i in zip(coo.row, coo.col, strict=True)
    }


def _allowed_items(bundle: Bundle, region: str) -> np.ndarray:
    everywhere = np.asarray(bundle.available_everywhere, dtype=bool)
    names = [str(r) for r in bundle.region_names]
    if region not in names:
        return everywhere
    column = bundle.item_availability[:, names.index(region)].toarray().ravel().astype(bool)
    return everywhere | column


def _brute_force_top(bundle: Bundle, user: str, k: int, include_seen: bool) -> list[str]:
    """Independent expectation: exact top-k by inner product among the items the user may
    get (sold in their region; not seen unless include_seen)."""
    u = bundle.user_index[user]
    scores = bundle.item_factors @ bundle.user_factors[u]
    ok = _allowed_items(bundle, str(bundle.user_features["region"][u]))
    if not include_seen:
        ok &= bundle.user_items[u].toarray().ravel() == 0
    order = [j for j in np.argsort(-scores, kind="stable") if ok[j]]
    return [str(bundle.item_ids[j]) for j in order[:k]]


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_schema_order_and_exact_topk(
    export_bundle_root: Path, export_bundle: Bundle, tmp_path: Path, run_cli: Cli, suffix: str
) -> None:
    out = tmp_path / f"recs{suffix}"
    rc, stdout, _ = run_cli(
        "export", "--artifacts", export_bundle_root, "--out", out, "--k", 5, "--no-progress"
    )
    assert rc == 0
    assert "wrote 400 rows for 80 users" in stdout
    df = _read(out)
    assert list(df.columns) == COLUMNS
    assert len(df) == 80 * 5
    assert set(df["model_version"]) == {export_bundle.version}
    art = export_bundle.artwork
    assert art is not None
    for user, group in df.groupby("user_id", sort=False):
        assert group["rank"].tolist() == [1, 2, 3, 4, 5]
        assert np.all(np.diff(group["score"].to_numpy()) <= 1e-6)
        assert group["item_id"].tolist() == _brute_force_top(export_bundle, str(user), 5, False)
        for item, variant in zip(group["item_id"], group["artwork_variant_id"], strict=True):
            j = export_bundle.item_index[item]
            variants = art.variant_ids[art.indptr[j] : art.indptr[j + 1]].tolist()
            assert variant == (variants[0] if variants else "")  # default policy
    # Users come out in bundle order and contiguous.
    assert df["user_id"].drop_duplicates().tolist() == export_bundle.user_ids.tolist()


def test_seen_excluded_by_default_and_kept_on_request(
    export_bundle_root: Path, export_bundle: Bundle, tmp_path: Path, run_cli: Cli
) -> None:
    seen = _seen_pairs(export_bundle)
    base = ["export", "--artifacts", export_bundle_root, "--k", 8, "--no-progress"]
    assert run_cli(*base, "--out", tmp_path / "a.parquet")[0] == 0
    assert run_cli(*base, "--out", tmp_path / "b.parquet", "--include-seen")[0] == 0
    default = _read(tmp_path / "a.parquet")
    with_seen = _read(tmp_path / "b.parquet")
    assert not any(p in seen for p in zip(default.user_id, default.item_id, strict=True))
    assert sum(p in seen for p in zip(with_seen.user_id, with_seen.item_id, strict=True)) > 20
    for user, group in with_seen.groupby("user_id"):
        assert group["item_id"].tolist() == _brute_force_top(export_bundle, str(user), 8, True)
    manifest = json.loads(manifest_path(tmp_path / "b.parquet").read_text())
    assert manifest["seen_items"] == "included"


def test_suppression_of_users_and_pairs(
    export_bundle_root: Path, tmp_path: Path, run_cli: Cli
) -> None:
    full = tmp_path / "full.csv"
    assert run_cli("export", "--artifacts", export_bundle_root, "--out", full, "--k", 3)[0] == 0
    first = _read(full)
    top_of_u001 = first[first.user_id == "u001"].item_id.iloc[0]
    suppress = tmp_path / "suppress.csv"
    pd.DataFrame({"user_id": ["u000", "u001", "nobody"], "item_id": ["", top_of_u001, ""]}).to_csv(
        suppress, index=False
    )
    out = tmp_path / "sup.csv"
    rc, _stdout, _ = run_cli(
        "export",
        "--artifacts",
        export_bundle_root,
        "--out",
        out,
        "--k",
        3,
        "--suppress",
        suppress,
    )
    assert rc == 0
    df = _read(out)
    assert "u000" not in set(df.user_id)
    assert top_of_u001 not in set(df[df.user_id == "u001"].item_id)
    assert len(df[df.user_id == "u001"]) == 3
    # The rest is unchanged.
    others = first[~first.user_id.isin(["u000", "u001"])].reset_index(drop=True)
    rest = df[df.user_id != "u001"].reset_index(drop=True)
    pd.testing.assert_frame_equal(others, rest)
    counts = json.loads(manifest_path(out).read_text())["counts"]
    assert counts["users_suppressed"] == 1 and counts["suppressed_pairs"] == 1
    # A plain text suppression list (one user id per line) works too.
    text = tmp_path / "suppress.txt"
    text.write_text("u002\nu003\n\n")
    out2 = tmp_path / "sup2.csv"
    assert (
        run_cli(
            "export",
            "--artifacts",
            export_bundle_root,
            "--out",
            out2,
            "--k",
            3,
            "--suppress",
            text,
        )[0]
        == 0
    )
    assert {"u002", "u003"}.isdisjoint(set(_read(out2).user_id))


def test_segment_filters_known_users(
    export_bundle_root: Path, export_bundle: Bundle, tmp_path: Path, run_cli: Cli
) -> None:
    out = tmp_path / "seg.parquet"
    expr = 'region in ("CA", "US-9") and age_bucket != "18-24"'
    rc, _, _ = run_cli(
        "export", "--artifacts", export_bundle_root, "--out", out, "--k", 2, "--segment", expr
    )
    assert rc == 0
    feats = export_bundle.user_features
    expected = {
        str(u)
        for u, r, a in zip(
            export_bundle.user_ids, feats["region"], feats["age_bucket"], strict=True
        )
        if r in ("CA", "US-9") and a != "18-24"
    }
    assert 0 < len(expected) < len(export_bundle.user_ids)
    assert set(_read(out).user_id) == expected
    counts = json.loads(manifest_path(out).read_text())["counts"]
    assert counts["users_outside_segment"] == len(export_bundle.user_ids) - len(expected)


def test_users_file_with_unknown_users(
    export_bundle_root: Path, export_bundle: Bundle, tmp_path: Path, run_cli: Cli
) -> None:
    users = tmp_path / "users.csv"
    pd.DataFrame(
        {
            "user_id": ["u005", "new-ca", "ghost", "u007", "u005"],
            "region": ["", "CA", "", "", ""],
        }
    ).to_csv(users, index=False)
    out = tmp_path / "users.csv.out.csv"
    rc, stdout, _ = run_cli(
        "export", "--artifacts", export_bundle_root, "--out", out, "--k", 4, "--users", users
    )
    assert rc == 0, stdout
    df = _read(out)
    assert df.user_id.drop_duplicates().tolist() == ["u005", "new-ca", "ghost", "u007"]
    manifest = json.loads(manifest_path(out).read_text())
    assert manifest["counts"]["by_kind"] == {
        "known": 2,
        "popularity_global": 1,
        "popularity_region": 1,
    }
    assert manifest["counts"]["duplicate_ids_in_users_file"] == 1
    # Regional popularity respects availability: CA's user gets only items sold in CA.
    ca_items = df[df.user_id == "new-ca"].item_id.tolist()
    allowed = _allowed_items(export_bundle, "CA")
    assert all(allowed[export_bundle.item_index[i]] for i in ca_items)
    pop = export_bundle.region_popularity[list(export_bundle.region_names).index("CA")]
    expected_ca = [
        str(export_bundle.item_ids[j]) for j in np.argsort(-pop, kind="stable") if allowed[j]
    ][:4]
    assert ca_items == expected_ca
    # Unknown everywhere: global popularity, items sold everywhere only.
    ghost = df[df.user_id == "ghost"].item_id.tolist()
    assert all(export_bundle.available_everywhere[export_bundle.item_index[i]] for i in ghost)
    # A text users file: one id per line.
    text = tmp_path / "users.txt"
    text.write_text("u010\nu011\n")
    out2 = tmp_path / "t.parquet"
    assert (
        run_cli(
            "export", "--artifacts", export_bundle_root, "--out", out2, "--k", 1, "--users", text
        )[0]
        == 0
    )
    assert _read(out2).user_id.tolist() == ["u010", "u011"]


def test_users_file_and_segment_together(
    export_bundle_root: Path, export_bundle: Bundle, tmp_path: Path, run_cli: Cli
) -> None:
    users = tmp_path / "u.csv"
    pd.DataFrame(
        {"user_id": ["u001", "u002", "u003", "x-de"], "region": ["", "", "", "DE"]}
    ).to_csv(users, index=False)
    out = tmp_path / "o.csv"
    rc, _, _ = run_cli(
        "export",
        "--artifacts",
        export_bundle_root,
        "--out",
        out,
        "--k",
        2,
        "--users",
        users,
        "--segment",
        'region == "DE"',
    )
    assert rc == 0
    regions = dict(zip(export_bundle.user_ids, export_bundle.user_features["region"], strict=True))
    expected = [u for u in ["u001", "u002", "u003"] if regions[u] == "DE"] + ["x-de"]
    assert _read(out).user_id.drop_duplicates().tolist() == expected


def test_chunk_size_does_not_change_the_output(
    export_bundle_root: Path, tmp_path: Path, run_cli: Cli
) -> None:
    base = ["export", "--artifacts", export_bundle_root, "--k", 6, "--no-progress"]
    assert run_cli(*base, "--out", tmp_path / "big.parquet")[0] == 0
    assert run_cli(*base, "--out", tmp_path / "small.parquet", "--chunk-size", 7)[0] == 0
    big, small = _read(tmp_path / "big.parquet"), _read(tmp_path / "small.parquet")
    pd.testing.assert_frame_equal(big, small)


def test_manifest_checksum_and_counts(
    export_bundle_root: Path, export_bundle: Bundle, tmp_path: Path
) -> None:
    out = tmp_path / "m.parquet"
    job = prepare_export(ExportOptions(export_bundle_root, out, 3, progress=False))
    manifest = job.run()
    on_disk = json.loads(manifest_path(out).read_text())
    assert on_disk["output"]["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    assert on_disk["output"]["rows"] == pq.read_metadata(out).num_rows == 240
    assert on_disk["model_version"] == export_bundle.version
    assert on_disk["artwork"]["rule"] == "best posterior mean, no exploration"
    assert on_disk["arguments"]["k"] == 3
    assert on_disk["counts"]["users_exported"] == 80
    assert set(on_disk["timings_s"]) >= {"load_s", "recommend_and_write_s", "users_per_s"}
    assert manifest["output"] == on_disk["output"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp left


def test_failure_midway_leaves_no_file(
    export_bundle_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "half.csv"
    out.write_text("previous export\n")
    calls = {"n": 0}
    real_run = ChunkRunner.run

    def failing_run(self: ChunkRunner, inputs: list) -> object:
        calls["n"] += 1
        if calls["n"] == 3:  # fault injection after two chunks were written
            raise OSError("disk full")
        return real_run(self, inputs)

    monkeypatch.setattr(ChunkRunner, "run", failing_run)
    job = prepare_export(ExportOptions(export_bundle_root, out, 3, chunk_size=10, progress=False))
    with pytest.raises(OSError, match="disk full"):
        job.run()
    assert calls["n"] == 3
    assert out.read_text() == "previous export\n"  # the old file is untouched
    assert not manifest_path(out).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["half.csv"]  # no temp left


def test_errors_before_any_work(export_bundle_root: Path, tmp_path: Path, run_cli: Cli) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    cases = [
        (["--artifacts", export_bundle_root, "--out", not_a_dir / "x.csv"], "does not exist"),
        (["--artifacts", export_bundle_root, "--out", tmp_path / "x.json"], ".csv or .parquet"),
        (["--artifacts", tmp_path / "nope", "--out", tmp_path / "x.csv"], "nope"),
        (["--artifacts", tmp_path, "--out", tmp_path / "x.csv"], "manifest.json"),
        (
            [
                "--artifacts",
                export_bundle_root,
                "--out",
                tmp_path / "x.csv",
                "--segment",
                'region == "CA" and agebucket == "x"',
            ],
            "unknown field 'agebucket'",
        ),
        (
            [
                "--artifacts",
                export_bundle_root,
                "--out",
                tmp_path / "x.csv",
                "--segment",
                'region = "CA"',
            ],
            "column 8",
        ),
        (
            [
                "--artifacts",
                export_bundle_root,
                "--out",
                tmp_path / "x.csv",
                "--users",
                tmp_path / "missing.csv",
            ],
            "missing.csv",
        ),
        (
            ["--artifacts", export_bundle_root, "--out", tmp_path / "x.csv", "--policy", "nope"],
            "unknown bandit policy",
        ),
    ]
    for argv, fragment in cases:
        rc, _, err = run_cli("export", *argv, "--k", 3)
        assert rc == 2, (argv, err)
        assert fragment in err, (argv, err)
        assert "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]
    rc, _, err = run_cli(
        "export", "--artifacts", export_bundle_root, "--out", tmp_path / "x.csv", "--k", 0
    )
    assert rc == 2 and "--k" in err


def test_users_file_without_user_id_column_is_refused(
    export_bundle_root: Path, tmp_path: Path, run_cli: Cli
) -> None:
    users = tmp_path / "users.csv"
    users.write_text("id,region\nu001,CA\n")
    rc, _, err = run_cli(
        "export",
        "--artifacts",
        export_bundle_root,
        "--out",
        tmp_path / "o.csv",
        "--k",
        2,
        "--users",
        users,
    )
    assert rc == 2
    assert "missing column 'user_id'" in err and str(users) in err
