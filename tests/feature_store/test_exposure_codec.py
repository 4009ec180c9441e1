"""The exposure writer's fast JSON (``exposure_json``) writes exactly the text of the
reference path (``dumps(exposure_row(...))``), and what a store reads back (the log, the
served-request index) is unchanged."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest

from feature_store import ExposureRecord, OnlineStore
from feature_store.codec import dumps, exposure_json, exposure_row, served_items


def record(**fields: Any) -> ExposureRecord:
    base: dict[str, Any] = {
        "request_id": "a1b2c3-1f",
        "user_id": "u1",
        "timestamp_ms": 1_700_000_000_123,
        "item_ids": ["i1", "i2", "i3"],
        "variant_ids": ["v1", "", "v3"],
        "propensities": [1.0, 0.25, 1.0],
        "model_version": "20261123T025030Z-6a15a573",
        "experiment": "exp",
        "variant": "b",
        "policy": "default",
        "context": {"region": "north"},
    }
    return ExposureRecord(**{**base, **fields})


CASES = {
    "typical": record(),
    "no items": record(item_ids=[], variant_ids=[], propensities=[], context={}),
    "escapes": record(
        request_id='r"1\\',
        user_id="zoë \u2603 \x01\n\t",
        item_ids=['quote"d', "back\\slash", "ünï\u2028", "\x7f"],
        variant_ids=["a/b", "<>&", "\u00e9", "tab\t"],
        propensities=[0.1, 0.2, 0.3, 0.4],
        context={"región": 'n"orth', "k\n": "v\\"},
    ),
    "odd floats": record(propensities=[-0.0, 0.0, 1e-320], item_ids=["a", "b", "c"]),
    "big floats": record(propensities=[1e308, 1e308, 1.5], item_ids=["a", "b", "c"]),
    "not finite": record(propensities=[math.nan, math.inf, -math.inf]),
    "ints and numpy": record(
        request_id="r-np",
        item_ids=[1, 2, np.str_("x")],
        variant_ids=["v", np.str_("w"), 3],
        propensities=[1, np.float64(0.3333333333333333), np.float32(0.5)],
        timestamp_ms=np.int64(1_700_000_000_000),
    ),
    "non-str scalar": record(request_id=7, experiment=None),  # type: ignore[arg-type]
    "repeated item": record(item_ids=["i1", "i1"], variant_ids=["a", "b"], propensities=[1, 1]),
}


@pytest.mark.parametrize("name", list(CASES))
def test_fast_json_is_the_reference_text(name: str) -> None:
    rec = CASES[name]
    assert exposure_json(rec) == dumps(exposure_row(rec))
    assert exposure_json(rec) == exposure_json(rec)  # memoized float texts: same again


def test_mismatched_lengths_still_refused() -> None:
    with pytest.raises(ValueError, match="same length"):
        exposure_json(record(propensities=[1.0]))
    with pytest.raises(ValueError, match="same length"):
        exposure_json(record(variant_ids=["v"]))


def test_zero_memo_never_mixes_signed_zeros() -> None:
    assert exposure_json(record(propensities=[0.0, -0.0, 0.0])).count("-0.0") == 1
    assert exposure_json(record(propensities=[-0.0, 0.0, -0.0])).count("-0.0") == 2


def test_store_reads_back_the_row(store: OnlineStore) -> None:
    recs = [CASES["typical"], CASES["escapes"], CASES["ints and numpy"]]
    store.log_exposures(recs)
    rows = list(store.read_log("exposure"))
    assert rows == [json.loads(dumps(exposure_row(r))) for r in recs]
    assert store.served_variants(["a1b2c3-1f", 'r"1\\', "r-np"]) == {
        "a1b2c3-1f": {"i1": "v1", "i2": "", "i3": "v3"},
        'r"1\\': served_items(CASES["escapes"]),
        "r-np": {"1": "v", "2": "w", "x": "3"},
    }


def test_make_exposure_is_the_dataclass() -> None:
    import dataclasses

    from feature_store.codec import make_exposure

    for rec in CASES.values():
        fields = {f.name: getattr(rec, f.name) for f in dataclasses.fields(ExposureRecord)}
        made = make_exposure(**fields)
        assert made == rec and type(made) is ExposureRecord
        assert repr(made) == repr(rec)
        with pytest.raises(dataclasses.FrozenInstanceError):
            made.user_id = "other"  # type: ignore[misc]
