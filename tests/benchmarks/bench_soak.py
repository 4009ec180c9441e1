"""Soak: Recommend + RecordEvents at ~70% of measured capacity against Redis, for 10 minutes,
with Redis restarted every 2 minutes and a new bundle hot-swapped every 3 minutes.

Pass criteria (exit 1 otherwise; results in $BENCH_OUT/soak/results.json):

- zero failed calls, except the documented degraded answers: Recommend answered with
  ``degraded=true`` while the store is down, and RecordEvents refused with UNAVAILABLE
  while the store is down (nothing written; the client retries the same event ids, as
  docs/deploy.md asks of a client);
- server RSS flat: the median of the last minute within +10% of the RSS at the end of
  warm-up (the first 20% of the run);
- every acknowledged event (RecordEvents OK, counted in ``accepted``; the capacity
  phase's included) is in the store's event log at the end;
- every hot swap reached the server (Recommend answered with each new model_version).

Its own ``redis-server`` on a free port (AOF, fsync always; restarted by SIGTERM, which a
Redis restart in production is), never the shared 127.0.0.1:6379. The server is a real
``recsvc serve`` process; the bundle is the hand-made serving test bundle (160 items).

    python -m tests.benchmarks.bench_soak [--quick] [--duration-s 600]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc

from recsvc.serving.workers import free_port
from recsvc.v1 import recommender_pb2 as pb
from recsvc.v1 import recommender_pb2_grpc as pb_grpc
from tests.serving.bundle_factory import N_ITEMS, N_USERS, item_id, publish_bundle, user_id

REPO = Path(__file__).resolve().parents[2]
EVENTS_PER_CALL = 2
RECORD_SHARE = 0.2  # one call in five is RecordEvents


class Redis:
    """One redis-server with an append-only file, restartable on the same port and data."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "yes", "--appendfsync", "always", "--dir", str(self.dir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 20
        import redis

        while time.monotonic() < deadline:
            try:
                if redis.Redis(port=self.port, socket_timeout=0.5).ping():
                    return
            except redis.RedisError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=30)
        self.proc = None


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class Load:
    """The client: Recommend and RecordEvents from a pool of threads, tallied."""

    def __init__(self, target: str, threads: int) -> None:
        self.channel = grpc.insecure_channel(target)
        self.stub = pb_grpc.RecommenderStub(self.channel)
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix="soak")
        self.lock = threading.Lock()
        self.codes: Counter[str] = Counter()
        self.degraded = 0
        self.event_retries = 0
        self.retry_duplicates = 0  # events a retry found already written
        self.rejections: Counter[str] = Counter()  # reasons of a failed (PARTIAL) call
        self.acked: list[str] = []
        self.versions: Counter[str] = Counter()  # model_version of each Recommend answer
        self.latencies: list[float] = []
        self.rng = random.Random(7)

    def recommend(self) -> None:
        user = user_id(self.rng.randrange(N_USERS + 40))  # a few unknown users too
        started = time.perf_counter()
        try:
            reply = self.stub.Recommend(pb.RecommendRequest(user_id=user, k=10), timeout=10)
            code = "OK"
        except grpc.RpcError as exc:
            reply, code = None, exc.code().name
        with self.lock:
            self.latencies.append(time.perf_counter() - started)
            self.codes[f"Recommend:{code}"] += 1
            if reply is not None:
                self.versions[reply.model_version] += 1
                if reply.degraded:
                    self.degraded += 1

    def record(self) -> None:
        now = int(time.time() * 1000)
        events = [
            pb.Event(
                event_id=uuid.uuid4().hex,
                user_id=user_id(self.rng.randrange(N_USERS)),
                item_id=item_id(self.rng.randrange(N_ITEMS)),
                timestamp_ms=now,
                type=self.rng.choice([pb.EVENT_TYPE_CLICK, pb.EVENT_TYPE_PURCHASE]),
            )
            for _ in range(EVENTS_PER_CALL)
        ]
        request = pb.RecordEventsRequest(events=events)
        deadline = time.monotonic() + 60
        retried = False
        while True:
            try:
                reply = self.stub.RecordEvents(request, timeout=10)
                code = "OK"
            except grpc.RpcError as exc:
                reply, code = None, exc.code().name
            with self.lock:
                self.codes[f"RecordEvents:{code}"] += 1
                if reply is not None:
                    # A retry may find events its UNAVAILABLE attempt did write (the store
                    # applied the batch, the reply timed out): rejected as duplicates, they
                    # are recorded, which is what idempotent event ids are for.
                    dup = "duplicate event_id"
                    again = [r for r in reply.rejected if retried and r.reason.startswith(dup)]
                    only_again = len(again) == len(reply.rejected)
                    if only_again and reply.accepted + len(again) == len(events):
                        self.acked.extend(e.event_id for e in events)
                        self.retry_duplicates += len(again)
                    else:
                        self.codes["RecordEvents:PARTIAL"] += 1
                        self.rejections.update(r.reason for r in reply.rejected)
                    return
                if code != "UNAVAILABLE" or time.monotonic() > deadline:
                    return
                self.event_retries += 1
            retried = True
            time.sleep(0.25)  # the store is down: retry the same event ids

    def one(self) -> None:
        (self.record if self.rng.random() < RECORD_SHARE else self.recommend)()

    def calls(self) -> int:
        with self.lock:
            return sum(v for k, v in self.codes.items() if not k.endswith(":PARTIAL"))


