"""``recsvc experiments create|list|show|stop|report``: A/B experiments in the feature store.

Definitions are stored in the feature store (namespace ``experiments``) so every server
replica picks them up within its refresh interval, without a restart.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import yaml

from feature_store.base import OnlineStore
from feature_store.factory import DEFAULT_STORE_URL
from recsvc.errors import UsageError
from recsvc.experiments import manage
from recsvc.experiments.definition import OVERRIDE_KEYS, Experiment, load_experiment_file
from recsvc.experiments.stats import MIXING_RELATIVE_SD

STORE_ENV = "RECSVC_FEATURE_STORE"

FILE_EPILOG = """\
experiment file (YAML):
  name: artwork-policy
  salt: artwork-policy-2026-11
  traffic: 1.0
  segment: 'region in ("US-9", "CA")'
  variants:
    - {name: control, weight: 0.5}
    - {name: contextual, weight: 0.5, overrides: {bandit_policy: lints}}
optional fields: holdout (share kept on defaults), layer (experiments of one layer are
mutually exclusive), start, stop (ISO-8601), description.
override keys: """ + ", ".join(OVERRIDE_KEYS)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.description = (
        "Define, run and report A/B experiments. Definitions live in the feature store, so "
        "running servers pick up changes within seconds."
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--feature-store",
        metavar="URL",
        default=os.environ.get(STORE_ENV, DEFAULT_STORE_URL),
        help=f"sqlite:///PATH or redis://HOST:PORT/DB "
        f"(default: ${STORE_ENV} or {DEFAULT_STORE_URL})",
    )
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    fmt = argparse.RawDescriptionHelpFormatter

    create = sub.add_parser(
        "create",
        parents=[common],
        formatter_class=fmt,
        help="validate and store an experiment",
        description="Validate an experiment file and store it; nothing is stored if invalid.",
        epilog=FILE_EPILOG,
    )
    create.add_argument("--file", required=True, type=Path, help="experiment YAML file")
    create.add_argument(
        "--artifacts",
        metavar="ROOT",
        type=Path,
        help="bundle root (default: $RECSVC_ARTIFACTS, as serve): model_version overrides "
        "must name a version published there, and segment fields must be user features of "
        "its current bundle (or region); a segment naming another field needs one",
    )
    create.add_argument(
        "--allow-unchecked-segment",
        action="store_true",
        help="store a segment whose fields cannot be checked (no bundle to read user "
        "features from) instead of refusing it; a field no user has matches nobody",
    )
    create.add_argument(
        "--replace", action="store_true", help="redefine an experiment of the same name"
    )
    create.add_argument("--dry-run", action="store_true", help="validate only, store nothing")

    sub.add_parser("list", parents=[common], help="list stored experiments")

    show = sub.add_parser("show", parents=[common], help="print one experiment's definition")
    show.add_argument("name", help="experiment name")

    stop = sub.add_parser("stop", parents=[common], help="stop an experiment (users get defaults)")
    stop.add_argument("name", help="experiment name")

    report = sub.add_parser(
        "report",
        parents=[common],
        help="per-variant metrics, lifts with 95%% CIs, SRM and sequential p-values",
    )
    report.add_argument("name", help="experiment name")
    report.add_argument(
        "--format",
        choices=("table", "json", "csv"),
        default="table",
        help="table (default) for people, json/csv for tools; warnings go to stderr",
    )
    report.add_argument(
        "--plot", metavar="FILE.png", type=Path, help="PNG of each metric with its CI over time"
    )
    report.add_argument(
        "--mixing-sd",
        type=float,
        default=MIXING_RELATIVE_SD,
        metavar="REL",
        help="mSPRT mixing sd as a share of the control's value "
        f"(default {MIXING_RELATIVE_SD}: tuned for lifts around that size)",
    )


def run(args: argparse.Namespace) -> int:
    actions = {
        "create": _create,
        "list": _list,
        "show": _show,
        "stop": _stop,
        "report": _report,
    }
    with _open(args.feature_store) as store:
        return actions[args.action](store, args)


@contextmanager
def _open(url: str) -> Iterator[OnlineStore]:
    from feature_store.factory import open_store

    store = open_store(url)
    try:
        yield store
    finally:
        store.close()


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def stored_experiments(store: OnlineStore) -> dict[str, Experiment]:
    """Every stored definition that still validates (others are reported, not fatal)."""
    return manage.stored_experiments(store, _warn)


def _model_versions(root: Path | None, experiment: Experiment) -> list[str] | None:
    wants_version = any(v.overrides.model_version for v in experiment.variants)
    if root is None:
        if wants_version:
            print(
                "warning: model_version overrides not checked (no --artifacts ROOT given)",
                file=sys.stderr,
            )
        return None
    return manage.model_versions_under(root)


def _artifacts(args: argparse.Namespace) -> Path | None:
    """--artifacts, else serve's $RECSVC_ARTIFACTS."""
    root = args.artifacts
    if root is None and os.environ.get("RECSVC_ARTIFACTS"):
        root = Path(os.environ["RECSVC_ARTIFACTS"])
    return root


