"""Export benchmark: users/s and peak RSS of `recsvc export` vs raw FAISS batch search.

For each size (users × 100k items by default), a demo bundle is reused from $BENCH_OUT
when one of that size exists, else built with `recsvc demo-data` + `recsvc train --no-tune
--no-hybrid`; ``--artifacts ROOT`` measures a given bundle instead. Then, in separate
processes (so each peak RSS is its own), interleaved:

1. raw FAISS: the bundle's item index, the bundle's user vectors, ``index.search`` of
   every user in batches of the export chunk size, k=20 (load time excluded);
2. `recsvc export --k 20 --out FILE.parquet` for every known user (load time excluded
   from users/s: the manifest's recommend-and-write time), per-user arrays memory-mapped
   (the default);
3. raw FAISS again, 4. export again (the machine is shared: each side is the mean of its
   two runs, and every run is reported);
5. the same export with the bundle loaded whole into RAM, as serving loads it (the memory
   the mapped load saves);
6. exact FAISS (``IndexFlatIP``) on the first ``--exact-users`` users, for scale.

Targets: export ≥ 0.7× raw FAISS throughput; export peak RSS ≤ index size + 2 GiB.

``python -m tests.benchmarks.bench_export [--quick] [--users 100000,300000,1000000]
[--artifacts ROOT]``; results in $BENCH_OUT/export/results.json, plot and write-up in
docs/benchmarks/export.*.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "benchmarks" / "export.md"
PLOT = REPO / "docs" / "benchmarks" / "export.png"
K = 20
CHUNK = 2048
GIB = 1 << 30


def _bench_out() -> Path:
    return Path(os.environ.get("BENCH_OUT", REPO / "var" / "bench")).resolve()


def _peak_rss_bytes() -> int:
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # Linux: KiB


def _current_rss_bytes() -> int:
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


# -- children (each measured in its own process) ------------------------------------------


def child_faiss(root: Path, k: int, exact: bool = False, limit: int = 0) -> dict[str, Any]:
    import faiss

    from recsvc.bundle import load_bundle

    bundle = load_bundle(root, verify_checksums=False)
    users = np.ascontiguousarray(bundle.user_factors, dtype=np.float32)
    if limit:
        users = users[:limit]
    index = bundle.index
    if exact:
        index = faiss.IndexFlatIP(bundle.item_factors.shape[1])
        index.add(np.ascontiguousarray(bundle.item_factors, dtype=np.float32))
    index.search(users[:CHUNK], k)  # warm-up
    start = time.perf_counter()
    for lo in range(0, len(users), CHUNK):
        index.search(users[lo : lo + CHUNK], k)
    seconds = time.perf_counter() - start
    return {
        "users": len(users),
        "seconds": seconds,
        "users_per_s": len(users) / seconds,
        "peak_rss": _peak_rss_bytes(),
    }


def child_export(
    root: Path, out: Path, k: int, users: Path | None = None, mapped: bool = True
) -> dict[str, Any]:
    from recsvc.export.job import ExportOptions, prepare_export

    start = time.perf_counter()
    options = ExportOptions(
        root, out, k, users=users, chunk_size=CHUNK, progress=False, map_user_arrays=mapped
    )
    job = prepare_export(options)
    loaded_rss = _current_rss_bytes()
    manifest = job.run()
    wall = time.perf_counter() - start
    work = manifest["timings_s"]["recommend_and_write_s"]
    return {
        "users": manifest["counts"]["users_exported"],
        "rows": manifest["counts"]["rows"],
        "seconds": work,
        "wall_seconds": wall,
        "users_per_s": manifest["counts"]["users_exported"] / work,
        "load_seconds": manifest["timings_s"]["prepare_s"],
        "mapped": mapped,
        "rss_after_load": loaded_rss,
        "peak_rss": _peak_rss_bytes(),
        "output_bytes": manifest["output"]["bytes"],
    }


def _run_child(*argv: str) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "tests.benchmarks.bench_export", "--child", *argv]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


# -- bundles ---------------------------------------------------------------------------------


def _bundle_counts(root: Path) -> tuple[int, int] | None:
    manifest = root / "current" / "manifest.json"
    if not manifest.is_file():
        return None
    counts = json.loads(manifest.read_text()).get("counts", {})
    return int(counts.get("users", 0)), int(counts.get("items", 0))


def find_or_build_bundle(users: int, items: int, work: Path) -> Path:
    """A bundle root with ``users`` × ``items`` (±5% users): reused if any under $BENCH_OUT."""
    for manifest in sorted(_bench_out().glob("**/current/manifest.json")):
        root = manifest.parent.parent
        counts = _bundle_counts(root)
        if counts and counts[1] == items and abs(counts[0] - users) <= 0.05 * users:
            print(f"  reusing bundle {root} ({counts[0]} users x {counts[1]} items)", flush=True)
            return root
    data = work / f"data-{users}x{items}"
    root = work / f"bundle-{users}x{items}"
    recsvc = [sys.executable, "-m", "recsvc.cli"]
    if not (data / "interactions.parquet").exists():
        print(f"  demo-data {users} users x {items} items -> {data}", flush=True)
        subprocess.run(
            [
                *recsvc,
                "demo-data",
                "--out",
                str(data),
                "--users",
                str(users),
                "--items",
                str(items),
                "--format",
                "parquet",
                "--seed",
                "11",
            ],
            cwd=REPO,
            check=True,
        )
    print(f"  train --no-tune --no-hybrid -> {root}", flush=True)
    subprocess.run(
        [
            *recsvc,
            "train",
            "--data",
            str(data),
            "--out",
            str(root),
            "--no-tune",
            "--no-hybrid",
            "--quiet",
        ],
        cwd=REPO,
        check=True,
    )
    return root


# -- report ----------------------------------------------------------------------------------


def _machine_state() -> dict[str, Any]:
    return {
        "utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
    }


def measure(
    root: Path, work: Path, exact_users: int = 0, whole_users: int = 0, curve: bool = True
) -> dict[str, Any]:
    index_file = (root / "current" / "item_index.faiss").resolve()
    manifest = json.loads((root / "current" / "manifest.json").read_text())
    before = _machine_state()
    out = str(work / "export.parquet")
    faiss_runs, export_runs = [], []
    for _ in range(2):  # baseline, ours, baseline, ours
        faiss_runs.append(_run_child("faiss", str(root), str(K)))
        export_runs.append(_run_child("export", str(root), out, str(K)))
    # The whole load's peak is the load itself: a prefix of the users shows it as well.
    whole_args = [str(root), out, str(K)]
    if whole_users:
        whole_args.append(str(_users_file(root, work, whole_users)))
    whole = _run_child("export-whole", *whole_args)
    exact = _run_child("flat", str(root), str(K), str(exact_users))
    baseline = float(np.mean([r["users_per_s"] for r in faiss_runs]))
    ours = float(np.mean([r["users_per_s"] for r in export_runs]))
    peak = max(r["peak_rss"] for r in export_runs)
    index_bytes = index_file.stat().st_size
    export = {**export_runs[-1], "users_per_s": ours, "peak_rss": peak}
    points = [*measure_curve(root, work, export["users"]), export] if curve else [export]
    return {
        "bundle": str(root),
        "users": export["users"],
        "items": manifest["counts"]["items"],
        "factors": manifest["counts"].get("factors"),
        "index": manifest.get("index", {}).get("kind", "?"),
        "ef_search": manifest.get("index", {}).get("ef_search"),
        "index_bytes": index_bytes,
        "faiss_runs": faiss_runs,
        "faiss_users_per_s": baseline,
        "export_runs": export_runs,
        "export_whole": whole,
        "exact": exact,
        "ratio_exact": ours / exact["users_per_s"],
        "export": export,
        "ratio": ours / baseline,
        "rss_limit": index_bytes + 2 * GIB,
        "rss_ok": peak <= index_bytes + 2 * GIB,
        "curve": points,
        "machine_before": before,
        "machine_after": _machine_state(),
    }


def _users_file(root: Path, work: Path, n: int) -> Path:
    """A text file of the bundle's first ``n`` user ids."""
    from recsvc.bundle import load_bundle

    ids = load_bundle(root, verify_checksums=False, map_user_arrays=True).user_ids
    users = work / f"users-{n}.txt"
    users.write_text("\n".join(str(u) for u in ids[:n]) + "\n")
    return users


