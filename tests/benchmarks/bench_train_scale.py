"""Benchmark 3 of issue 2: ``recsvc train`` at 1M / 5M / 20M interactions.

For each size: demo data from ``recsvc demo-data`` (Parquet), then ``recsvc train`` as a
subprocess (its peak RSS from wait4, per-stage wall time and peak RSS from ``--report``),
then, in another subprocess on the *same* matrix (the bundle's ``user_items``), the
baseline: a raw ``implicit`` ALS fit with the same factors/iterations/regularization/alpha
plus a FAISS build of the same index type. Ratio = our ALS path (load + als + index + bundle
stages, i.e. load/validate, weight, fit, index, publish) / baseline (fit + FAISS build).

    .venv/bin/python -m tests.benchmarks.bench_train_scale [--quick] [--sizes 1M 5M 20M]

Writes $BENCH_OUT/train_scale/{results.json,train_scale.md,train_scale.png}.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
# name -> (users, items, interactions)
SIZES: dict[str, tuple[int, int, int]] = {
    "200k": (10_000, 2_000, 200_000),
    "1M": (50_000, 5_000, 1_000_000),
    "5M": (250_000, 25_000, 5_000_000),
    "20M": (1_000_000, 100_000, 20_000_000),
}
ALS_PATH = ("load", "als", "index", "bundle")
STAGES = (
    "load",
    "search",
    "als",
    "lightfm",
    "popularity",
    "index",
    "catalog",
    "candidates",
    "region_lists",
)
STAGES_ALL = (*STAGES, "bundle")
TARGET_RATIO = 1.25
MEMORY_LIMIT_MIB = 24 * 1024


def _out_dir() -> Path:
    out = Path(os.environ.get("BENCH_OUT", REPO / "var" / "bench")) / "train_scale"
    out.mkdir(parents=True, exist_ok=True)
    return out


def _run(cmd: list[str], log: Path) -> tuple[float, int]:
    """Run a command (stderr to ``log``); (wall seconds, peak RSS MiB of that process)."""
    start = time.perf_counter()
    with open(log, "w") as err:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=err, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}); see {log}")
    return time.perf_counter() - start, int(usage.ru_maxrss // 1024)


def _demo_data(out: Path, name: str) -> Path:
    users, items, interactions = SIZES[name]
    data = out / f"data-{name}"
    if not (data / "interactions.parquet").exists():
        cmd = [sys.executable, "-m", "recsvc.cli", "demo-data", "--out", str(data)]
        cmd += ["--users", str(users), "--items", str(items)]
        cmd += ["--interactions", str(interactions), "--seed", "3", "--format", "parquet"]
        seconds, _ = _run(cmd, out / f"demo-data-{name}.log")
        print(f"  demo data {name}: {seconds:.0f}s", flush=True)
    return data


def _train(
    out: Path,
    name: str,
    data: Path,
    tune_budget: float | None,
    hybrid: bool,
    iterations: int | None,
) -> dict[str, Any]:
    root = out / f"root-{name}"
    report = out / f"train-{name}.json"
    cmd = [sys.executable, "-m", "recsvc.cli", "train", "--data", str(data), "--out", str(root)]
    cmd += ["--factors", "64", "--report", str(report)]
    cmd += ["--no-tune"] if tune_budget is None else ["--tune-budget", str(tune_budget)]
    cmd += [] if hybrid else ["--no-hybrid"]
    cmd += [] if iterations is None else ["--iterations", str(iterations)]
    started, load_before = _utc(), os.getloadavg()
    seconds, peak = _run(cmd, out / f"train-{name}.log")
    summary = json.loads(report.read_text())
    summary.update(
        started_utc=started,
        load_average_before=load_before,
        load_average_after=os.getloadavg(),
        wall_seconds=round(seconds, 1),
        process_peak_rss_mib=peak,
        command=" ".join(["recsvc", *cmd[3:]]),
    )
    return summary


def _baseline(
    out: Path, name: str, source: Path, iterations: int | None, tag: str = ""
) -> dict[str, Any]:
    """Raw fit + FAISS build in a subprocess; ``source`` is a bundle or a data folder."""
    result = out / f"baseline-{name}{tag}.json"
    cmd = [sys.executable, "-m", "tests.benchmarks.bench_train_scale", "--baseline", str(source)]
    cmd += ["--result", str(result)]
    cmd += [] if iterations is None else ["--iterations", str(iterations)]
    wall, peak = _run(cmd, out / f"baseline-{name}{tag}.log")
    data = json.loads(result.read_text())
    data.update(process_peak_rss_mib=peak, process_wall_seconds=round(wall, 1))
    return data


def _baseline_inputs(source: Path, iterations: int | None) -> tuple[Any, dict[str, Any]]:
    """(users x items matrix, parameters) the raw run uses: from a bundle's ``user_items``
    and manifest, or, before any bundle exists, folded from the data folder exactly as
    ``recsvc train --factors 64 --no-tune`` folds it, with its defaults."""
    import scipy.sparse as sp

    if (source / "interactions.parquet").exists() or (source / "interactions.csv").exists():
        from training.config import TrainConfig
        from training.data import build_matrix, load_dataset
        from training.index import EF_CONSTRUCTION, HNSW_M
        from training.models.als import ALS_DEFAULTS

        config = TrainConfig()
        matrix = sp.csr_matrix(build_matrix(load_dataset(source)).matrix, dtype="float32")
        params = {**ALS_DEFAULTS, "factors": 64, "random_state": config.seed}
        if iterations is not None:
            params["iterations"] = iterations
        n_items = matrix.shape[1]
        hnsw = n_items >= config.index_threshold
        index = {"kind": "hnsw" if hnsw else "flat", "hnsw_m": HNSW_M}
        index["ef_construction"] = EF_CONSTRUCTION
        return matrix, {"params": params, "index": index, "source": "data"}
    from recsvc.bundle import load_bundle

    bundle = load_bundle(source, verify_checksums=False)
    manifest, matrix = bundle.manifest, sp.csr_matrix(bundle.user_items)
    index = dict(manifest["index"])
    if index.get("hnsw_m") is None:  # HNSW built, then exact shipped: HNSW was the work
        from training.index import EF_CONSTRUCTION, HNSW_M

        index.update(hnsw_m=HNSW_M, ef_construction=EF_CONSTRUCTION)
        index["kind"] = "hnsw" if int(index["n_items"]) >= int(index["threshold"]) else "flat"
    return matrix, {"params": manifest["model"]["params"], "index": index, "source": "bundle"}


def baseline(source: Path, result: Path, iterations: int | None = None) -> None:
    """Raw implicit fit + FAISS build on the same matrix, same parameters (timed)."""
    import faiss
    import implicit.cpu.als  # loaded before threadpool_limits so the limit reaches it
    import numpy as np
    from threadpoolctl import threadpool_limits

    matrix, inputs = _baseline_inputs(source, iterations)
    p, idx = inputs["params"], inputs["index"]
    started, load_before = _utc(), os.getloadavg()
    start = time.perf_counter()
    with threadpool_limits(1, "blas"):
        model = implicit.cpu.als.AlternatingLeastSquares(
            factors=int(p["factors"]),
            regularization=float(p["regularization"]),
            alpha=float(p["alpha"]),
            iterations=int(p["iterations"]),
            random_state=int(p["random_state"]),
        )
        model.fit(matrix, show_progress=False)
    fit_s = time.perf_counter() - start
    factors = np.ascontiguousarray(model.item_factors, dtype=np.float32)
    start = time.perf_counter()
    index: Any
    if idx["kind"] == "hnsw":
        index = faiss.IndexHNSWFlat(factors.shape[1], idx["hnsw_m"], faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = idx["ef_construction"]
    else:
        index = faiss.IndexFlatIP(factors.shape[1])
    index.add(factors)
    faiss_s = time.perf_counter() - start
    summary = {
        "fit_seconds": fit_s,
        "faiss_seconds": faiss_s,
        "started_utc": started,
        "finished_utc": _utc(),
        "load_average_before": load_before,
        "load_average": os.getloadavg(),
        "params": {k: p[k] for k in ("factors", "regularization", "alpha", "iterations")},
        "index": {k: idx.get(k) for k in ("kind", "hnsw_m", "ef_construction")},
        "inputs_from": inputs["source"],
        "nnz": int(matrix.nnz),
    }
    result.write_text(json.dumps(summary))


def _utc() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _collect(out: Path, name: str) -> dict[str, Any]:
    """A row from the files a run left: train-NAME.json and baseline-NAME[-a|-b].json."""
    train = json.loads((out / f"train-{name}.json").read_text())
    train.setdefault("wall_seconds", train["total_seconds"])
    train.setdefault("process_peak_rss_mib", round(train["peak_rss_mib"]))
    bases = [
        json.loads(path.read_text())
        for tag in ("-a", "", "-b")
        if (path := out / f"baseline-{name}{tag}.json").exists()
    ]
    if not bases:
        raise SystemExit(f"no baseline-{name}*.json in {out}")
    return _row(name, train, bases)


def _path_seconds(train: dict[str, Any]) -> float:
    return sum(train["stages"][s]["seconds"] for s in ALS_PATH if s in train["stages"])


def _say_baseline(base: dict[str, Any]) -> None:
    print(
        f"  raw implicit+FAISS: fit {base['fit_seconds']:.1f}s + build "
        f"{base['faiss_seconds']:.1f}s (ended {base.get('finished_utc', base['started_utc'])}, "
        f"load {base['load_average']})",
        flush=True,
    )


def _row(name: str, train: dict[str, Any], bases: list[dict[str, Any]]) -> dict[str, Any]:
    """Ratio of our ALS path to the mean of the raw runs (and to each one)."""
    stages = train["stages"]
    ours = _path_seconds(train)
    each = [b["fit_seconds"] + b["faiss_seconds"] for b in bases]
    theirs = sum(each) / len(each)
    return {
        "size": name,
        "users_items_interactions": SIZES[name],
        "stages": stages,
        "wall_seconds": train["wall_seconds"],
        "process_peak_rss_mib": train["process_peak_rss_mib"],
        "command": train.get("command", ""),
        "train_started_utc": train.get("started_utc"),
        "als_path_seconds": round(ours, 2),
        "baseline_seconds": round(theirs, 2),
        "baseline_runs_seconds": [round(v, 2) for v in each],
        "ratios_each": [round(ours / v, 3) for v in each],
        "baseline": bases[0],
        "baselines": bases,
        "ratio": round(ours / theirs, 3),
        "ratio_met": ours / theirs <= TARGET_RATIO,
        "memory_met": train["process_peak_rss_mib"] <= MEMORY_LIMIT_MIB,
    }


def _markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| size (users × items × interactions) | "
        + " | ".join(STAGES_ALL)
        + " | total wall | peak RSS | ALS path | raw implicit+FAISS runs | ratio to mean |",
        "|---" * (len(STAGES_ALL) + 6) + "|",
    ]
    for r in rows:
        u, i, n = r["users_items_interactions"]
        cells = []
        for s in STAGES_ALL:
            st = r["stages"].get(s)
            cells.append("—" if st is None else f"{st['seconds']:.1f}s / {st['peak_rss_mib']:.0f}")
        lines.append(
            f"| {r['size']} ({u:,} × {i:,} × {n:,}) | "
            + " | ".join(cells)
            + f" | {r['wall_seconds']:.0f}s | {r['process_peak_rss_mib']:,} MiB"
            + f" | {r['als_path_seconds']:.1f}s"
            + f" | {' / '.join(f'{v:.1f}s' for v in r.get('baseline_runs_seconds', []))}"
            + f" (mean {r['baseline_seconds']:.1f}s)"
            + f" | {r['ratio']:.2f}{' ✓' if r['ratio_met'] else ' ✗'} |"
        )
    return "\n".join(lines) + "\n\n(stage cells: wall seconds / peak RSS MiB during the stage)\n"


def _plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = [r["users_items_interactions"][2] for r in rows]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    for stage in STAGES_ALL:
        ys = [r["stages"].get(stage, {}).get("seconds") for r in rows]
        pts = [(x, y) for x, y in zip(sizes, ys, strict=True) if y]
        if pts:
            ax1.plot(*zip(*pts, strict=True), marker="o", label=stage)
    base = [r["baseline_seconds"] for r in rows]
    ax1.plot(sizes, base, "k--", marker="s", label="raw implicit+FAISS")
    ax1.set(xscale="log", yscale="log", xlabel="interactions", ylabel="seconds")
    ax1.set_title("recsvc train: wall time per stage")
    ax1.legend(fontsize=7)
    ax2.plot(sizes, [r["process_peak_rss_mib"] / 1024 for r in rows], marker="o")
    ax2.axhline(24, color="r", linestyle="--", label="24 GiB budget")
    ax2.set(xscale="log", xlabel="interactions", ylabel="GiB", title="peak RSS of recsvc train")
    ax2.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="only the 200k-interaction size")
    parser.add_argument("--sizes", nargs="*", choices=sorted(SIZES), default=None)
    parser.add_argument("--tune-budget", type=float, default=None, help="run the search too")
    parser.add_argument("--no-hybrid", action="store_true", help="skip the LightFM stage")
    parser.add_argument("--iterations", type=int, default=None, help="ALS iterations")
    parser.add_argument(
        "--interleave",
        action="store_true",
        help="raw run before and after ours (baseline, ours, baseline); ratio vs their mean",
    )
    parser.add_argument(
        "--ready-file",
        action="store_true",
        help="write $BENCH_OUT/train_scale/READY-<size> (the root) once the bundle is published",
    )
    parser.add_argument(
        "--collect",
        action="store_true",
        help="run nothing: rebuild the rows of --sizes from the train-/baseline- JSON files "
        "already in $BENCH_OUT/train_scale (e.g. after the driver was stopped mid-run)",
    )
    parser.add_argument("--baseline", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, default=None, help=argparse.SUPPRESS)
    ns = parser.parse_args(argv if argv is not None else sys.argv[1:])
    if ns.baseline is not None:
        baseline(ns.baseline, ns.result, ns.iterations)
        return 0
    names = ns.sizes or (["200k"] if ns.quick else ["1M", "5M", "20M"])
    out = _out_dir()
    results_path = out / "results.json"
    previous = json.loads(results_path.read_text()) if results_path.exists() else {}
    for name in names if ns.collect else []:
        previous[name] = _collect(out, name)
        results_path.write_text(json.dumps(previous, indent=2))
    for name in [] if ns.collect else names:
        print(
            f"=== train_scale {name} {SIZES[name]} ({_utc()}, load {os.getloadavg()})", flush=True
        )
        data = _demo_data(out, name)
        bases = []
        if ns.interleave:  # baseline, ours, baseline: neighbours' load hits both sides
            bases.append(_baseline(out, name, data, ns.iterations, "-a"))
            _say_baseline(bases[-1])
        train = _train(out, name, data, ns.tune_budget, not ns.no_hybrid, ns.iterations)
        bundle = Path(train["path"])
        if ns.ready_file:
            (out / f"READY-{name}").write_text(str(out / f"root-{name}") + "\n")
        print(
            f"  ours: {_path_seconds(train):.1f}s ALS path, {train['wall_seconds']:.0f}s",
            flush=True,
        )
        bases.append(_baseline(out, name, bundle, ns.iterations, "-b" if ns.interleave else ""))
        _say_baseline(bases[-1])
        row = _row(name, train, bases)
        previous[name] = row
        results_path.write_text(json.dumps(previous, indent=2))
        print(
            f"  train {row['wall_seconds']:.0f}s, peak {row['process_peak_rss_mib']:,} MiB; "
            f"ALS path {row['als_path_seconds']:.1f}s vs raw {row['baseline_runs_seconds']} "
            f"= {row['ratio']:.2f}x of the mean, each {row['ratios_each']} "
            f"(target <= {TARGET_RATIO}); {_utc()}, load {os.getloadavg()}",
            flush=True,
        )
    rows = sorted(previous.values(), key=lambda r: r["users_items_interactions"][2])
    (out / "train_scale.md").write_text(_markdown(rows))
    _plot(rows, out / "train_scale.png")
    print(f"wrote {out / 'train_scale.md'} and {out / 'train_scale.png'}")
    failed = [r["size"] for r in rows if not (r["ratio_met"] and r["memory_met"])]
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
