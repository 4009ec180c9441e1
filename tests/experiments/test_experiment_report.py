"""Report numbers on small logs written to a real SQLite store, checked by hand."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats as sps

from feature_store.base import ExposureRecord, OnlineStore, StoredEvent
from recsvc.cli import main as cli_main
from recsvc.experiments.definition import parse_experiment
from recsvc.experiments.report import build_report, format_csv, format_table, plot_report
from recsvc.experiments.router import NAMESPACE, ExperimentRouter

T0 = 1_793_491_200_000  # 2026-11-01T00:00:00Z
H = 3_600_000
D = 24 * H


def _define(store: OnlineStore, name: str = "exp", salt: str = "exp-salt") -> None:
    doc = parse_experiment(
        {
            "name": name,
            "salt": salt,
            "variants": [{"name": "control", "weight": 0.5}, {"name": "treat", "weight": 0.5}],
        }
    ).to_document()
    store.put_document(NAMESPACE, name, doc)


def _exp(rid: str, user: str, ts: int, items: list[str], variant: str, experiment: str = "exp"):
    n = len(items)
    return ExposureRecord(
        rid, user, ts, items, ["art"] * n, [1.0] * n, "v1", experiment, variant, "default"
    )


def _ev(eid: str, user: str, item: str, kind: str, ts: int, rid: str = "") -> StoredEvent:
    return StoredEvent(eid, user, item, kind, ts, rid, "")


def _write_hand_case(store: OnlineStore) -> None:
    _define(store)
    store.log_exposures(
        [
            _exp("r1", "a", T0 + H, ["i1", "i2", "i3"], "control"),
            _exp("r3", "b", T0 + 2 * H, ["i1", "i2"], "control"),
            _exp("r4", "c", T0 + 3 * H, [], "control"),  # assigned, never shown anything
            _exp("r5", "d", T0 + H, ["i1", "i2"], "treat"),
            _exp("r7", "f", T0 + 4 * H, ["i9"], "treat"),
            _exp("r8", "g", T0 + 5 * H, ["i1"], "x,treat", experiment="other,exp"),
            _exp("rX", "z", T0 + H, ["i1"], "control", experiment="other"),
            _exp("r2", "a", T0 + D + H, ["i4"], "control"),
            _exp("r6", "e", T0 + D + 2 * H, ["i1", "i2", "i3"], "treat"),
        ]
    )
    s = 1000
    events = [
        *[_ev(f"a-imp-{i}", "a", i, "impression", T0 + H + s, "r1") for i in ("i1", "i2", "i3")],
        _ev("a-clk-1", "a", "i2", "click", T0 + H + 2 * s, "r1"),
        _ev("a-clk-1", "a", "i2", "click", T0 + H + 3 * s, "r1"),  # duplicate id: once
        _ev("a-imp-4", "a", "i4", "impression", T0 + D + H + s, "r2"),
        _ev("a-clk-4", "a", "i4", "click", T0 + D + H + 2 * s, "r2"),
        _ev("a-buy", "a", "i7", "purchase", T0 + D + 3 * H),  # no request: after exposure
        *[_ev(f"b-imp-{i}", "b", i, "impression", T0 + 2 * H + s, "r3") for i in ("i1", "i2")],
        _ev("b-buy", "b", "i5", "purchase", T0 + H),  # before b's first exposure: not counted
        _ev("c-clk", "c", "i1", "click", T0 + 5 * H),  # c was never exposed: not counted
        *[_ev(f"d-imp-{i}", "d", i, "impression", T0 + H + s, "r5") for i in ("i1", "i2")],
        *[_ev(f"d-clk-{i}", "d", i, "click", T0 + H + 2 * s, "r5") for i in ("i1", "i2")],
        _ev("d-buy", "d", "i1", "purchase", T0 + 2 * H, "r5"),
        *[
            _ev(f"e-imp-{i}", "e", i, "impression", T0 + D + 2 * H + s, "r6")
            for i in ("i1", "i2", "i3")
        ],
        _ev("e-clk", "e", "i3", "click", T0 + D + 2 * H + 2 * s, "r6"),
        _ev("f-imp", "f", "i9", "impression", T0 + 4 * H + s, "r7"),
        _ev("g-imp", "g", "i1", "impression", T0 + 5 * H + s, "r8"),
        _ev("g-clk", "g", "i1", "click", T0 + 5 * H + 2 * s, "r8"),
        _ev("z-clk", "z", "i1", "click", T0 + H + 2 * s, "rX"),  # other experiment
        _ev("a-atc", "a", "i2", "add_to_cart", T0 + H + 4 * s, "r1"),  # not a report metric
    ]
    store.record_events(events)


def _delta_var(clicks: list[float], imps: list[float]) -> float:
    n = len(clicks)
    mx, my = sum(clicks) / n, sum(imps) / n
    r = mx / my
    sxx = sum((x - mx) ** 2 for x in clicks) / (n - 1)
    syy = sum((y - my) ** 2 for y in imps) / (n - 1)
    sxy = sum((x - mx) * (y - my) for x, y in zip(clicks, imps, strict=True)) / (n - 1)
    return (sxx - 2 * r * sxy + r * r * syy) / (n * my * my)


def test_report_matches_hand_computation(store: OnlineStore) -> None:
    _write_hand_case(store)
    report = build_report(store, "exp")
    control, treat = report.variants
    assert (control["name"], treat["name"]) == ("control", "treat")
    # control: a (4 impressions, 2 clicks, 1 purchase), b (2, 0, 0); c assigned only.
    assert (control["users"], control["exposed_users"]) == (3, 2)
    assert (control["impressions"], control["clicks"], control["purchases"]) == (6, 2, 1)
    # treat: d (2, 2, 1), e (3, 1, 0), f (1, 0, 0), g (1, 1, 0).
    assert (treat["users"], treat["exposed_users"]) == (4, 4)
    assert (treat["impressions"], treat["clicks"], treat["purchases"]) == (7, 4, 1)
    assert control["ctr"] == pytest.approx(2 / 6) and treat["ctr"] == pytest.approx(4 / 7)
    assert control["conversion"] == pytest.approx(0.5)
    assert treat["conversion"] == pytest.approx(0.25)
    assert control["lift"] is None and control["p_value"] is None
    # Each variant's own conversion CI (normal, se² = s²/n) is kept apart from the lift CI.
    z = 1.959963984540054
    assert control["conversion_ci_low"] == pytest.approx(0.5 - z * 0.5)
    assert treat["conversion_ci_high"] == pytest.approx(0.25 + z * math.sqrt(0.25 / 4))
    assert control["conversion_lift_ci_low"] is None
    assert treat["conversion_lift_ci_low"] < treat["conversion_lift"]
    assert (control["clicks_per_user"], treat["clicks_per_user"]) == (1.0, 1.0)
    assert (control["purchases_per_user"], treat["purchases_per_user"]) == (0.5, 0.25)

    vc = _delta_var([2, 0], [4, 2])
    vt = _delta_var([2, 1, 0, 1], [2, 3, 1, 1])
    diff = 4 / 7 - 2 / 6
    z = diff / math.sqrt(vc + vt)
    assert treat["abs_lift"] == pytest.approx(diff)
    assert treat["p_value"] == pytest.approx(2 * sps.norm.sf(abs(z)))
    rel = (4 / 7) / (2 / 6) - 1
    rel_se = math.sqrt(vt / (2 / 6) ** 2 + (4 / 7) ** 2 * vc / (2 / 6) ** 4)
    assert treat["lift"] == pytest.approx(rel)
    assert treat["ci_low"] == pytest.approx(rel - 1.959963984540054 * rel_se)
    assert treat["ci_high"] == pytest.approx(rel + 1.959963984540054 * rel_se)
    welch = sps.ttest_ind([1.0, 0.0, 0.0, 0.0], [1.0, 0.0], equal_var=False)
    assert treat["conversion_p_value"] == pytest.approx(welch.pvalue)
    assert report.srm_p_value == pytest.approx(sps.chisquare([3, 4]).pvalue)
    assert 0 < treat["seq_p_value"] <= 1

    # Daily series: day 0 has a (3 impressions, 1 click) and b (2, 0) in control;
    # d, f, g in treat (e arrives on day 1).
    day0 = {r["variant"]: r for r in report.series if r["date"] == "2026-11-01"}
    assert day0["control"]["ctr"] == pytest.approx(1 / 5)
    assert day0["treat"]["ctr"] == pytest.approx(3 / 4)
    assert day0["treat"]["exposed_users"] == 3
    assert [r["date"] for r in report.series] == ["2026-11-01"] * 2 + ["2026-11-02"] * 2


def test_report_outputs(store: OnlineStore, tmp_path, capsys) -> None:
    _write_hand_case(store)
    report = build_report(store, "exp")
    table = format_table(report)
    assert "control" in table and "treat" in table and "SRM" in table
    rows = format_csv(report).splitlines()
    assert rows[0].startswith("experiment,name,users") and len(rows) == 3
    png = plot_report(report, tmp_path / "plot.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def _log_assigned(store: OnlineStore, keep_treat: float) -> None:
    _define(store, "srm", "srm-salt")
    router = ExperimentRouter(store, background=False)
    records = []
    by_variant: dict[str, list[str]] = {"control": [], "treat": []}
    for i in range(10_000):
        a = router.assign(f"user-{i}", {})
        assert a is not None
        by_variant[a.variant].append(f"user-{i}")
    n_treat = round(len(by_variant["control"]) * keep_treat)
    for variant, users in by_variant.items():
        for j, u in enumerate(users if variant == "control" else users[:n_treat]):
            records.append(_exp(f"req-{u}", u, T0 + j, ["i1"], variant, experiment="srm"))
    store.log_exposures(records)


def test_srm_quiet_on_a_fair_split(store: OnlineStore, capsys) -> None:
    _log_assigned(store, keep_treat=1.0)
    report = build_report(store, "srm")
    assert report.srm_p_value > 0.001 and not report.srm_warning
    assert cli_main(["experiments", "report", "srm", "--feature-store", store.url]) == 0
    assert "SAMPLE RATIO MISMATCH" not in capsys.readouterr().out


def test_srm_fires_on_a_planted_52_48_split(store: OnlineStore, capsys) -> None:
    _log_assigned(store, keep_treat=48 / 52)
    report = build_report(store, "srm")
    users = [v["users"] for v in report.variants]
    assert users[0] / sum(users) == pytest.approx(0.52, abs=0.001)
    assert report.srm_p_value < 0.001 and report.srm_warning
    code = cli_main(
        ["experiments", "report", "srm", "--format", "json", "--feature-store", store.url]
    )
    out = capsys.readouterr()
    assert code == 0 and "SAMPLE RATIO MISMATCH" in out.err
    doc = json.loads(out.out)
    assert doc["srm_p_value"] < 0.001 and doc["srm_warning"] is True


def test_empty_experiment_reports_without_error(store: OnlineStore) -> None:
    _define(store)
    report = build_report(store, "exp")
    assert [v["users"] for v in report.variants] == [0, 0]
    assert np.isnan(report.srm_p_value)
