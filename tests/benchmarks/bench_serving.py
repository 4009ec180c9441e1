"""Serving benchmark: Recommend throughput and latency vs a bare grpc.aio echo server.

A bounded async load generator (fixed concurrency, fixed duration, loopback only) calls
``Recommend`` (k=20) on a real ``recsvc serve`` process over a demo bundle (100k items,
200k users; ``--quick``: 10k x 20k), with the SQLite store and with Redis (a throwaway
``redis-server`` on a free port, profiles materialized into both), and in the same run an
echo servicer that returns 20 fixed items. 90% of requests are for known users, 10% for
unknown users with a region (cold start). One worker runs pinned to CPU 0 and the load
generator (and the Redis server) to CPU 1; ``--workers 2`` runs unpinned (the generator
shares the cores).

TARGETS (2 cores, one worker): Recommend RPS >= 0.5x echo, p99 <= 10 ms at concurrency 16,
zero errors.

``python -m tests.benchmarks.bench_serving [--quick] [--duration S]``; raw results and the
plot go to $BENCH_OUT/serving/; the write-up is docs/benchmarks/serving.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tests.fixtures.redis_server import ThrowawayRedis, free_port

REPO = Path(__file__).resolve().parents[2]
K = 20

SIZES = {"full": (200_000, 100_000), "quick": (20_000, 10_000)}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="10k items x 20k users, short runs")
    parser.add_argument("--duration", type=float, default=None, help="seconds measured per run")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds before measuring")
    parser.add_argument("--concurrency", type=int, default=16, help="calls in flight")
    parser.add_argument("--only", nargs="*", default=None, help="scenario names to run")
    parser.add_argument("--echo-server", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--raw-echo", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="only measure the servicer's CPU per Recommend call in this process (no gRPC)",
    )
    return parser.parse_args(argv)


# -- the echo baseline ------------------------------------------------------------------------
async def _echo_main(port: int, raw: bool = False) -> None:
    import grpc

    from recsvc.v1 import recommender_pb2 as pb
    from recsvc.v1 import recommender_pb2_grpc as pb_grpc

    items = [
        pb.RecommendedItem(item_id=f"item-{i:05d}", score=1.0 - i / 100,
                           artwork_variant_id=f"item-{i:05d}-v0", artwork_propensity=1.0,
                           reason="recommended for you")
        for i in range(K)
    ]  # fmt: skip

    class Echo(pb_grpc.RecommenderServicer):
        async def Recommend(self, request: Any, context: Any) -> Any:
            return pb.RecommendResponse(request_id="r", model_version="echo", items=items)

    server = grpc.aio.server()
    if raw:  # gRPC alone: the same response bytes, no protobuf parse or build per call
        wire = pb.RecommendResponse(request_id="r", model_version="echo", items=items)
        packed = wire.SerializeToString()

        async def recommend(request: bytes, context: Any) -> bytes:
            return packed

        handler = grpc.unary_unary_rpc_method_handler(recommend)  # bytes in, bytes out
        generic = grpc.method_handlers_generic_handler(  # registered, as the stubs do
            "recsvc.v1.Recommender", {"Recommend": handler}
        )
        server.add_generic_rpc_handlers((generic,))
        server.add_registered_method_handlers("recsvc.v1.Recommender", {"Recommend": handler})
    else:
        pb_grpc.add_RecommenderServicer_to_server(Echo(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await server.stop(1)


def in_process(root: Path, sqlite: Path, requests: list[Any], reps: int = 3) -> dict[str, float]:
    """Server CPU per Recommend call without gRPC: the handler awaited in a loop (best of
    ``reps`` passes over 4,000 requests, after a 300-call warm-up), SQLite and no store."""
    from feature_store.factory import open_store
    from recsvc.serving.hotswap import ModelHolder
    from recsvc.serving.metrics import ServingMetrics
    from recsvc.serving.servicer import RecommenderServicer
    from recsvc.serving.store_guard import ExposureLog, StoreGuard

    class Context:  # what the handler asks of a grpc.aio context on the success path
        def invocation_metadata(self) -> tuple[()]:
            return ()

        def time_remaining(self) -> None:
            return None

        async def abort(self, code: Any, details: str) -> None:
            raise RuntimeError(details)

    metrics = ServingMetrics()
    holder = ModelHolder(root, "default", metrics)
    out = {}
    for name, url in (("sqlite", f"sqlite:///{sqlite}"), ("nostore", "")):
        guard = StoreGuard(open_store(url) if url else None, 5.0, metrics)
        exposures = ExposureLog(guard, 100_000, metrics)
        servicer = RecommenderServicer(holder, guard, exposures, metrics)

        async def loop(n: int, servicer: Any = servicer, exposures: Any = exposures) -> None:
            for request in requests[:n]:
                await servicer.Recommend(request, Context())
            exposures._queue.clear()  # the write is the flush task's (measured end to end)

        asyncio.run(loop(300))
        passes = []
        for _ in range(reps):
            started = time.process_time()
            asyncio.run(loop(4000))
            passes.append((time.process_time() - started) / 4000 * 1e6)
        out[name] = min(passes)
        _log(f"in-process {name}: {min(passes):.0f} us/call CPU (passes {passes})")
        guard.close()
    return out


# -- helpers ----------------------------------------------------------------------------------
def _log(msg: str) -> None:
    print(f"[bench_serving {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _machine_state() -> dict[str, Any]:
    """UTC time and 1/5/15-min load average (the write-up reports both around each run)."""
    return {
        "utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def _recsvc(*args: str) -> None:
    cmd = [sys.executable, "-m", "recsvc.cli", *args]
    _log(" ".join(cmd[2:]))
    subprocess.run(cmd, cwd=REPO, check=True)


def _tree_cpu_s(pid: int) -> float:
    """utime+stime of ``pid`` and its direct children (the worker processes)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(entry.name) == pid or int(fields[1]) == pid:
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def _wait_healthy(port: int, proc: subprocess.Popen[bytes], timeout_s: float = 300) -> None:
    import grpc

    from recsvc.v1 import recommender_pb2 as pb
    from recsvc.v1 import recommender_pb2_grpc as pb_grpc

    deadline = time.monotonic() + timeout_s
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}")
            try:  # a Recommend answer means ready (the echo server has no health service)
                probe = pb.RecommendRequest(user_id="ready-probe", k=1)  # user_id is required
                pb_grpc.RecommenderStub(channel).Recommend(probe, timeout=5)
                return
            except grpc.RpcError:
                time.sleep(0.2)
    raise RuntimeError("server not healthy in time")


