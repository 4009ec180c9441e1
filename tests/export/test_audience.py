"""`recsvc audience` against brute force on the tiny bundle, plus its cache and errors."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recsvc.bundle import Bundle
from recsvc.export.audience import AudienceOptions, prepare_audience
from recsvc.export.output import manifest_path
from recsvc.export.user_index import CACHE_DIR, INDEX_NAME, META_NAME

Cli = Callable[..., tuple[int, str, str]]


def _brute_force(
    bundle: Bundle,
    item: str,
    top: int,
    eligible: np.ndarray,
    include_seen: bool = False,
    pairs: frozenset[tuple[str, str]] = frozenset(),
) -> list[str]:
    """Exact top users for ``item``: eligible, may buy it in their region, not seen."""
    j = bundle.item_index[item]
    scores = bundle.user_factors @ bundle.item_factors[j]
    names = [str(r) for r in bundle.region_names]
    regions = bundle.user_features["region"]
    sold_in = {names[r] for r in bundle.item_availability[j].indices}
    ok = eligible.copy()
    if not bundle.available_everywhere[j]:
        ok &= np.isin(regions, list(sold_in))
    if not include_seen:
        ok &= bundle.user_items[:, j].toarray().ravel() == 0
    ok &= np.array([(str(u), item) not in pairs for u in bundle.user_ids])
    order = [u for u in np.argsort(-scores, kind="stable") if ok[u]]
    return [str(bundle.user_ids[u]) for u in order[:top]]


def test_audience_matches_brute_force(
    export_bundle_root: Path, export_bundle: Bundle, tmp_path: Path, run_cli: Cli
) -> None:
    items = tmp_path / "items.txt"
    chosen = ["i000", "i036", "i040", "i049", "i012", "not-an-item"]
    items.write_text("\n".join(chosen) + "\n")
    suppress = tmp_path / "sup.csv"
    pd.DataFrame({"user_id": ["u001", "u002"], "item_id": ["", "i000"]}).to_csv(
        suppress, index=False
    )
    out = tmp_path / "aud.parquet"
    segment = 'age_bucket != "35-44"'
    rc, _, err = run_cli(
        "audience",
        "--artifacts",
        export_bundle_root,
        "--out",
        out,
        "--top",
        7,
        "--items",
        items,
        "--segment",
        segment,
        "--suppress",
        suppress,
    )
    assert rc == 0, err
    assert "not-an-item" in err  # unknown items are reported, not fatal
    df = pd.read_parquet(out)
    assert list(df.columns) == ["item_id", "rank", "user_id", "score"]
    eligible = export_bundle.user_features["age_bucket"] != "35-44"
    eligible &= export_bundle.user_ids != "u001"
    for item in chosen[:-1]:
        got = df[df.item_id == item]
        expected = _brute_force(
            export_bundle, item, 7, eligible, pairs=frozenset({("u002", "i000")})
        )
        assert got.user_id.tolist() == expected, item
        assert got["rank"].tolist() == list(range(1, len(expected) + 1))
        assert np.all(np.diff(got.score.to_numpy()) <= 1e-6)
    assert df.item_id.drop_duplicates().tolist() == chosen[:-1]
    manifest = json.loads(manifest_path(out).read_text())
    assert manifest["counts"]["unknown_items_skipped"] == 1
    assert manifest["output"]["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()


def test_item_filter_and_include_seen_with_deep_search(
    export_bundle: Bundle, export_bundle_root: Path, tmp_path: Path
) -> None:
    # --top larger than the eligible users: every eligible user comes back, in order, which
    # forces the search to widen until it has looked at everyone.
    out = tmp_path / "aud.csv"
    job = prepare_audience(
        AudienceOptions(
            export_bundle_root,
            out,
            top=500,
            item_filter='category == "music"',
            segment='region == "DE"',
            include_seen=True,
            progress=False,
        )
    )
    job.run()
    df = pd.read_csv(out, dtype=str, keep_default_na=False)
    music = [
        str(i)
        for i, c in zip(
            export_bundle.item_ids, export_bundle.item_features["category"], strict=True
        )
        if c == "music"
    ]
    eligible = export_bundle.user_features["region"] == "DE"
    expected = {i: _brute_force(export_bundle, i, 500, eligible, include_seen=True) for i in music}
    # Items not sold in DE have nobody to go to: no rows.
    assert df.item_id.drop_duplicates().tolist() == [i for i in music if expected[i]]
    assert any(not users for users in expected.values())
    for item in music:
        assert df[df.item_id == item].user_id.tolist() == expected[item]
    assert len(df[df.item_id == "i002"]) == int(eligible.sum())


def test_user_index_cache_is_reused_and_validated(
    export_bundle_root: Path, export_bundle: Bundle, tmp_path: Path
) -> None:
    def run() -> str:
        job = prepare_audience(
            AudienceOptions(
                export_bundle_root,
                tmp_path / "a.csv",
                3,
                item_filter='category == "books"',
                progress=False,
            )
        )
        job.run()
        return job.index_source

    cache = export_bundle.path / CACHE_DIR
    first = run()
    assert first in ("built", "cached")
    assert (cache / INDEX_NAME).is_file() and (cache / META_NAME).is_file()
    assert run() == "cached"
    reference = (tmp_path / "a.csv").read_bytes()
    # A corrupted cache file is detected by its checksum and rebuilt, same answers.
    (cache / INDEX_NAME).write_bytes(b"garbage")
    assert run() == "built"
    assert (tmp_path / "a.csv").read_bytes() == reference
    # A cache made for other vectors (stale metadata) is rebuilt too.
    meta = json.loads((cache / META_NAME).read_text())
    meta["user_factors_sha256"] = "0" * 64
    (cache / META_NAME).write_text(json.dumps(meta))
    assert run() == "built"
    assert run() == "cached"


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        ([], "exactly one of --items"),
        (["--item-filter", 'colour == "red"'], "unknown field 'colour'"),
        (["--item-filter", 'category == "x"', "--segment", "region in ("], "column 12"),
        (["--item-filter", 'category == "x"', "--top", "0"], "--top"),
        (["--item-filter", 'category == "x"'], "matches none of the 50 items"),
    ],
)
def test_audience_errors_before_work(
    export_bundle_root: Path, tmp_path: Path, run_cli: Cli, extra: list[str], fragment: str
) -> None:
    argv = ["audience", "--artifacts", export_bundle_root, "--out", tmp_path / "a.csv"]
    if "--top" not in extra:
        argv += ["--top", "3"]
    rc, _, err = run_cli(*argv, *extra)
    assert rc == 2
    assert fragment in err
    assert not (tmp_path / "a.csv").exists()
