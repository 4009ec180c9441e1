"""The console in a real Chromium: every page loads without console errors, the report
shows the CLI's JSON numbers, experiments are created and stopped through the form, a
rollback makes a running server swap, and a read-only token changes nothing."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from feature_store.factory import open_store
from recsvc.bundle import resolve_current
from recsvc.cli import main as cli_main
from recsvc.experiments.report import TABLE_COLUMNS
from tests.console.conftest import ADMIN_TOKEN, READ_TOKEN, SCREENSHOTS, ConsoleEnv
from tests.console.seed import EXPERIMENT

PAGES = ["experiments", f"experiments/{EXPERIMENT}", "models", "artwork", "live", "insights"]
DOCS = Path("docs/console")


def _shot(page: Any, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)
    if os.environ.get("RECSVC_CONSOLE_DOCS"):  # refresh the pictures in docs/console
        DOCS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(DOCS / f"{name}.png"))


def test_every_page_loads_without_console_errors(page_for: Any, console_env: ConsoleEnv) -> None:
    page = page_for(ADMIN_TOKEN)
    for path in PAGES:
        response = page.goto(f"{console_env.url}/{path}")
        assert response is not None and response.status == 200, path
        assert page.locator("h1").count() == 1
        _shot(page, path.replace("/", "-"))
    # the artwork page of one item, with its choice probabilities and off-policy estimates
    page.goto(f"{console_env.url}/artwork")
    page.locator("#items a").first.click()
    page.wait_for_selector("#ope")
    assert page.locator("#by-variant tr").count() > 1
    assert page.locator("#choice tr").count() > 1
    for estimator in ("ips", "snips", "dr"):
        assert page.locator(f'#ope tr[data-estimator="{estimator}"]').count() >= 1
    _shot(page, "artwork-item")
    # live: 20 Recommend calls since the previous scrape show in the server's RPC table
    import grpc

    from recsvc.v1 import recommender_pb2 as pb
    from recsvc.v1 import recommender_pb2_grpc as pb_grpc

    with grpc.insecure_channel(f"127.0.0.1:{console_env.server.port}") as channel:
        stub = pb_grpc.RecommenderStub(channel)
        for u in range(20):
            stub.Recommend(pb.RecommendRequest(user_id=f"u{u:05d}", k=5), timeout=10)
    page.goto(f"{console_env.url}/live")
    assert page.locator(".server .version").first.inner_text() in console_env.versions
    row = page.locator('.server tr[data-rpc="Recommend"] td')
    assert int(row.nth(1).inner_text()) >= 20
    assert row.nth(3).inner_text().endswith(" ms")  # p50
    _shot(page, "live")
    # insights: trending regions and the funnel rows
    page.goto(f"{console_env.url}/insights?window=week")
    assert page.locator("table.trend").count() >= 1
    assert page.locator("#funnel tr").count() > 1
    assert page.errors == [], page.errors


def test_report_numbers_equal_the_cli_json(
    page_for: Any, console_env: ConsoleEnv, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli_main(
        ["experiments", "report", EXPERIMENT, "--format", "json",
         "--feature-store", console_env.store_url]
    )  # fmt: skip
    assert code == 0
    cli = json.loads(capsys.readouterr().out)
    page = page_for(ADMIN_TOKEN)
    page.goto(f"{console_env.url}/experiments/{EXPERIMENT}")
    formats = {key: spec for key, _, spec in TABLE_COLUMNS}
    compared = 0
    for row in cli["variants"]:
        cells = page.locator(f'#report tr[data-variant="{row["name"]}"] td[data-key]')
        shown = {c.get_attribute("data-key"): c for c in cells.all()}
        for key, value in row.items():
            if key not in shown or key == "name":
                continue
            raw = shown[key].get_attribute("data-value")
            if value is None:
                assert raw == "" and shown[key].inner_text() == "-", key
                continue
            assert float(raw) == float(value), (row["name"], key, raw, value)
            if key in formats:
                assert shown[key].inner_text() == formats[key].format(value), key
            compared += 1
    assert compared >= 20
    srm = page.locator("#srm-p").get_attribute("data-value")
    assert float(srm) == cli["srm_p_value"]
    assert (page.locator("#srm-banner").count() == 1) == cli["srm_warning"]
    assert page.locator("svg.chart").count() == 4
    assert page.errors == []


BAD_SEGMENT = """\
name: console-made
salt: console-made-salt
segment: 'regoin == "US-9"'
variants:
  - {name: control, weight: 0.5}
  - {name: treat, weight: 0.5}
