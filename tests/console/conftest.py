"""Console fixtures: a real Chromium (Debian's, through Playwright), a seeded SQLite store,
a bundle root with two trained versions, an in-process gRPC server watching that root with
its Prometheus endpoint on, and the console itself served by uvicorn on a free port.

Without chromium or playwright the browser tests skip, unless RECSVC_REQUIRE_BROWSER=1
(CI), where they fail.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from feature_store.factory import open_store
from recsvc.bundle import list_versions, load_bundle
from recsvc.serving.server import ServerThread
from recsvc.serving.workers import free_port
from recsvc.settings import ServingSettings
from tests.console.seed import seed
from tests.fixtures.bundle import TINY_TRAIN_CONFIG

CHROMIUM = os.environ.get("RECSVC_CHROMIUM", "/usr/bin/chromium")
REQUIRE_BROWSER = os.environ.get("RECSVC_REQUIRE_BROWSER", "") not in ("", "0", "false")
ADMIN_TOKEN = "admin-token-for-tests-0123456789"
READ_TOKEN = "read-only-token-for-tests-012345"
SCREENSHOTS = Path(os.environ.get("RECSVC_CONSOLE_SCREENSHOTS", "var/console-screenshots"))


def _unavailable(reason: str) -> None:
    if REQUIRE_BROWSER:
        pytest.fail(f"{reason} and RECSVC_REQUIRE_BROWSER=1", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is not installed")
    if not Path(CHROMIUM).exists():
        _unavailable(f"no browser at {CHROMIUM} (apt-get install chromium)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


@dataclass
class ConsoleEnv:
    url: str
    root: Path
    store_url: str
    versions: list[str]
    server: ServerThread
    metrics: str
    seeded: dict[str, Any]


class _Uvicorn:
    def __init__(self, app: Any, port: int) -> None:
        import uvicorn

        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("console did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture(scope="module")
def console_env(
    tmp_path_factory: pytest.TempPathFactory, trained_bundle_root: Path, demo_data_dir: Path
) -> Iterator[ConsoleEnv]:
    pytest.importorskip("starlette")
    from recsvc.console.app import ConsoleConfig, create_app
    from training.pipeline import train

    base = tmp_path_factory.mktemp("console")
    root = base / "bundles"
    shutil.copytree(trained_bundle_root, root, symlinks=True)
    train(demo_data_dir, root, TINY_TRAIN_CONFIG, verbose=False)  # a second version, current
    versions = list_versions(root)
    assert len(versions) == 2
    store_url = f"sqlite:///{base / 'store.sqlite'}"
    store = open_store(store_url)
    seeded = seed(store, load_bundle(root), root)
    metrics_port = free_port()
    server = ServerThread(
        # Field(default, ...) reads as required to mypy without the pydantic plugin
        ServingSettings(
            artifacts=root, host="127.0.0.1", port=0, feature_store=store_url,
            watch_interval_s=0.2, exposure_flush_s=0.05, grace_s=1.0, metrics_port=metrics_port,
        )
    ).start()  # fmt: skip
    metrics = f"127.0.0.1:{metrics_port}"
    config = ConsoleConfig(
        artifacts=root,
        feature_store=store_url,
        admin_tokens=(ADMIN_TOKEN,),
        read_tokens=(READ_TOKEN,),
        servers=(metrics,),
    )
    port = free_port()
    web = _Uvicorn(create_app(config, store), port)
    web.start()
    try:
        yield ConsoleEnv(f"http://127.0.0.1:{port}", root, store_url, versions, server,
                         metrics, seeded)  # fmt: skip
    finally:
        web.stop()
        server.stop()
        store.close()


@pytest.fixture
def page_for(browser: Any, console_env: ConsoleEnv) -> Iterator[Any]:
    """``page_for(token)``: a fresh browser context logged in with ``token``; its console
    errors and page errors are collected in ``page.errors``."""
    contexts = []

    def make(token: str) -> Any:
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        contexts.append(context)
        page = context.new_page()
        page.errors = []
        page.on("console", lambda m: page.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: page.errors.append(str(e)))
        page.goto(f"{console_env.url}/login")
        page.fill("#token", token)
        page.click("#login")
        page.wait_for_url("**/experiments")
        return page

    yield make
    for context in contexts:
        context.close()
