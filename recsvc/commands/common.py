"""Arguments shared by the commands that read a bundle and write a table (export, audience)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_bundle_and_output(parser: argparse.ArgumentParser) -> None:
    """``--artifacts ROOT`` (a bundle root or one version) and ``--out FILE`` (.csv/.parquet)."""
    parser.add_argument(
        "--artifacts",
        required=True,
        type=Path,
        metavar="ROOT",
        help="bundle root (follows ROOT/current) or one version directory",
    )
    parser.add_argument(
        "--out", required=True, type=Path, metavar="FILE", help="output file, .csv or .parquet"
    )
