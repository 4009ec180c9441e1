"""What ``recsvc train`` and ``recsvc retrain`` hand the training job for several
``--data`` folders and ``--promote`` (``training.events`` merge, ``training.gate``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from recsvc.errors import UsageError


def gate_hooks(args: argparse.Namespace, config: Any) -> tuple[Any, Any]:
    """(``load``, ``gate``) for ``training.pipeline.run_training`` from ``--data`` (one or
    several folders) and ``--promote`` with its holdout and tolerances."""
    from training.errors import TrainingError
    from training.events import load_sources
    from training.gate import GateConfig, decide, fixed_decision

    folders = [Path(d) for d in args.data]
    try:
        gate_config = GateConfig(
            holdout_fraction=args.holdout_fraction,
            ndcg_tolerance=args.ndcg_tolerance,
            coverage_tolerance=args.coverage_tolerance,
            seed=config.seed,
        )
    except TrainingError as exc:
        raise UsageError(str(exc)) from None
    load = None
    if len(folders) > 1:

        def load() -> Any:
            dataset, report = load_sources(folders, config.event_weights)
            if report is not None and not args.quiet:
                print(
                    f"merged {len(folders)} folders: {report.rows_in} rows in, "
                    f"{report.duplicate_event_ids} duplicate event ids and "
                    f"{report.duplicate_rows} duplicate rows removed, "
                    f"{report.rows_unknown_item} rows on unknown items dropped, "
                    f"{report.users_added} users known only from events added; "
                    f"{report.rows_out} rows",
                    file=sys.stderr,
                )
            return dataset

    mode, root = args.promote, args.out

    def gate(dataset: Any, matrix: Any, bundle: Any) -> tuple[bool, dict[str, Any]]:
        if mode == "if-better":
            return decide(dataset, matrix, bundle, root, gate_config)
        return fixed_decision(mode, dataset)

    return load, gate
