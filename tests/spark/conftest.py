"""Real Spark for the spark-engine tests: one local[2] session, one standalone cluster.

Skipped when pyspark or java is missing, unless ``RECSVC_REQUIRE_SPARK=1`` (CI), which
turns a missing one into a failure. The standalone cluster is a real master and two
workers started with pyspark's ``spark-class`` on localhost (one core each).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REQUIRE_SPARK = os.environ.get("RECSVC_REQUIRE_SPARK", "") not in ("", "0", "false")
# py4j logs "Closing down clientserver connection" at INFO from a finalizer at interpreter
# exit, after pytest has closed the captured stream: a "Logging error" traceback after the
# test summary. Its INFO lines say nothing a test needs.
logging.getLogger("py4j").setLevel(logging.WARNING)


def _spark_missing() -> str | None:
    try:
        import pyspark  # noqa: F401
    except ImportError:
        return "pyspark is not installed (pip install -e '.[spark]')"
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        return "java is not installed (Spark needs Java 17)"
    return None


def require_spark() -> None:
    missing = _spark_missing()
    if missing is not None:
        if REQUIRE_SPARK:
            pytest.fail(missing + " and RECSVC_REQUIRE_SPARK=1", pytrace=False)
        pytest.skip(missing)


@pytest.fixture(scope="session")
def spark() -> Iterator[Any]:
    """The one in-process SparkSession (local[2]) the in-process tests share."""
    require_spark()
    from recsvc.export.spark import SparkSettings, open_spark

    session = open_spark(SparkSettings(master="local[2]", progress=False))
    yield session
    session.stop()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Cluster:
    """A standalone master and its workers (processes started by the fixture)."""

    url: str
    home: Path
    logs: Path
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def kill_worker(self, n: int) -> None:
        """SIGKILL worker ``n`` and the executor it launched (its process group)."""
        proc = self.workers[n]
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


def _spark_class() -> tuple[Path, Path]:
    import pyspark

    home = Path(pyspark.__file__).parent
    return home, home / "bin" / "spark-class"


def _wait_for(path: Path, pattern: str, count: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = path.read_text(errors="replace") if path.exists() else ""
        if len(re.findall(pattern, text)) >= count:
            return
        time.sleep(0.5)
    raise TimeoutError(f"{pattern!r} x{count} not in {path} after {timeout}s:\n{text[-3000:]}")


@pytest.fixture(scope="session")
def standalone_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A real Spark standalone cluster on localhost: a master and two 1-core workers."""
    require_spark()
    home, spark_class = _spark_class()
    base = tmp_path_factory.mktemp("spark-cluster")
    env = {
        **os.environ,
        "SPARK_HOME": str(home),
        "SPARK_LOCAL_IP": "127.0.0.1",
        "SPARK_LOCAL_DIRS": str(base / "local"),
        "SPARK_WORKER_DIR": str(base / "work"),
        "PYSPARK_PYTHON": sys.executable,
    }
    port = _free_port()
    master_log = base / "master.log"
    procs: list[subprocess.Popen[bytes]] = []
    master = subprocess.Popen(
        [str(spark_class), "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
         "--port", str(port), "--webui-port", str(_free_port())],
        env=env, stdout=master_log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    procs.append(master)
    url = f"spark://127.0.0.1:{port}"
    cluster = Cluster(url=url, home=home, logs=base)
    try:
        _wait_for(master_log, r"I have been elected leader", 1, 180)
        for n in range(2):
            worker = subprocess.Popen(
                [str(spark_class), "org.apache.spark.deploy.worker.Worker", url,
                 "--cores", "1", "--memory", "1g", "--webui-port", str(_free_port()),
                 "--work-dir", str(base / f"work{n}")],
                env=env, stdout=(base / f"worker{n}.log").open("wb"),
                stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
            procs.append(worker)
            cluster.workers.append(worker)
        _wait_for(master_log, r"Registering worker", 2, 180)
        yield cluster
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
