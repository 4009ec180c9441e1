"""The promotion gate's extra cost as a share of train time, at 1M and 5M interactions.

For each size: ``recsvc demo-data`` (Parquet); the older 90% of the interactions (by time)
are trained into ``current`` (``--promote always``); then ``recsvc train`` on all of them
with ``--promote if-better`` (the gate refits the chosen recipe on the rows before the
cut-off and scores it and ``current`` on the newest rows, which ``current`` never saw).
Share = the ``gate`` stage's seconds / the rest of that run's stages. Both trains use
``--no-tune --no-hybrid --factors 64 --iterations N`` (the ALS path; a search or LightFM
would only make the share smaller).

    .venv/bin/python -m tests.benchmarks.bench_gate [--sizes 1M 5M] [--iterations 5]

Writes $BENCH_OUT/gate/results.json and prints one row per size.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
SIZES: dict[str, tuple[int, int, int]] = {
    "200k": (10_000, 2_000, 200_000),
    "1M": (50_000, 5_000, 1_000_000),
    "5M": (250_000, 25_000, 5_000_000),
}


def _out_dir() -> Path:
    out = Path(os.environ.get("BENCH_OUT", REPO / "var" / "bench")) / "gate"
    out.mkdir(parents=True, exist_ok=True)
    return out


def _cli(args: list[str], log: Path) -> float:
    start = time.perf_counter()
    with open(log, "w") as err:
        done = subprocess.run([sys.executable, "-m", "recsvc.cli", *args], stderr=err, check=False)
    if done.returncode not in (0, 3):
        raise SystemExit(f"{' '.join(args)} failed ({done.returncode}); see {log}")
    return time.perf_counter() - start


def _older_part(data: Path, target: Path, fraction: float) -> None:
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    target.mkdir(parents=True, exist_ok=True)
    for path in data.iterdir():
        if path.name != "interactions.parquet":
            shutil.copy(path, target / path.name)
    table = pq.read_table(data / "interactions.parquet")
    stamps = table.column("timestamp")
    cut = pc.quantile(stamps, q=1 - fraction, interpolation="lower")[0]
    pq.write_table(table.filter(pc.less(stamps, cut)), target / "interactions.parquet")


def run_size(name: str, iterations: int, out: Path) -> dict[str, Any]:
    users, items, interactions = SIZES[name]
    data, old, root = out / f"data-{name}", out / f"data-{name}-older", out / f"bundles-{name}"
    if not (data / "interactions.parquet").exists():
        args = ["demo-data", "--out", str(data), "--users", str(users), "--items", str(items)]
        args += ["--interactions", str(interactions), "--seed", "3", "--format", "parquet"]
        _cli(args, out / f"demo-data-{name}.log")
    shutil.rmtree(old, ignore_errors=True)
    shutil.rmtree(root, ignore_errors=True)
    _older_part(data, old, 0.1)
    common = ["--out", str(root), "--no-tune", "--no-hybrid", "--factors", "64"]
    common += ["--iterations", str(iterations), "--quiet"]
    first = out / f"train-{name}-current.json"
    _cli(["train", "--data", str(old), *common, "--report", str(first)], out / f"t1-{name}.log")
    report = out / f"train-{name}-gated.json"
    wall = _cli(
        ["train", "--data", str(data), *common, "--promote", "if-better", "--report", str(report)],
        out / f"t2-{name}.log",
    )
    summary = json.loads(report.read_text())
    stages = {k: float(v["seconds"]) for k, v in summary["stages"].items()}
    gate = stages.pop("gate")
    rest = sum(stages.values())
    manifest = json.loads((Path(summary["path"]) / "manifest.json").read_text())
    promotion = manifest["promotion"]
    return {
        "size": name,
        "interactions": interactions,
        "iterations": iterations,
        "gate_s": round(gate, 2),
        "train_s": round(rest, 2),
        "share": round(gate / rest, 4),
        "als_s": stages.get("als"),
        "stages": stages,
        "wall_s": round(wall, 1),
        "decision": promotion["decision"],
        "holdout": promotion.get("holdout"),
        "candidate": promotion.get("candidate"),
        "current_scores": promotion.get("current_scores"),
        "peak_rss_mib": summary.get("peak_rss_mib"),
        "load_avg": os.getloadavg(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["1M", "5M"], choices=list(SIZES))
    parser.add_argument("--iterations", type=int, default=5)
    args = parser.parse_args()
    out = _out_dir()
    results = []
    for name in args.sizes:
        row = run_size(name, args.iterations, out)
        results.append(row)
        print(
            f"{name}: gate {row['gate_s']:.1f} s / train {row['train_s']:.1f} s = "
            f"{row['share']:.1%} (als {row['als_s']:.1f} s; {row['decision']}; holdout "
            f"{row['holdout']}; load {row['load_avg'][0]:.1f})",
            flush=True,
        )
        (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