# -- data -------------------------------------------------------------------------------------
def prepare(out: Path, size: str) -> tuple[Path, Path, Path]:
    """Demo data, a trained bundle and a materialized SQLite store (cached under out)."""
    users, items = SIZES[size]
    data, root = out / f"data-{size}", out / f"bundles-{size}"
    sqlite = out / f"store-{size}.sqlite"
    if not (data / "interactions.parquet").exists():
        _recsvc("demo-data", "--out", str(data), "--users", str(users), "--items", str(items),
                "--seed", "11", "--format", "parquet")  # fmt: skip
    if not (root / "current").exists():
        # No search, 64 factors, no LightFM (its fit on 200k users did not finish in 20 min
        # on the shared machine; cold start then uses regional popularity).
        _recsvc("train", "--data", str(data), "--out", str(root), "--no-tune", "--no-hybrid",
                "--factors", "64", "--feature-store", f"sqlite:///{sqlite}")  # fmt: skip
    if not sqlite.exists():
        _recsvc("materialize", "--data", str(data), "--feature-store", f"sqlite:///{sqlite}")
    return data, root, sqlite


def requests_for(root: Path, n: int, seed: int = 5) -> list[Any]:
    from recsvc.v1 import recommender_pb2 as pb

    current = (root / "current").resolve()
    users = json.loads((current / "user_ids.json").read_text())
    regions = json.loads((current / "region_names.json").read_text())
    rng = random.Random(seed)
    out = []
    for i in range(n):
        if rng.random() < 0.9:
            out.append(pb.RecommendRequest(user_id=rng.choice(users), k=K))
        else:
            region = pb.Context(region=rng.choice(regions))
            out.append(pb.RecommendRequest(user_id=f"visitor-{i}", k=K, context=region))
    return out


