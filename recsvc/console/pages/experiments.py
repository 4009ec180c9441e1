"""Experiments page: the stored definitions, each one's report (the numbers of
``recsvc experiments report --format json``), create from YAML and stop."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from feature_store.base import OnlineStore
from recsvc.console.svg import Series, line_chart
from recsvc.experiments import manage
from recsvc.experiments.definition import Experiment, parse_experiment_yaml
from recsvc.experiments.report import build_report, load_definition
from recsvc.experiments.stats import MIXING_RELATIVE_SD

FORM_SOURCE = "experiment form"


def listing(store: OnlineStore) -> dict[str, Any]:
    problems: list[str] = []
    experiments = manage.stored_experiments(store, problems.append)
    rows = [
        {
            "name": e.name,
            "state": manage.experiment_state(e),
            "traffic": e.traffic,
            "holdout": e.holdout,
            "layer": e.layer or "",
            "segment": e.segment or "",
            "variants": [(v.name, v.weight) for v in e.variants],
            "created": e.created_at.strftime("%Y-%m-%d %H:%M") if e.created_at else "",
        }
        for e in sorted(experiments.values(), key=lambda e: e.name)
    ]
    return {"experiments": rows, "problems": problems}


def report(store: OnlineStore, name: str) -> dict[str, Any]:
    """The report as the CLI's JSON has it, plus SVG charts of its daily series."""
    result = build_report(store, name, MIXING_RELATIVE_SD)
    data = result.to_json()
    variants = [v["name"] for v in data["variants"]]
    dates = sorted({row["date"] for row in data["series"]})
    by = {(row["date"], row["variant"]): row for row in data["series"]}

    def series(key: str, lo: str, hi: str, skip_control: bool = False) -> list[Series]:
        out = []
        for i, variant in enumerate(variants):
            if skip_control and i == 0:
                continue
            rows = [by.get((d, variant), {}) for d in dates]
            out.append(
                Series(
                    variant,
                    [r.get(key) for r in rows],
                    [r.get(lo) for r in rows],
                    [r.get(hi) for r in rows],
                )
            )
        return out

    charts = [
        line_chart("CTR, 95% CI", dates, series("ctr", "ctr_ci_low", "ctr_ci_high")),
        line_chart(
            "conversion, 95% CI",
            dates,
            series("conversion", "conversion_ci_low", "conversion_ci_high"),
        ),
        line_chart(
            "CTR relative lift vs control",
            dates,
            series("lift", "ci_low", "ci_high", skip_control=True),
            zero_line=True,
        ),
        line_chart(
            "sequential p-value (CTR)",
            dates,
            [Series(s.name, s.values) for s in series("seq_p_value", "", "", skip_control=True)],
        ),
    ]
    definition = load_definition(store, name)
    return {
        "report": data,
        "state": manage.experiment_state(definition),
        "definition": definition,
        "days": result.data.days,
        "charts": charts,
    }


def create(store: OnlineStore, text: str, artifacts: Path, *, replace: bool = False) -> Experiment:
    """Validate YAML text exactly as ``recsvc experiments create --artifacts ROOT`` does and
    store it; raises the CLI's ExperimentDefinitionError otherwise."""
    experiment = parse_experiment_yaml(text, FORM_SOURCE)
    placed = manage.prepare_experiment(
        store,
        experiment,
        source=FORM_SOURCE,
        model_versions=manage.model_versions_under(artifacts),
        known_fields=manage.segment_fields(artifacts),
        replace=replace,
    )
    manage.store_experiment(store, placed)
    return placed


def stop(store: OnlineStore, name: str) -> tuple[Experiment, bool]:
    return manage.stop_experiment(store, name)