def measure_capacity(load: Load, seconds: float, concurrency: int) -> float:
    """Closed loop, ``concurrency`` callers back to back: calls per second."""
    stop = time.monotonic() + seconds
    count = [0]
    lock = threading.Lock()

    def caller() -> None:
        while time.monotonic() < stop:
            load.one()
            with lock:
                count[0] += 1

    threads = [threading.Thread(target=caller) for _ in range(concurrency)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return count[0] / (time.monotonic() - started)


def wait_ready(stub: pb_grpc.RecommenderStub, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            stub.Recommend(pb.RecommendRequest(user_id="warmup", k=1), timeout=5)
            return
        except grpc.RpcError:
            time.sleep(0.2)
    raise RuntimeError("server not ready in time")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="90 s, restarts every 30 s, swaps 45 s")
    p.add_argument("--duration-s", type=float, default=600.0)
    p.add_argument("--redis-restart-s", type=float, default=120.0)
    p.add_argument("--swap-s", type=float, default=180.0)
    p.add_argument("--load-share", type=float, default=0.7, help="of measured capacity")
    p.add_argument("--capacity-s", type=float, default=20.0)
    p.add_argument("--concurrency", type=int, default=8)
    args = p.parse_args(argv)
    if args.quick:
        args.duration_s, args.redis_restart_s, args.swap_s = 90.0, 30.0, 45.0
        args.capacity_s = 10.0
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    out = Path(os.environ.get("BENCH_OUT", REPO / "var" / "bench")) / "soak"
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="bench-soak-"))
    redis_dir = tmp / "redis"
    redis_dir.mkdir()
    root = tmp / "bundles"
    publish_bundle(root, seed=0)
    store = Redis(redis_dir)
    store.start()
    port = free_port()
    url = f"redis://127.0.0.1:{store.port}/0?socket_timeout_s=0.5"
    server = subprocess.Popen(
        [sys.executable, "-m", "recsvc.cli", "serve", "--artifacts", str(root), "--host",
         "127.0.0.1", "--port", str(port), "--feature-store", url, "--log-level", "WARNING",
         "--watch-interval", "1"],
        cwd=REPO, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    load = Load(f"127.0.0.1:{port}", threads=64)
    result: dict[str, Any] = {"args": vars(args), "load_avg_start": os.getloadavg()}
    try:
        wait_ready(load.stub, server)
        capacity = measure_capacity(load, args.capacity_s, args.concurrency)
        rate = capacity * args.load_share
        result.update(capacity_calls_s=round(capacity, 1), target_calls_s=round(rate, 1))
        print(f"capacity {capacity:.0f} calls/s; soak at {rate:.0f} calls/s", flush=True)
        load.codes.clear()
        load.degraded = load.event_retries = load.retry_duplicates = 0
        load.latencies.clear()
        load.versions.clear()

        started = time.monotonic()
        next_restart, next_swap, next_sample = (
            started + args.redis_restart_s, started + args.swap_s, started)  # fmt: skip
        rss: list[tuple[float, int]] = []
        restarts, swaps, submitted = 0, 0, 0
        futures = []
        while (now := time.monotonic()) < started + args.duration_s:
            due = int((now - started) * rate) - submitted
            for _ in range(max(0, due)):
                futures.append(load.pool.submit(load.one))
                submitted += 1
            if now >= next_sample:
                rss.append((round(now - started, 1), rss_kib(server.pid)))
                next_sample += 5
            if now >= next_restart:
                store.stop()
                time.sleep(1.0)  # down long enough for calls to notice
                store.start()
                restarts += 1
                next_restart += args.redis_restart_s
            if now >= next_swap:
                publish_bundle(root, seed=swaps + 1)
                swaps += 1
                next_swap += args.swap_s
            if server.poll() is not None:
                raise RuntimeError(f"server exited with {server.returncode}")
            time.sleep(0.01)
        for f in futures:
            f.result()
        elapsed = time.monotonic() - started

        import redis

        from feature_store.factory import open_store

        client = redis.Redis(port=store.port)
        versions = client.info("server")["redis_version"]
        reader = open_store(url)
        logged = {row["event_id"] for row in reader.read_log("event")}
        reader.close()
        missing = [e for e in load.acked if e not in logged]

        warm_until = args.duration_s * 0.2
        warm = [kib for t, kib in rss if t >= warm_until][:1] or [rss[-1][1]]
        last = [kib for t, kib in rss if t >= elapsed - 60] or [rss[-1][1]]
        growth = statistics.median(last) / warm[0] - 1
        failures = {
            k: v
            for k, v in load.codes.items()
            if not k.endswith(":OK") and k != "RecordEvents:UNAVAILABLE"
        }
        lat = sorted(load.latencies)
        result.update(
            redis_version=versions,
            elapsed_s=round(elapsed, 1),
            calls=load.calls(),
            achieved_calls_s=round(load.calls() / elapsed, 1),
            codes=dict(load.codes),
            failures=failures,
            degraded_recommend=load.degraded,
            record_retries_while_store_down=load.event_retries,
            retried_events_already_written=load.retry_duplicates,
            rejection_reasons=dict(load.rejections),
            redis_restarts=restarts,
            bundle_swaps=swaps,
            model_versions_served=len(load.versions),
            acked_events=len(load.acked),
            acked_events_missing=len(missing),
            rss_kib=rss,
            rss_warm_kib=warm[0],
            rss_last_minute_median_kib=statistics.median(last),
            rss_growth=round(growth, 4),
            recommend_p50_ms=round(1000 * lat[len(lat) // 2], 2) if lat else None,
            recommend_p99_ms=round(1000 * lat[int(len(lat) * 0.99)], 2) if lat else None,
            load_avg_end=os.getloadavg(),
        )
        # every swap reached the server: one version more answered than were swapped in
        swapped = len(load.versions) == swaps + 1
        passed = not failures and not missing and growth <= 0.10 and swapped
        result["passed"] = passed
        (out / "results.json").write_text(json.dumps(result, indent=1) + "\n")
        summary = {k: v for k, v in result.items() if k != "rss_kib"}
        print(json.dumps(summary, indent=1))
        return 0 if passed else 1
    finally:
        load.pool.shutdown(wait=False, cancel_futures=True)
        load.channel.close()
        if server.poll() is None:
            server.send_signal(signal.SIGTERM)
            try:
                _, err = server.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                _, err = server.communicate()
            (out / "server.log").write_text(err or "")
        store.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