def _no_bundle_because(root: Path | None) -> str:
    if root is None:
        return "no --artifacts ROOT nor RECSVC_ARTIFACTS"
    return f"{root} has no current bundle"


def _create(store: OnlineStore, args: argparse.Namespace) -> int:
    source = str(args.file)
    experiment = load_experiment_file(args.file)
    root = _artifacts(args)
    known_fields = manage.segment_fields(root)
    placed = manage.prepare_experiment(
        store,
        experiment,
        source=source,
        model_versions=_model_versions(root, experiment),
        known_fields=known_fields,
        replace=args.replace,
        on_invalid=_warn,
        allow_unchecked_segment=args.allow_unchecked_segment,
        no_fields_because=_no_bundle_because(root),
    )
    unchecked = manage.unverifiable_fields(experiment, known_fields, source)
    if unchecked:  # stored only with --allow-unchecked-segment
        _warn(
            f"segment field(s) {', '.join(unchecked)} not checked against the model's user "
            f"features ({_no_bundle_because(root)}): a field no user has matches nobody"
        )
    if args.dry_run:
        print(f"experiment {placed.name!r} is valid (dry run: nothing stored)")
        return 0
    manage.store_experiment(store, placed)
    variants = ", ".join(f"{v.name}={v.weight:g}" for v in placed.variants)
    where = f", layer {placed.layer} buckets {placed.layer_range()}" if placed.layer else ""
    print(f"created experiment {placed.name!r}: traffic {placed.traffic:g}, {variants}{where}")
    return 0


def _state(experiment: Experiment) -> str:
    return manage.experiment_state(experiment)


def _list(store: OnlineStore, args: argparse.Namespace) -> int:
    experiments = stored_experiments(store)
    if not experiments:
        print("no experiments defined")
        return 0
    header = ("name", "state", "traffic", "layer", "variants", "created")
    rows = [
        (
            e.name,
            _state(e),
            f"{e.traffic:g}",
            e.layer or "-",
            ",".join(v.name for v in e.variants),
            e.created_at.strftime("%Y-%m-%d %H:%M") if e.created_at else "-",
        )
        for e in sorted(experiments.values(), key=lambda e: e.name)
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return 0


def _get(store: OnlineStore, name: str) -> Experiment:
    from recsvc.experiments.report import load_definition

    return load_definition(store, name)


def _show(store: OnlineStore, args: argparse.Namespace) -> int:
    experiment = _get(store, args.name)
    doc = experiment.to_document()
    doc["state"] = _state(experiment)
    if experiment.layer:
        doc["layer_buckets"] = list(experiment.layer_range() or ())
    sys.stdout.write(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))
    return 0


def _stop(store: OnlineStore, args: argparse.Namespace) -> int:
    stopped, was_running = manage.stop_experiment(store, args.name)
    if not was_running:
        print(f"experiment {stopped.name!r} was already stopped")
        return 0
    print(f"stopped experiment {stopped.name!r}: users get the defaults from now on")
    return 0


def _report(store: OnlineStore, args: argparse.Namespace) -> int:
    from recsvc.experiments.report import (
        build_report,
        format_csv,
        format_json,
        format_table,
        plot_report,
    )

    if not 0 < args.mixing_sd <= 10:
        raise UsageError(f"--mixing-sd {args.mixing_sd}: must be in (0, 10]")
    report = build_report(store, args.name, args.mixing_sd)
    formatters = {"table": format_table, "json": format_json, "csv": format_csv}
    sys.stdout.write(formatters[args.format](report))
    if args.format != "table":
        for i, warning in enumerate(report.warnings()):
            loud = report.srm_warning and i == 0
            print(("!!! " if loud else "note: ") + warning, file=sys.stderr)
    if args.plot is not None:
        path = plot_report(report, args.plot)
        print(f"plot written to {path}", file=sys.stderr)
    return 0