"""


def test_create_through_the_form_then_stop(
    page_for: Any, console_env: ConsoleEnv, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD_SEGMENT)
    code = cli_main(
        ["experiments", "create", "--file", str(bad), "--artifacts", str(console_env.root),
         "--feature-store", console_env.store_url]
    )  # fmt: skip
    assert code == 2
    cli_message = capsys.readouterr().err.strip().split(f"{bad}: ", 1)[1]
    assert "unknown field 'regoin'" in cli_message

    page = page_for(ADMIN_TOKEN)
    page.goto(f"{console_env.url}/experiments")
    page.fill("#yaml", BAD_SEGMENT)
    page.click("#create-submit")
    error = page.locator("#error").inner_text()
    assert error == f"experiment form: {cli_message}"
    _shot(page, "experiments-refused")
    # the refusal is answered 400, which Chromium logs as a failed load: that one only
    assert [e for e in page.errors if "400" not in e] == [] and len(page.errors) == 1
    page.errors.clear()

    page.fill("#yaml", BAD_SEGMENT.replace("regoin", "region"))
    page.click("#create-submit")
    page.wait_for_url("**/experiments/console-made")
    assert page.locator("#state").inner_text() == "running"
    page.click("#stop")
    page.click("#confirm")
    page.wait_for_url("**/experiments/console-made")
    assert page.locator("#state").inner_text() == "stopped"
    store = open_store(console_env.store_url)
    try:
        made = store.get_document("experiments", "console-made")
        assert made is not None and made["status"] == "stopped"
    finally:
        store.close()
    assert page.errors == []


def _served_version(console_env: ConsoleEnv) -> str:
    from recsvc.console.pages.live import Scraper

    return Scraper((console_env.metrics,)).fetch(console_env.metrics).version


def test_rollback_makes_the_running_server_swap(page_for: Any, console_env: ConsoleEnv) -> None:
    old, new = console_env.versions
    assert resolve_current(console_env.root).name == new
    deadline = time.monotonic() + 30
    while _served_version(console_env) != new and time.monotonic() < deadline:
        time.sleep(0.1)
    page = page_for(ADMIN_TOKEN)
    page.goto(f"{console_env.url}/models")
    assert page.locator(f'#versions tr[data-version="{new}"] .on').inner_text() == (
        console_env.metrics
    )
    page.locator(f'#versions tr[data-version="{old}"] a.promote').click()
    page.click("#confirm")
    page.wait_for_url("**/models")
    assert old in page.locator("#flash").inner_text()
    assert resolve_current(console_env.root).name == old
    deadline = time.monotonic() + 30
    while _served_version(console_env) != old:
        assert time.monotonic() < deadline, "the server did not swap to the rolled-back version"
        time.sleep(0.1)
    page.goto(f"{console_env.url}/models")
    assert (
        page.locator(f'#servers tr[data-server="{console_env.metrics}"] .serving').inner_text()
        == old
    )
    _shot(page, "models-after-rollback")
    # roll forward again for the other tests
    page.goto(f"{console_env.url}/models/{new}/promote")
    page.click("#confirm")
    assert resolve_current(console_env.root).name == new
    assert page.errors == []


def test_read_only_token_changes_nothing(page_for: Any, console_env: ConsoleEnv) -> None:
    page = page_for(READ_TOKEN)
    assert page.locator("#role").inner_text() == "read"
    page.goto(f"{console_env.url}/experiments")
    assert page.locator("#create").count() == 0
    csrf = page.locator('input[name="csrf"]').first.get_attribute("value")
    current = resolve_current(console_env.root).name
    other = next(v for v in console_env.versions if v != current)
    attempts = {
        f"/experiments/{EXPERIMENT}/stop": {"confirm": EXPERIMENT},
        f"/models/{other}/promote": {"confirm": other},
        "/models/retention": {"keep": "1", "confirm": "delete"},
        "/experiments": {
            "yaml": BAD_SEGMENT.replace("regoin", "region").replace("console-made", "ro")
        },
    }
    for path, form in attempts.items():
        response = page.request.post(f"{console_env.url}{path}", form={"csrf": csrf, **form})
        assert response.status == 403, path
        assert "read-only" in response.text()
    # without the CSRF token even an admin session is refused
    admin = page_for(ADMIN_TOKEN)
    response = admin.request.post(
        f"{console_env.url}/experiments/{EXPERIMENT}/stop", form={"confirm": EXPERIMENT}
    )
    assert response.status in (400, 403)
    assert resolve_current(console_env.root).name == current
    store = open_store(console_env.store_url)
    try:
        running = store.get_document("experiments", EXPERIMENT)
        assert running is not None and running["status"] == "running"
        assert store.get_document("experiments", "ro") is None
    finally:
        store.close()
    # aggregates only: no page shows a user id to a read-only token
    for path in PAGES:
        page.goto(f"{console_env.url}/{path}")
        assert "u000" not in page.content(), path
    cookie = next(c for c in page.context.cookies() if c["name"] == "recsvc_console")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert page.errors == []
