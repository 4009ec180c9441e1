"""The segment expression language: parsing, evaluation, errors, fuzz."""

from __future__ import annotations

import random

import numpy as np
import pytest

from recsvc.errors import UsageError
from recsvc.segments import Segment, SegmentError, parse_segment

ROWS = [
    {"region": "US-9", "age_bucket": "25-34", "gender": "f"},
    {"region": "CA", "age_bucket": "18-24", "gender": "m"},
    {"region": "DE", "age_bucket": "25-34"},
    {"region": "CA", "age_bucket": "25-34", "gender": "x"},
    {},
]


def _columns(rows: list[dict[str, str]]) -> dict[str, np.ndarray]:
    fields = sorted({k for r in rows for k in r})
    return {f: np.array([r.get(f, "") for r in rows]) for f in fields}


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ('region in ("US-9","CA") and age_bucket == "25-34"', [True, False, False, True, False]),
        ("region == 'CA'", [False, True, False, True, False]),
        ('region != "CA"', [True, False, True, False, True]),
        ('region not in ("CA", "DE",)', [True, False, False, False, True]),
        ('not region == "CA"', [True, False, True, False, True]),
        ('NOT (region == "CA" OR region == "DE")', [True, False, False, False, True]),
        ('gender == ""', [False, False, True, False, True]),
        (
            'region == "CA" or region == "DE" and gender == "m"',  # and binds tighter
            [False, True, False, True, False],
        ),
        (
            '(region == "CA" or region == "DE") and gender == "m"',
            [False, True, False, False, False],
        ),
        ("not not region == 'DE'", [False, False, True, False, False]),
    ],
)
def test_matches_and_mask_agree(expr: str, expected: list[bool]) -> None:
    segment = parse_segment(expr)
    assert [segment.matches(r) for r in ROWS] == expected
    assert segment.mask(_columns(ROWS)).tolist() == expected


def test_numbers_compare_as_strings() -> None:
    segment = parse_segment("age == 30 or score in (1.5, -2)")
    assert segment.matches({"age": "30"})
    assert not segment.matches({"age": "30.0"})
    assert segment.matches({"score": "-2"})
    assert segment.matches({"score": "1.5"})
    assert segment.fields == frozenset({"age", "score"})


def test_string_escapes() -> None:
    segment = parse_segment(r'name == "a \"quoted\" \\ name" or name == ' + r"'it\'s'")
    assert segment.matches({"name": 'a "quoted" \\ name'})
    assert segment.matches({"name": "it's"})
    assert not segment.matches({"name": "its"})


def test_mask_handles_object_columns_with_missing_values() -> None:
    segment = parse_segment('region == "" or region == "CA"')
    column = np.array(["CA", None, float("nan"), "DE"], dtype=object)
    assert segment.mask({"region": column}).tolist() == [True, True, True, False]
    # A column the expression needs but the table lacks reads as all "".
    assert parse_segment('gender == ""').mask({"region": column}).tolist() == [True] * 4
    assert parse_segment('gender == "f"').mask({}, size=3).tolist() == [False] * 3


@pytest.mark.parametrize(
    ("expr", "column", "fragment"),
    [
        ('region = "x"', 8, "use =="),
        ('region in ("a"', 15, "')'"),
        ("(a == 1", 8, "close the '('"),
        ("a == b", 6, "quote it"),
        ('"x" == a', 1, "field name"),
        ('a == "x', 6, "unterminated"),
        ("a == 1 b == 2", 8, "unexpected name 'b'"),
        ("a in ()", 7, "quoted string or number"),
        ("a not == 1", 7, "'in' after 'not'"),
        (r'a == "\q"', 7, "unknown escape"),
        ("a == 1 and", 11, "field name"),
        ("   ", 1, "empty"),
        ("a == 1 $", 8, "unexpected character"),
    ],
)
def test_syntax_errors_name_the_column(expr: str, column: int, fragment: str) -> None:
    with pytest.raises(SegmentError) as info:
        parse_segment(expr)
    err = info.value
    assert err.position == column, str(err)
    assert fragment in str(err)
    assert isinstance(err, UsageError)
    lines = str(err).splitlines()
    assert lines[-1].index("^") - 2 == column - 1  # caret under the column
    assert f"column {column}" in lines[0]