# -- load generator ---------------------------------------------------------------------------
async def _load(port: int, requests: list[Any], concurrency: int, warmup: float,
                duration: float) -> dict[str, Any]:  # fmt: skip
    import grpc

    from recsvc.v1 import recommender_pb2_grpc as pb_grpc

    latencies: list[float] = []
    errors: dict[str, int] = {}
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.RecommenderStub(channel)
        start = time.perf_counter()
        measure_from, end = start + warmup, start + warmup + duration

        async def worker(w: int) -> None:
            i = w
            while True:
                t0 = time.perf_counter()
                if t0 >= end:
                    return
                try:
                    await stub.Recommend(requests[i % len(requests)], timeout=5)
                except grpc.RpcError as exc:
                    errors[exc.code().name] = errors.get(exc.code().name, 0) + 1
                    continue
                finally:
                    i += concurrency
                if t0 >= measure_from:
                    latencies.append(time.perf_counter() - t0)

        cpu0 = time.process_time()
        await asyncio.gather(*(worker(w) for w in range(concurrency)))
        client_cpu = time.process_time() - cpu0
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000

    return {
        "calls": len(latencies),
        "rps": len(latencies) / duration,
        "p50_ms": pct(0.50),
        "p90_ms": pct(0.90),
        "p99_ms": pct(0.99),
        "errors": errors,
        "client_cpu_s": client_cpu,
        "client_cpu_share": client_cpu / (warmup + duration),
    }


def run_scenario(name: str, server_cmd: list[str], port: int, requests: list[Any],
                 args: argparse.Namespace, pin: bool) -> dict[str, Any]:  # fmt: skip
    _log(f"{name}: starting {' '.join(server_cmd[2:])}")
    env = {**os.environ, "RECSVC_LOG_LEVEL": "WARNING"}
    proc = subprocess.Popen(server_cmd, cwd=REPO, env=env, stderr=subprocess.DEVNULL)
    try:
        if pin and hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
            os.sched_setaffinity(proc.pid, {0})
            os.sched_setaffinity(0, {1})
        else:
            os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))
        _wait_healthy(port, proc)
        cpu0, t0 = _tree_cpu_s(proc.pid), time.perf_counter()
        result = asyncio.run(_load(port, requests, args.concurrency, args.warmup, args.duration))
        wall = time.perf_counter() - t0
        server_cpu = _tree_cpu_s(proc.pid) - cpu0
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))
    total_calls = result["calls"] * (args.warmup + args.duration) / args.duration
    result.update(
        name=name,
        server_cpu_share=server_cpu / wall,
        server_cpu_us_per_call=server_cpu / max(total_calls, 1) * 1e6,
    )
    _log(f"{name}: {result['rps']:.0f} rps p50 {result['p50_ms']:.2f} ms p99 "
         f"{result['p99_ms']:.2f} ms errors {result['errors']} server "
         f"{result['server_cpu_us_per_call']:.0f} us/call")  # fmt: skip
    return result


