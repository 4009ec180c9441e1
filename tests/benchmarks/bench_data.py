"""Data benchmark: demo-data generation and load/validate/build_matrix at three sizes.

Each stage runs in its own child process, so its wall time and peak RSS are its own:
- ``generate``: ``training.demo_data.generate`` (taste clusters, regions, popularity);
- ``raw-write`` (baseline): uniform random rows of the same columns and ids written with
  the same pyarrow CSV writer in the same chunks: the floor for producing those bytes;
- ``load``: ``load_dataset`` (read + validate) then ``build_matrix``;
- ``raw-read`` (baseline): ``pyarrow.csv.read_csv`` of the same four files, no validation.
Ratios (generate / raw-write, load / raw-read) are the numbers to read: the machine is a
shared 2-core box and absolute times are noisy. MovieLens ratings (``$SHARED_DATA``) are
also loaded through ``dataset_from_frames`` vs a bare ``pandas.read_csv``.

``python -m tests.benchmarks.bench_data [--quick]``; outputs under $BENCH_OUT/data/, the
write-up (full runs) in docs/benchmarks/data.md with data.png next to it.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "benchmarks" / "data.md"
FULL_SIZES = [(50_000, 100_000), (250_000, 100_000), (1_000_000, 100_000)]  # users, items
QUICK_SIZES = [(5_000, 10_000), (15_000, 10_000), (50_000, 10_000)]
PER_USER = 20
TARGET_GENERATE_S = 300.0  # "a few minutes" at 1M users x 100k items x 20M rows
TARGET_GENERATE_RSS_GB = 2.0  # bounded memory: chunks, no users x items matrix


def _peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # Linux: KiB


# --- child stages -----------------------------------------------------------------------


def _stage_generate(out: Path, users: int, items: int) -> dict[str, Any]:
    from training.demo_data import generate

    start = time.perf_counter()
    summary = generate(out, users=users, items=items, seed=42, fmt="csv")
    return {"seconds": time.perf_counter() - start, "rows": summary.interactions}


def _stage_raw_write(out: Path, users: int, items: int) -> dict[str, Any]:
    import numpy as np
    import pyarrow as pa
    import pyarrow.csv as pacsv

    from training.demo_data import CHUNK_USERS, END_EPOCH, EVENT_TYPES

    start = time.perf_counter()
    rng = np.random.default_rng(0)
    item_ids = pa.array([f"i{i:06d}" for i in range(items)])
    out.mkdir(parents=True, exist_ok=True)
    options = pacsv.WriteOptions(quoting_style="needed")
    rows = 0
    writer: pacsv.CSVWriter | None = None
    for first in range(0, users, CHUNK_USERS):
        count = min(CHUNK_USERS, users - first)
        user_ids = pa.array([f"u{i:07d}" for i in range(first, first + count)])
        n = count * PER_USER
        table = pa.table(
            {
                "user_id": user_ids.take(pa.array(np.repeat(np.arange(count), PER_USER))),
                "item_id": item_ids.take(pa.array(rng.integers(0, items, n))),
                "timestamp": pa.array(END_EPOCH - rng.integers(0, 90 * 86_400, n)),
                "event_type": pa.array(np.array(EVENT_TYPES, dtype=object)[rng.integers(0, 4, n)]),
            }
        )
        if writer is None:
            writer = pacsv.CSVWriter(out / "interactions.csv", table.schema, write_options=options)
        writer.write_table(table)
        rows += n
    if writer is not None:
        writer.close()
    return {"seconds": time.perf_counter() - start, "rows": rows}


def _stage_load(data: Path) -> dict[str, Any]:
    from training.data import build_matrix, load_dataset

    start = time.perf_counter()
    dataset = load_dataset(data)
    loaded = time.perf_counter()
    matrix = build_matrix(dataset)
    built = time.perf_counter()
    return {
        "seconds": loaded - start,
        "matrix_seconds": built - loaded,
        "rows": len(dataset.interactions),
        "nnz": int(matrix.matrix.nnz),
    }


def _stage_raw_read(data: Path) -> dict[str, Any]:
    import pyarrow as pa
    import pyarrow.csv as pacsv

    start = time.perf_counter()
    rows = 0
    for name in ("interactions", "users", "items", "artwork"):
        convert = pacsv.ConvertOptions(default_column_type=pa.string())
        rows = max(rows, pacsv.read_csv(data / f"{name}.csv", convert_options=convert).num_rows)
    return {"seconds": time.perf_counter() - start, "rows": rows}


def _run_stage(stage: str, path: Path, users: int = 0, items: int = 0) -> dict[str, Any]:
    command = [sys.executable, "-m", "tests.benchmarks.bench_data", "--stage", stage]
    command += ["--path", str(path), "--users", str(users), "--items", str(items)]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"stage {stage} failed:\n{done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _child(args: argparse.Namespace) -> int:
    path = Path(args.path)
    stages = {
        "generate": lambda: _stage_generate(path, args.users, args.items),
        "raw-write": lambda: _stage_raw_write(path, args.users, args.items),
        "load": lambda: _stage_load(path),
        "raw-read": lambda: _stage_raw_read(path),
    }
    result = stages[args.stage]()
    result["peak_rss_gb"] = _peak_rss_gb()
    print(json.dumps(result))
    return 0


# --- MovieLens --------------------------------------------------------------------------


def _movielens(shared: Path) -> dict[str, Any] | None:
    import pandas as pd

    from training.data import build_matrix, dataset_from_frames

    ratings = shared / "ml-latest-small" / "ratings.csv"
    if not ratings.is_file():
        return None
    start = time.perf_counter()
    raw = pd.read_csv(ratings, dtype={"userId": str, "movieId": str})
    raw_s = time.perf_counter() - start
    start = time.perf_counter()
    frame = raw.rename(columns={"userId": "user_id", "movieId": "item_id", "rating": "weight"})
    frame["event_type"] = "rating"
    dataset = dataset_from_frames(frame)
    matrix = build_matrix(dataset)
    ours_s = time.perf_counter() - start
    return {
        "rows": len(frame),
        "users": int(matrix.matrix.shape[0]),
        "items": int(matrix.matrix.shape[1]),
        "read_csv_s": raw_s,
        "validate_and_matrix_s": ours_s,
    }


# --- signal -----------------------------------------------------------------------------


def _ndcg_at_10(top: Any, truth: Any) -> float:
    import numpy as np

    discounts = 1.0 / np.log2(np.arange(2, 12))
    hits = np.take_along_axis(truth.toarray() > 0, top, axis=1)
    ideal = np.array([discounts[: min(10, n)].sum() for n in np.diff(truth.indptr)])
    keep = ideal > 0
    return float(((hits * discounts).sum(axis=1)[keep] / ideal[keep]).mean())


def _signal(scratch: Path) -> dict[str, float]:
    """NDCG@10 of simple models on the `make run` demo size: what the generator encodes."""
    import numpy as np
    import scipy.sparse as sp

    from training.data import build_matrix, load_dataset
    from training.demo_data import generate

    generate(scratch / "signal", users=5_000, items=2_000, seed=7)
    dataset = load_dataset(scratch / "signal")
    assert dataset.users is not None
    result = build_matrix(dataset)
    binary = (result.matrix > 0).astype(np.float64).tocsr()
    users = dataset.users.set_index("user_id").loc[result.user_ids]
    rng = np.random.default_rng(0)
    # Cold start: 20% of users held out whole; segment popularity from the others.
    held = rng.random(binary.shape[0]) < 0.2
    train, test = binary[~held], binary[held]
    popularity = np.asarray(train.sum(axis=0)).ravel()
    out = {"cold_global_popularity": _ndcg_at_10(_top(popularity, test.shape[0]), test)}
    for name, columns in (("region", ["region"]), ("region_age_gender", list(users.columns))):
        key = users[columns].astype(str).agg("/".join, axis=1).to_numpy()
        scores = {
            k: np.asarray(train[key[~held] == k].sum(axis=0)).ravel() + 1e-3 * popularity
            for k in np.unique(key)
        }
        top = np.stack([np.argsort(-scores[k], kind="stable")[:10] for k in key[held]])
        out[f"cold_{name}_popularity"] = _ndcg_at_10(top, test)
    # Warm: 20% of each user's cells held out; popularity vs item-item cosine.
    cells = binary.tocoo()
    mask = rng.random(cells.nnz) < 0.2
    part = [
        sp.csr_matrix((cells.data[m], (cells.row[m], cells.col[m])), shape=binary.shape)
        for m in (~mask, mask)
    ]
    seen, truth = part
    pop = np.asarray(seen.sum(axis=0)).ravel()
    out["warm_popularity"] = _ndcg_at_10(_top_unseen(np.tile(pop, (seen.shape[0], 1)), seen), truth)
    norms = np.sqrt(pop) + 1e-9
    similarity = (seen.T @ seen).toarray() / norms[:, None] / norms[None, :]
    np.fill_diagonal(similarity, 0.0)
    out["warm_item_knn"] = _ndcg_at_10(_top_unseen(np.asarray(seen @ similarity), seen), truth)
    return out


def _top(scores: Any, rows: int) -> Any:
    import numpy as np

    return np.tile(np.argsort(-scores, kind="stable")[:10], (rows, 1))


def _top_unseen(scores: Any, seen: Any) -> Any:
    import numpy as np

    scores = np.array(scores, dtype=np.float64)
    scores[seen.toarray() > 0] = -np.inf
    return np.argsort(-scores, axis=1, kind="stable")[:, :10]


# --- parent -----------------------------------------------------------------------------


def _measure(sizes: list[tuple[int, int]], scratch: Path) -> list[dict[str, Any]]:
    results = []
    for users, items in sizes:
        data, raw = scratch / f"demo-{users}", scratch / f"raw-{users}"
        row: dict[str, Any] = {"users": users, "items": items}
        row["generate"] = _run_stage("generate", data, users, items)
        row["raw_write"] = _run_stage("raw-write", raw, users, items)
        shutil.rmtree(raw, ignore_errors=True)
        row["load"] = _run_stage("load", data)
        row["raw_read"] = _run_stage("raw-read", data)
        row["csv_mb"] = sum(p.stat().st_size for p in data.iterdir()) / 1e6
        shutil.rmtree(data, ignore_errors=True)
        print(json.dumps(row), flush=True)
        results.append(row)
    return results


def _plot(results: list[dict[str, Any]], path: Path) -> None:
    try:
        import matplotlib
    except ImportError:  # a bare machine: numbers still come out, just no plot
        return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r["generate"]["rows"] / 1e6 for r in results]
    fig, ax = plt.subplots(figsize=(6, 4))
    series = {
        "generate (demo-data)": [r["generate"]["seconds"] for r in results],
        "raw write (baseline)": [r["raw_write"]["seconds"] for r in results],
        "load + validate": [r["load"]["seconds"] for r in results],
        "raw pyarrow read (baseline)": [r["raw_read"]["seconds"] for r in results],
        "build_matrix": [r["load"]["matrix_seconds"] for r in results],
    }
    for label, values in series.items():
        ax.plot(rows, values, marker="o", label=label)
    ax.set_xlabel("interaction rows (millions)")
    ax.set_ylabel("seconds (shared 2-core machine)")
    ax.set_title("recsvc data: cost vs size")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| rows | users × items | CSV MB | generate s (RSS GB) | raw write s | gen ratio "
        "| load+validate s (RSS GB) | raw read s | load ratio | build_matrix s |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        g, w, ld, rd = r["generate"], r["raw_write"], r["load"], r["raw_read"]
        lines.append(
            f"| {g['rows'] / 1e6:.1f}M | {r['users']:,} × {r['items']:,} | {r['csv_mb']:.0f} "
            f"| {g['seconds']:.1f} ({g['peak_rss_gb']:.2f}) | {w['seconds']:.1f} "
            f"| {g['seconds'] / w['seconds']:.2f}× | {ld['seconds']:.1f} ({ld['peak_rss_gb']:.2f}) "
            f"| {rd['seconds']:.1f} | {ld['seconds'] / rd['seconds']:.2f}× "
            f"| {ld['matrix_seconds']:.1f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (≤ 1M rows)")
    parser.add_argument("--stage", help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    parser.add_argument("--users", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--items", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.stage:
        return _child(args)
    shared = Path(os.environ.get("SHARED_DATA", REPO.parent / "shared" / "data"))
    out = Path(os.environ.get("BENCH_OUT", REPO / "var" / "bench")) / "data"
    out.mkdir(parents=True, exist_ok=True)
    sizes = QUICK_SIZES if args.quick else FULL_SIZES
    with tempfile.TemporaryDirectory(prefix="bench-data-") as scratch:
        results = _measure(sizes, Path(scratch))
        signal = _signal(Path(scratch))
    movielens = _movielens(shared)
    machine = {"cpus": os.cpu_count(), "python": sys.version.split()[0]}
    report = {"machine": machine, "sizes": results, "movielens": movielens, "signal": signal}
    (out / "results.json").write_text(json.dumps(report))
    _plot(results, out / "data.png")
    table = _table(results)
    print(table)
    if movielens:
        print(json.dumps(movielens))
    print(json.dumps(signal, indent=1))
    cold_ratio = signal["cold_region_age_gender_popularity"] / signal["cold_global_popularity"]
    print(f"cold start: region+demographics / global popularity = {cold_ratio:.2f}x (> 1.10)")
    largest = results[-1]["generate"]
    met = largest["seconds"] <= TARGET_GENERATE_S and (
        largest["peak_rss_gb"] <= TARGET_GENERATE_RSS_GB
    )
    print(f"generate target (≤ {TARGET_GENERATE_S:.0f} s, ≤ {TARGET_GENERATE_RSS_GB} GB): {met}")
    if not args.quick:
        DOC.parent.mkdir(parents=True, exist_ok=True)
        if (out / "data.png").is_file():
            shutil.copy(out / "data.png", DOC.with_suffix(".png"))
        (out / "table.md").write_text(table + "\n")
    met = met and cold_ratio > 1.10
    return 0 if met or args.quick else 1


if __name__ == "__main__":
    raise SystemExit(main())