def test_unknown_field_lists_known_ones() -> None:
    with pytest.raises(SegmentError) as info:
        parse_segment('region == "CA" and agebucket == "1"', known_fields=["region", "age"])
    assert info.value.position == 20
    assert "unknown field 'agebucket'" in str(info.value)
    assert "known fields: age, region" in str(info.value)
    assert parse_segment('region == "CA"', known_fields={"region"}).fields == {"region"}


def test_deep_nesting_is_refused_not_crashing() -> None:
    with pytest.raises(SegmentError, match="nested deeper"):
        parse_segment("(" * 500 + "a == 1" + ")" * 500)
    with pytest.raises(SegmentError, match="nested deeper"):
        parse_segment("not " * 500 + "a == 1")


def test_never_evaluates_python() -> None:
    for expr in ["__import__('os').system('true')", "a == 1 or True", "a.b == 1; x", "a[0]"]:
        with pytest.raises(SegmentError):
            parse_segment(expr)


_FUZZ_ALPHABET = [
    *"ab_ (),'\"\\=!<>.-019 \t$ü",
    *[" and ", " or ", " not ", " in ", "==", "!=", "region", '"CA"'],
]


def test_fuzz_garbage_only_raises_segment_error() -> None:
    rng = random.Random(20261122)
    parsed = 0
    for _ in range(5000):
        expr = "".join(rng.choice(_FUZZ_ALPHABET) for _ in range(rng.randint(0, 14)))
        try:
            segment = parse_segment(expr, known_fields=None if rng.random() < 0.5 else ["a"])
        except SegmentError as exc:
            assert 1 <= exc.position <= len(expr) + 1
            continue
        parsed += 1
        assert isinstance(segment.matches({"a": "1"}), bool)
    assert parsed > 0  # the fuzz reaches valid expressions too


# -- random valid expressions vs a reference evaluator ---------------------------------------

_FIELDS = ["region", "age_bucket", "gender"]
_VALUES = ["US-9", "CA", "DE", "25-34", "18-24", "f", "m", "", "x y", 'q"uote']


def _quote(value: str, rng: random.Random) -> str:
    if rng.random() < 0.5:
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _random_expr(rng: random.Random, depth: int) -> tuple[str, object]:
    """An expression text and a reference evaluator (a Python closure) for it."""
    kind = rng.random() if depth < 4 else 0.0
    if kind < 0.4:
        field = rng.choice(_FIELDS)
        values = rng.sample(_VALUES, rng.randint(1, 3))
        negate = rng.random() < 0.5
        if len(values) == 1 and rng.random() < 0.5:
            text = f"{field} {'!=' if negate else '=='} {_quote(values[0], rng)}"
        else:
            listed = ", ".join(_quote(v, rng) for v in values)
            text = f"{field} {'not in' if negate else 'in'} ({listed})"
        return text, lambda r: (r.get(field, "") in values) != negate
    if kind < 0.55:
        text, fn = _random_expr(rng, depth + 1)
        return f"not ({text})", lambda r: not fn(r)  # type: ignore[operator]
    (lt, lf), (rt, rf) = _random_expr(rng, depth + 1), _random_expr(rng, depth + 1)
    if kind < 0.8:
        return f"({lt}) and ({rt})", lambda r: lf(r) and rf(r)  # type: ignore[operator]
    return f"({lt}) or ({rt})", lambda r: lf(r) or rf(r)  # type: ignore[operator]


def test_random_valid_expressions_match_reference() -> None:
    rng = random.Random(7)
    rows = [{f: rng.choice(_VALUES) for f in _FIELDS if rng.random() < 0.9} for _ in range(300)]
    columns = _columns(rows)
    for f in _FIELDS:
        columns.setdefault(f, np.array([""] * len(rows)))
    for _ in range(200):
        text, reference = _random_expr(rng, 0)
        segment = parse_segment(text, known_fields=_FIELDS)
        expected = [bool(reference(r)) for r in rows]  # type: ignore[operator]
        assert [segment.matches(r) for r in rows] == expected, text
        assert segment.mask(columns).tolist() == expected, text


def test_segment_is_reusable_and_printable() -> None:
    segment = parse_segment('region == "CA"')
    assert isinstance(segment, Segment)
    assert str(segment) == 'region == "CA"'
    assert "Segment(" in repr(segment)