# -- report -----------------------------------------------------------------------------------
def write_plot(results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["name"] for r in results]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    ax1.barh(names, [r["rps"] for r in results], color="tab:blue")
    ax1.set_xlabel("calls/s (higher is better)")
    ax2.barh(names, [r["p50_ms"] for r in results], color="tab:green", label="p50")
    ax2.barh(names, [r["p99_ms"] - r["p50_ms"] for r in results],
             left=[r["p50_ms"] for r in results], color="tab:orange", label="p99")  # fmt: skip
    ax2.axvline(10, color="red", linestyle="--", linewidth=1, label="p99 target")
    ax2.set_xlabel("latency ms")
    ax2.legend(loc="lower right")
    for ax in (ax1, ax2):
        ax.invert_yaxis()
    fig.suptitle(f"Recommend k={K} vs bare grpc.aio echo (concurrency 16, loopback)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def summary(results: list[dict[str, Any]]) -> list[str]:
    by = {r["name"]: r for r in results}
    echo = by.get("echo")
    lines = ["| run | calls/s | p50 ms | p90 ms | p99 ms | errors | vs echo | server CPU µs/call "
             "| server CPU | load-gen CPU |", "|" + "---|" * 10]  # fmt: skip
    for r in results:
        ratio = f"{r['rps'] / echo['rps']:.2f}x" if echo else "-"
        lines.append(
            f"| {r['name']} | {r['rps']:.0f} | {r['p50_ms']:.2f} | {r['p90_ms']:.2f} | "
            f"{r['p99_ms']:.2f} | {sum(r['errors'].values())} | {ratio} | "
            f"{r['server_cpu_us_per_call']:.0f} | {r['server_cpu_share']:.0%} | "
            f"{r['client_cpu_share']:.0%} |"
        )
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.echo_server is not None:
        asyncio.run(_echo_main(args.echo_server, raw=args.raw_echo))
        return 0
    size = "quick" if args.quick else "full"
    args.duration = args.duration or (5.0 if args.quick else 15.0)
    out = Path(os.environ.get("BENCH_OUT", REPO / "var" / "bench")).resolve() / "serving"
    out.mkdir(parents=True, exist_ok=True)
    data, root, sqlite = prepare(out, size)
    requests = requests_for(root, 20_000)
    if args.in_process:
        result = in_process(root, sqlite, requests)
        (out / f"in-process-{size}.json").write_text(json.dumps(result, indent=2))
        return 0

    def serve_cmd(port: int, store: str, workers: int = 1) -> list[str]:
        return [sys.executable, "-m", "recsvc.cli", "serve", "--artifacts", str(root),
                "--host", "127.0.0.1", "--port", str(port), "--feature-store", store,
                "--workers", str(workers), "--no-experiments"]  # fmt: skip

    def echo_cmd(port: int) -> list[str]:
        return [sys.executable, "-m", "tests.benchmarks.bench_serving", "--echo-server", str(port)]

    scenarios: list[tuple[str, Any, bool]] = [
        ("echo", echo_cmd, True),
        ("echo-raw", lambda p: [*echo_cmd(p), "--raw-echo"], True),  # gRPC floor, not baseline
        ("recommend-sqlite", lambda p: serve_cmd(p, f"sqlite:///{sqlite}"), True),
        ("recommend-redis", None, True),
        ("recommend-nostore", lambda p: serve_cmd(p, "none"), True),
        ("echo-unpinned", echo_cmd, False),
        ("recommend-sqlite-w1-unpinned", lambda p: serve_cmd(p, f"sqlite:///{sqlite}"), False),
        ("recommend-sqlite-w2-unpinned", lambda p: serve_cmd(p, f"sqlite:///{sqlite}", 2), False),
    ]
    if args.only:
        scenarios = [s for s in scenarios if s[0] in args.only]
    results = []
    redis = None
    started = _machine_state()
    _log(f"start {started['utc']} load average {started['load_average']}")
    try:
        for name, make_cmd, pin in scenarios:
            if name == "recommend-redis":
                if shutil.which("redis-server") is None:
                    _log("redis-server not installed: skipping the Redis run")
                    continue
                redis = ThrowawayRedis(workdir=out)
                redis.start()
                if pin and redis.proc is not None and (os.cpu_count() or 1) > 1:
                    # Redis stands for a store on another machine: it shares the load
                    # generator's core, never the pinned server's.
                    os.sched_setaffinity(redis.proc.pid, {1})
                url = f"redis://127.0.0.1:{redis.port}/0"
                _recsvc("materialize", "--data", str(data), "--feature-store", url)
                make_cmd = lambda p, url=url: serve_cmd(p, url)  # noqa: E731
            port = free_port()
            results.append(run_scenario(name, make_cmd(port), port, requests, args, pin))
            if redis is not None:
                redis.stop()
                redis = None
    finally:
        if redis is not None:
            redis.stop()
    ended = _machine_state()
    _log(f"end {ended['utc']} load average {ended['load_average']}")
    manifest = json.loads(((root / "current").resolve() / "manifest.json").read_text())
    payload = {
        "started": started, "ended": ended,
        "size": size, "users": SIZES[size][0], "items": SIZES[size][1], "k": K,
        "concurrency": args.concurrency, "duration_s": args.duration, "warmup_s": args.warmup,
        "bundle": manifest.get("version"), "index": manifest.get("index"),
        "machine": platform.platform(), "cpus": os.cpu_count(), "results": results,
    }  # fmt: skip
    (out / f"results-{size}.json").write_text(json.dumps(payload, indent=2, default=str))
    write_plot(results, out / f"serving-{size}.png")
    table = summary(results)
    (out / f"summary-{size}.md").write_text("\n".join(table) + "\n")
    print("\n".join(table))
    by = {r["name"]: r for r in results}
    ok = True
    if "echo" in by and "recommend-sqlite" in by:
        rec, echo = by["recommend-sqlite"], by["echo"]
        ok = rec["rps"] >= 0.5 * echo["rps"] and rec["p99_ms"] <= 10 and not rec["errors"]
        _log(f"target (sqlite, 1 worker): ratio {rec['rps'] / echo['rps']:.2f} (>= 0.5), "
             f"p99 {rec['p99_ms']:.2f} ms (<= 10), errors {rec['errors']}: "
             f"{'MET' if ok else 'MISSED'}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
