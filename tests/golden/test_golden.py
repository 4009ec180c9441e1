"""Identical answers before and after a restructuring: the golden scenario, rerun.

``answers.json`` was recorded by ``python -m tests.golden.scenario --write`` on the code
before the consolidation of the pipeline rules (commit 0ed29e7); every Recommend,
RankItems, SelectArtwork and SimilarItems answer of the mix, and every export and audience
row, must stay the same (scores within 1e-5, order exact). A deliberate change of
behaviour re-records the file in the same commit and says why.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.golden.scenario import ANSWERS, differences, run_scenario


def test_answers_are_unchanged(tmp_path: Path) -> None:
    expected = json.loads(ANSWERS.read_text())
    actual = json.loads(json.dumps(run_scenario(tmp_path)))  # the recorder's JSON types
    found = differences(expected, actual)
    assert not found, "answers differ from tests/golden/answers.json:\n" + "\n".join(found)


def test_the_comparison_sees_a_change() -> None:
    expected = {"Recommend": {"a": {"items": [["i001", 0.5, "r", "v", 1.0]]}}}
    same = {"Recommend": {"a": {"items": [["i001", 0.5 + 1e-7, "r", "v", 1.0]]}}}
    moved = {"Recommend": {"a": {"items": [["i002", 0.5, "r", "v", 1.0]]}}}
    rescored = {"Recommend": {"a": {"items": [["i001", 0.501, "r", "v", 1.0]]}}}
    assert differences(expected, same) == []
    assert differences(expected, moved) == ["/Recommend/a/items[0][0]: expected 'i001', got 'i002'"]
    assert len(differences(expected, rescored)) == 1
    assert differences(expected, {"Recommend": {}}) == ["/Recommend/a: missing"]