def measure_curve(root: Path, work: Path, total: int) -> list[dict[str, Any]]:
    """Export of growing user subsets of one bundle: cost per user and memory vs users."""
    points = []
    for n in (n for n in (10_000, 30_000, 100_000, 300_000) if n < total):
        users = _users_file(root, work, n)
        out = work / f"export-{n}.parquet"
        points.append(_run_child("export", str(root), str(out), str(K), str(users)))
    return points


def plot(results: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    last = results[-1]
    curve = last.get("curve") or [last["export"]]
    users = [p["users"] for p in curve]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.plot(users, [p["users_per_s"] for p in curve], "o-", label="recsvc export")
    left.axhline(last["faiss_users_per_s"], color="C1", ls="--", label="raw FAISS (bundle index)")
    left.axhline(last["exact"]["users_per_s"], color="C2", ls=":", label="raw FAISS exact")
    left.set_xscale("log")
    left.set_yscale("log")
    left.set_xlabel(f"users exported (bundle {last['users']:,} x {last['items']:,})")
    left.set_ylabel("users / s (k=20)")
    left.legend()
    left.set_title("throughput")
    right.plot(users, [p["peak_rss"] / GIB for p in curve], "o-", label="export peak RSS")
    right.plot(users, [p["rss_after_load"] / GIB for p in curve], "s--", label="after load")
    whole = last.get("export_whole")
    if whole:
        right.plot(
            [whole["users"]], [whole["peak_rss"] / GIB], "x", ms=10, label="bundle loaded whole"
        )
    right.axhline(last["rss_limit"] / GIB, color="k", ls=":", label="index + 2 GiB")
    right.set_xscale("log")
    right.set_ylim(bottom=0)
    right.set_xlabel("users exported")
    right.set_ylabel("GiB")
    right.legend()
    right.set_title("peak RSS")
    fig.tight_layout()
    PLOT.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(PLOT, dpi=100)
    plt.close(fig)


# Everything below this line of the write-up is kept across runs (hand-written notes).
NOTES_MARKER = "<!-- notes: kept when the benchmark rewrites this file -->"


def _gib(n: float) -> str:
    return f"{n / GIB:.2f}"


def _run_rows(r: dict[str, Any]) -> list[str]:
    rows = []
    runs = [("raw FAISS", r["faiss_runs"][0]), ("export (mapped)", r["export_runs"][0])]
    runs += [("raw FAISS", r["faiss_runs"][1]), ("export (mapped)", r["export_runs"][1])]
    runs += [("export, bundle loaded whole", r["export_whole"])]
    n_exact = r["exact"]["users"]
    runs += [(f"exact FAISS (first {n_exact:,} users)", r["exact"])]
    for i, (name, run) in enumerate(runs, 1):
        after_load = _gib(run["rss_after_load"]) if "rss_after_load" in run else "–"
        rows.append(
            f"| {i} | {name} | {run['users']:,} | {run['seconds']:.1f} | "
            f"{run['users_per_s']:,.0f} | {after_load} | {_gib(run['peak_rss'])} |"
        )
    return rows


def write_doc(results: list[dict[str, Any]], command: str) -> None:
    parts = []
    for r in results:
        e, w = r["export"], r["export_whole"]
        before, after = r["machine_before"], r["machine_after"]
        limit = r["rss_limit"]
        throughput_met = "yes" if r["ratio"] >= 0.7 else "**NO**"
        rss_met = "yes" if r["rss_ok"] else "**NO**"
        whole_fits = "yes" if w["peak_rss"] <= limit else "no"
        curve_rows = [
            f"| {p['users']:,} | {p['users_per_s']:,.0f} | {p['seconds']:.1f} | "
            f"{_gib(p['rss_after_load'])} | {_gib(p['peak_rss'])} |"
            for p in r.get("curve", [])
        ]
        parts.append(
            f"""## {r["users"]:,} users × {r["items"]:,} items

Bundle `{r["bundle"]}`: {r["factors"]} factors, {r["index"]} index (efSearch
{r["ef_search"]}), index file {r["index_bytes"] / (1 << 20):.1f} MiB. Run {before["utc"]} →
{after["utc"]} UTC; load average (1/5/15 min) {before["loadavg"]} before,
{after["loadavg"]} after.

Every run, in the order they ran (each its own process; users/s excludes the load):

| # | run | users | seconds | users/s | RSS after load GiB | peak RSS GiB |
|---|---|---|---|---|---|---|
{chr(10).join(_run_rows(r))}

| | value | target | met |
|---|---|---|---|
| export users/s (mean of runs 2, 4) | {e["users_per_s"]:,.0f} | | |
| raw FAISS users/s (mean of runs 1, 3) | {r["faiss_users_per_s"]:,.0f} | | |
| throughput ratio | **{r["ratio"]:.2f}×** | ≥ 0.7× | {throughput_met} |
| ratio vs exact FAISS | {r["ratio_exact"]:.2f}× | | |
| peak RSS (max of runs 2, 4) | **{_gib(e["peak_rss"])} GiB** | ≤ {_gib(limit)} GiB | {rss_met} |
| export with the bundle loaded whole (run 5) | {_gib(w["peak_rss"])} GiB | | {whole_fits} |

How cost grows with the number of users exported (same bundle, mapped, `--users FILE` of
the first N users; the last row is the full export above):

| users exported | users/s | seconds | RSS after load GiB | peak RSS GiB |
|---|---|---|---|---|
{chr(10).join(curve_rows)}
"""
        )
    previous = DOC.read_text() if DOC.is_file() else ""
    notes = previous.split(NOTES_MARKER, 1)[1].lstrip("\n") if NOTES_MARKER in previous else ""
    text = f"""# Export benchmark

Command: `{command}` (raw results: `$BENCH_OUT/export/results.json`; plot: `export.png`).
Machine: {platform.machine()}, {os.cpu_count()} cores, shared with other engineers' niced
builds and tests; the run held `/tmp/bench.lock` (no other benchmark ran beside it).
Absolute numbers are noisy; the ratios are what count: export and its baselines ran in the
same run, interleaved (FAISS, export, FAISS, export).

What is compared, for every known user of the bundle, k=20:
- **export**: `recsvc export --k 20 --out FILE.parquet`: the serving pipeline in batch
  (users → precomputed candidates re-scored with the live vector → filters: seen, region
  availability → top-k → fallbacks), artwork (default policy, best posterior mean),
  Arrow → Parquet (zstd), temp file + rename + manifest with sha256. The per-user arrays
  (user factors, seen items, candidate lists) are memory-mapped
  (`load_bundle(map_user_arrays=True)`) and each sub-batch's rows are read from the files
  with explicit reads (`recsvc/export/rows.py`; see the notes below).
- **raw FAISS**: the bundle's own item index searched with the same user vectors in
  batches of {CHUNK}, k=20; nothing else (no filters, no output).
- **raw FAISS exact**: `IndexFlatIP` over the same item vectors (BLAS), on a prefix of the
  users (a per-user rate; the whole 1M would take ~10 min).

{chr(10).join(parts)}
![export benchmark](export.png)

{NOTES_MARKER}

{notes}"""
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text(text.rstrip() + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (20k users x 5k items)")
    parser.add_argument(
        "--users", default="100000,300000,1000000", help="comma-separated user counts"
    )
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument(
        "--artifacts", type=Path, help="measure this bundle root instead (--users ignored)"
    )
    parser.add_argument(
        "--exact-users", type=int, default=0, help="exact-FAISS baseline on the first N (0: all)"
    )
    parser.add_argument(
        "--whole-users", type=int, default=0, help="whole-load export of the first N (0: all)"
    )
    parser.add_argument("--no-curve", action="store_true", help="skip the users-exported curve")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    parser.add_argument(
        "--doc-only", action="store_true", help="rewrite the doc and plot from results.json"
    )
    ns = parser.parse_args(argv)
    if ns.doc_only:
        saved = json.loads((_bench_out() / "export" / "results.json").read_text())
        plot(saved)
        write_doc(saved, saved[-1].get("command", "python -m tests.benchmarks.bench_export"))
        return 0
    if ns.child:
        kind, *rest = ns.child
        if kind in ("faiss", "flat"):
            limit = int(rest[2]) if len(rest) > 2 else 0
            result = child_faiss(Path(rest[0]), int(rest[1]), exact=kind == "flat", limit=limit)
        else:
            users = Path(rest[3]) if len(rest) > 3 else None
            mapped = kind != "export-whole"
            result = child_export(Path(rest[0]), Path(rest[1]), int(rest[2]), users, mapped)
        print(json.dumps(result))
        return 0

    sizes = [20_000] if ns.quick else [int(s) for s in ns.users.split(",") if s]
    items = 5_000 if ns.quick else ns.items
    work = _bench_out() / "export"
    work.mkdir(parents=True, exist_ok=True)
    command = "python -m tests.benchmarks.bench_export " + " ".join(argv or sys.argv[1:])
    results = []
    for n_users in [0] if ns.artifacts else sizes:
        if ns.artifacts:
            root = ns.artifacts.resolve()
            print(f"export benchmark: bundle {root}", flush=True)
        else:
            print(f"export benchmark: {n_users} users x {items} items", flush=True)
            root = find_or_build_bundle(n_users, items, work)
        result = measure(root, work, ns.exact_users, ns.whole_users, curve=not ns.no_curve)
        print(
            f"  export {result['export']['users_per_s']:,.0f} users/s, raw FAISS "
            f"{result['faiss_users_per_s']:,.0f} users/s, ratio {result['ratio']:.2f}; "
            f"peak RSS {result['export']['peak_rss'] / GIB:.2f} GiB "
            f"(limit {result['rss_limit'] / GIB:.2f})",
            flush=True,
        )
        result["command"] = command.strip()
        results.append(result)
        (work / "results.json").write_text(json.dumps(results, indent=2))
    if not ns.quick:
        plot(results)
        write_doc(results, command.strip())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
