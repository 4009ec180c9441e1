"""Spark engine crossover: local vs Spark local[2] vs a standalone cluster (1 and 2 workers).

For each size (interactions) a demo storefront is generated (Parquet), then each engine runs
``recsvc train`` and ``recsvc export`` as a subprocess; wall time and the peak RSS of every
process of the run's tree (driver Python, Spark JVM, Python workers, cluster executors) are
sampled from /proc every 0.25 s. The cluster is a real standalone master and workers on
localhost (one core and ``--worker-memory`` each). Quality parity: held-out NDCG@10 of the
local and the Spark bundle of the same split and settings.

    .venv/bin/python -m tests.benchmarks.bench_spark --sizes 1000000 5000000 \\
        --engines local spark-local2 cluster1 cluster2 --out var/bench/spark

Results: ``OUT/results.json`` (one record per run, appended as runs finish, so a run that
is stopped keeps what it measured) and ``OUT/spark_crossover.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
PAGE = os.sysconf("SC_PAGE_SIZE")


def _children(pid: int) -> list[int]:
    out = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            text = Path(f"/proc/{pid}/task/{task}/children").read_text()
            out += [int(c) for c in text.split()]
    except OSError:
        pass
    return out


def _kind(pid: int) -> str:
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return "?"
    if "CoarseGrainedExecutorBackend" in cmd:
        return "executor-jvm"
    if "deploy.worker.Worker" in cmd:
        return "worker-daemon-jvm"
    if "java" in cmd.split(" ")[0]:
        return "driver-jvm"
    if "pyspark.daemon" in cmd or "pyspark/daemon" in cmd or "worker" in cmd:
        return "python-worker"
    return "driver-python"


class TreeSampler(threading.Thread):
    """Peak RSS per process kind over a process tree (and extra roots, e.g. workers)."""

    def __init__(self, roots: list[int], interval: float = 0.25) -> None:
        super().__init__(daemon=True)
        self.roots = roots
        self.interval = interval
        self.peak: dict[str, float] = {}
        self.total_peak = 0.0
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.wait(self.interval):
            seen: list[int] = []
            todo = list(self.roots)
            while todo:
                pid = todo.pop()
                seen.append(pid)
                todo += _children(pid)
            total = 0.0
            for pid in seen:
                try:
                    rss = int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE / 2**20
                except (OSError, IndexError, ValueError):
                    continue
                kind = _kind(pid)
                self.peak[kind] = max(self.peak.get(kind, 0.0), rss)
                total += rss
            self.total_peak = max(self.total_peak, total)

    def stop(self) -> dict[str, Any]:
        self._halt.set()
        self.join()
        return {
            "peak_rss_mib_by_process": {k: round(v, 1) for k, v in self.peak.items()},
            "peak_rss_mib_total": round(self.total_peak, 1),
        }


def run_measured(
    cmd: list[str], extra_roots: list[int], env: dict[str, str], log: Path
) -> dict[str, Any]:
    """Run ``cmd`` (its stderr kept whole in ``log``); wall time and peak RSS."""
    start = time.perf_counter()
    with log.open("w") as err_file:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=err_file, text=True)
        sampler = TreeSampler([proc.pid, *extra_roots])
        sampler.start()
        out, _ = proc.communicate()
    wall = time.perf_counter() - start
    mem = sampler.stop()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed (stderr: {log}):\n{log.read_text()[-3000:]}")
    return {"wall_s": round(wall, 2), **mem, "stdout": out[-500:]}


@contextmanager
def cluster(workers: int, base: Path, memory: str) -> Iterator[tuple[str, list[int]]]:
    from tests.spark.conftest import _free_port, _spark_class, _wait_for

    home, spark_class = _spark_class()
    base.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "SPARK_HOME": str(home),
        "SPARK_LOCAL_IP": "127.0.0.1",
        "PYSPARK_PYTHON": sys.executable,
        "SPARK_LOCAL_DIRS": str(base / "local"),
    }
    port = _free_port()
    log = base / "master.log"
    procs = [
        subprocess.Popen(
            [
                str(spark_class),
                "org.apache.spark.deploy.master.Master",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--webui-port",
                str(_free_port()),
            ],
            env=env,
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    ]
    url = f"spark://127.0.0.1:{port}"
    try:
        _wait_for(log, r"I have been elected leader", 1, 180)
        for n in range(workers):
            procs.append(
                subprocess.Popen(
                    [
                        str(spark_class),
                        "org.apache.spark.deploy.worker.Worker",
                        url,
                        "--cores",
                        "1",
                        "--memory",
                        memory,
                        "--webui-port",
                        str(_free_port()),
                        "--work-dir",
                        str(base / f"work{n}"),
                    ],
                    env=env,
                    stdout=(base / f"worker{n}.log").open("wb"),
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
        _wait_for(log, r"Registering worker", workers, 180)
        yield url, [p.pid for p in procs[1:]]
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)


def engine_args(engine: str, url: str | None, args: argparse.Namespace) -> list[str]:
    if engine == "local":
        return []
    extra = [a for pair in args.spark_conf for a in ("--spark-conf", pair)]
    if engine == "spark-local2":
        return ["--engine", "spark", "--spark-master", "local[2]", *extra]
    return [
        "--engine",
        "spark",
        "--spark-master",
        str(url),
        "--spark-conf",
        f"spark.executor.memory={args.executor_memory}",
        *extra,
    ]


def bench(args: argparse.Namespace) -> None:
    from training.demo_data import generate

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results_path = out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else []
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable}
    recsvc = [sys.executable, "-m", "recsvc.cli"]
    for size in args.sizes:
        data = out / f"data-{size}"
        if not (data / "interactions.parquet").exists():
            generate(
                data,
                users=max(1000, size // 25),
                items=max(500, size // 500),
                interactions=size,
                seed=0,
                fmt="parquet",
            )
        for engine in args.engines:
            workers = int(engine[-1]) if engine.startswith("cluster") else 0
            ctx = cluster(workers, out / "cluster", args.worker_memory) if workers else None
            with ctx if ctx is not None else _nothing() as (url, roots):
                root = out / f"bundles-{size}-{engine}"
                shutil.rmtree(root, ignore_errors=True)
                train_cmd = [
                    *recsvc,
                    "train",
                    "--data",
                    str(data),
                    "--out",
                    str(root),
                    "--no-tune",
                    "--no-hybrid",
                    "--factors",
                    str(args.factors),
                    "--iterations",
                    str(args.iterations),
                    "--report",
                    str(out / f"report-{size}-{engine}.json"),
                    *engine_args(engine, url, args),
                ]
                record: dict[str, Any] = {"size": size, "engine": engine, "workers": workers}
                # The box is shared: the 1/5/15-minute load averages before each run.
                record["load_avg_before"] = [round(x, 2) for x in os.getloadavg()]
                if engine != "local":
                    record["spark_conf"] = list(args.spark_conf)
                if engine != "local":
                    # The held-out NDCG fit (a second ALS) is left out of the timed runs:
                    # the local engine's --no-tune run measures no validation either.
                    train_cmd.append("--no-validation")
                logs = out / f"stderr-{size}-{engine}"
                record["train"] = run_measured(train_cmd, roots, env, Path(f"{logs}-train.txt"))
                report = json.loads((out / f"report-{size}-{engine}.json").read_text())
                record["train"]["stages"] = {k: v["seconds"] for k, v in report["stages"].items()}
                suffix = ".parquet" if engine == "local" else ""
                dest = out / f"export-{size}-{engine}{suffix}"
                shutil.rmtree(dest, ignore_errors=True)
                dest.unlink(missing_ok=True) if dest.is_file() else None
                export_cmd = [
                    *recsvc,
                    "export",
                    "--artifacts",
                    str(root),
                    "--out",
                    str(dest),
                    "--k",
                    "10",
                    "--no-progress",
                    *engine_args(engine, url, args),
                ]
                record["export"] = run_measured(export_cmd, roots, env, Path(f"{logs}-export.txt"))
                manifest = json.loads((root / "current" / "manifest.json").read_text())
                record["validation"] = manifest.get("metrics", {}).get("validation")
                record["counts"] = manifest["training_data"]
                record["load_avg_after"] = [round(x, 2) for x in os.getloadavg()]
                results.append(record)
                results_path.write_text(json.dumps(results, indent=2))
                print(
                    json.dumps({k: record[k] for k in ("size", "engine")}),
                    record["train"]["wall_s"],
                    record["export"]["wall_s"],
                    flush=True,
                )
    plot(results, out / "spark_crossover.png")


@contextmanager
def _nothing() -> Iterator[tuple[None, list[int]]]:
    yield None, []


def plot(results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    engines = sorted({r["engine"] for r in results})
    for engine in engines:
        runs = sorted((r for r in results if r["engine"] == engine), key=lambda r: r["size"])
        sizes = [r["size"] / 1e6 for r in runs]
        # cold_start is left out: the runs recorded before the Spark job had the stage
        # lack it, and its cost (a driver-side choice) is not what the curves compare.
        train = [r["train"]["wall_s"] - r["train"]["stages"].get("cold_start", 0.0) for r in runs]
        axes[0].plot(sizes, train, "o-", label=engine)
        axes[1].plot(sizes, [r["export"]["wall_s"] for r in runs], "o-", label=engine)
        axes[2].plot(sizes, [r["train"]["peak_rss_mib_total"] for r in runs], "o-", label=engine)
    for ax, title in zip(
        axes,
        (
            "train wall without cold_start (s)",
            "export wall (s)",
            "train peak RSS, all processes (MiB)",
        ),
        strict=True,
    ):
        ax.set_title(title)
        ax.set_xlabel("interactions (M)")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000])
    parser.add_argument(
        "--engines", nargs="+", default=["local", "spark-local2", "cluster1", "cluster2"]
    )
    parser.add_argument("--factors", type=int, default=64)
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--worker-memory", default="3g")
    parser.add_argument("--executor-memory", default="2g")
    parser.add_argument(
        "--spark-conf",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="passed to every Spark run (e.g. spark.driver.memory=4g)",
    )
    parser.add_argument("--out", default=str(ROOT / "var" / "bench" / "spark"))
    parser.add_argument("--plot-only", action="store_true")
    args = parser.parse_args()
    if args.plot_only:
        results = json.loads((Path(args.out) / "results.json").read_text())
        plot(results, Path(args.out) / "spark_crossover.png")
        return
    bench(args)


if __name__ == "__main__":
    main()
