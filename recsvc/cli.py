"""The ``recsvc`` console script.

Each subcommand lives in ``recsvc/commands/<name>.py`` with ``add_arguments(parser)`` and
``run(args) -> int``; only the chosen one is imported, so ``recsvc --help`` stays fast.
User-facing errors print one line (no traceback) and exit 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

COMMANDS: dict[str, tuple[str, str]] = {
    "demo-data": ("recsvc.commands.demo_data", "write a synthetic storefront dataset"),
    "train": ("recsvc.commands.train", "train models and publish an artifact bundle"),
    "evaluate": ("recsvc.commands.evaluate", "offline metrics of every model vs baselines"),
    "materialize": ("recsvc.commands.materialize", "load profiles/items into a feature store"),
    "serve": ("recsvc.commands.serve", "run the gRPC server"),
    "query": ("recsvc.commands.query", "ask a running server for recommendations"),
    "export": ("recsvc.commands.export", "top-N per user for a segment to CSV/Parquet"),
    "audience": ("recsvc.commands.audience", "top users per item to CSV/Parquet"),
    "bandit": ("recsvc.commands.bandit", "artwork bandit tools (off-policy evaluation)"),
    "experiments": ("recsvc.commands.experiments", "define, run and report A/B experiments"),
    "console": ("recsvc.commands.console", "operator web console (experiments, models, live)"),
    "events": ("recsvc.commands.events", "export online events as training interactions"),
    "bundles": ("recsvc.commands.bundles", "list, promote, roll back and prune bundle versions"),
    "retrain": ("recsvc.commands.retrain", "scheduled loop: export events, train, gate, promote"),
}


def _user_errors() -> tuple[type[BaseException], ...]:
    from feature_store.errors import FeatureStoreError
    from recsvc.errors import RecsvcError
    from training.errors import TrainingError

    return (RecsvcError, TrainingError, FeatureStoreError)


def build_parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="recsvc",
        description="Recommendation and personalization microservice.",
    )
    parser.add_argument("--version", action="version", version="recsvc 0.1.0")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    chosen = argv[0] if argv else None
    for name, (module_name, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:
            module = importlib.import_module(module_name)
            module.add_arguments(p)
            p.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(args_list)
    args = parser.parse_args(args_list)
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except _user_errors() as exc:
        print(f"recsvc {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except OSError as exc:  # a path, permission, disk or socket problem of the environment
        print(f"recsvc {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 2


def _one_line(exc: BaseException) -> str:
    """The message on one line (a value quoted into it may hold newlines), unless its
    error lays it out on purpose (a segment expression with a caret under the problem)."""
    if getattr(exc, "keeps_layout", False):
        return str(exc)
    return " ".join(str(exc).split()) or type(exc).__name__


if __name__ == "__main__":
    raise SystemExit(main())
