"""Property-based contract files and segment expressions: each either loads/parses or is
refused with the user-facing error the CLI prints as one line (exit 2), never anything
else (which would be a traceback). Bounded: a few dozen examples each, derandomized."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recsvc.cli import main
from recsvc.errors import RecsvcError
from recsvc.segments import parse_segment
from training.data import load_dataset
from training.errors import TrainingError

FUZZ = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
USER_ERRORS = (RecsvcError, TrainingError)

cell = st.one_of(
    st.text(st.characters(exclude_categories=["Cs"]), max_size=12),
    st.sampled_from(
        [
            "",
            "1",
            "-1",
            "0",
            "1e300",
            "nan",
            "inf",
            "-0",
            "2024-01-01",
            "2024-01-01T00:00:00Z",
            "1700000000",
            "1700000000000",
            "DE;FR",
            "a|b",
            '"',
            '""',
            ",",
            "\n",
            "\r\n",
            "u1",
            "i1",
            "purchase",
            "view",
            "NULL",
            "9" * 40,
        ]
    ),
)
header = st.sampled_from(
    [
        ["user_id", "item_id", "timestamp"],
        ["user_id", "item_id", "timestamp", "weight"],
        ["user_id", "item_id", "timestamp", "event_type"],
        ["user_id", "item_id", "timestamp", "event_type", "weight"],
        ["user_id", "item_id"],
        ["user", "item_id", "timestamp", "wieght"],
    ]
)


def _csv(cols: list[str], rows: list[list[str]]) -> str:
    def quote(value: str) -> str:
        return value if value.isalnum() else '"' + value.replace('"', '""') + '"'

    return "\n".join([",".join(cols)] + [",".join(quote(v) for v in row) for row in rows]) + "\n"


@st.composite
def contract_files(draw: st.DrawFn) -> dict[str, str]:
    cols = draw(header)
    rows = draw(st.lists(st.lists(cell, min_size=len(cols), max_size=len(cols)), max_size=8))
    files = {"interactions.csv": _csv(cols, rows)}
    if draw(st.booleans()):
        item_rows = draw(st.lists(st.lists(cell, min_size=3, max_size=3), max_size=5))
        files["items.csv"] = _csv(["item_id", "regions", "category"], item_rows)
    if draw(st.booleans()):  # raw bytes: not CSV, maybe not UTF-8
        files["users.csv"] = draw(st.binary(max_size=80)).decode("latin-1")
    return files


@FUZZ
@given(files=contract_files())
def test_contract_files_load_or_are_refused(tmp_path_factory, files) -> None:  # type: ignore[no-untyped-def]
    data = tmp_path_factory.mktemp("fuzz-data")
    for name, text in files.items():
        (data / name).write_bytes(text.encode("utf-8", "surrogatepass"))
    try:
        load_dataset(data)
    except USER_ERRORS as exc:
        assert str(exc).strip()


def test_a_refused_contract_file_is_one_line_exit_2(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    data = tmp_path / "data"
    data.mkdir()
    (data / "interactions.csv").write_bytes(b"user_id,item_id,timestamp\nu1,\xff\xfe,1\n")
    assert main(["train", "--data", str(data), "--out", str(tmp_path / "out"), "--quiet"]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and err[0].startswith("recsvc train: error:"), err


segment_text = st.one_of(
    st.text(st.characters(exclude_categories=["Cs"]), max_size=60),
    st.lists(
        st.sampled_from(
            [
                "region",
                "age",
                "==",
                "!=",
                "in",
                "not",
                "and",
                "or",
                "(",
                ")",
                ",",
                '"US"',
                "'CA'",
                "1",
                "-2.5e3",
                '"',
                "\\",
                "segment",
                "x.y",
            ]
        ),
        max_size=14,
    ).map(" ".join),
    st.integers(1, 40).map(lambda n: "(" * n + 'a == "b"' + ")" * n),
    st.integers(1, 200).map(lambda n: " or ".join(['region == "x"'] * n)),
)
COLUMNS = {
    "region": np.array(["US", "CA", "", "DE"]),
    "age": np.array(["1", "2", "3", ""], dtype=object),
}


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(expr=segment_text, known=st.booleans())
def test_segment_expressions_parse_or_are_refused(expr: str, known: bool) -> None:
    try:
        segment = parse_segment(expr, set(COLUMNS) if known else None)
    except RecsvcError as exc:
        assert str(exc).startswith("bad segment expression")
        return
    mask = segment.mask(COLUMNS, size=4)
    assert mask.shape == (4,) and mask.dtype == bool


def test_bad_segment_on_the_cli_is_exit_2_without_traceback(edge_bundle, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    argv = ["export", "--artifacts", str(edge_bundle), "--out", str(tmp_path / "o.csv"),
            "--k", "3", "--feature-store", "none", "--segment", 'region == "US" and (']  # fmt: skip
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert err.startswith("recsvc export: error: bad segment expression"), err
    assert err.splitlines()[-1].strip() == "^"  # the caret layout is kept
    assert not (tmp_path / "o.csv").exists()
