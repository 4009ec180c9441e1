"""Every user-facing failure of the CLI is one line on stderr and exit status 2.

Most cases call ``recsvc.cli.main`` in the test process (what the console script runs);
two run the real console script as a subprocess to prove no traceback reaches a shell.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from recsvc.cli import main

ROOT = Path(__file__).resolve().parents[2]


def _fails(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """Run the CLI; assert exit 2 with exactly one line on stderr (progress lines of
    ``--quiet``-less commands and JSON log records aside); return that line."""
    code = main(list(argv))
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("{")]
    assert code == 2, err
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def _interactions(tmp_path: Path, rows: list[str], items_rows: list[str] | None = None) -> Path:
    data = tmp_path / "data"
    data.mkdir()
    (data / "interactions.csv").write_text(
        "user_id,item_id,timestamp,weight\n" + "\n".join(rows) + "\n"
    )
    if items_rows is not None:
        (data / "items.csv").write_text("item_id,regions\n" + "\n".join(items_rows) + "\n")
    return data


def test_weight_that_float32_cannot_hold_is_refused_with_row(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    data = _interactions(tmp_path, ["u1,i1,1700000000,1", "u1,i2,1700000001,1e300"])
    line = _fails(capsys, "train", "--data", str(data), "--out", str(tmp_path / "out"), "--quiet")
    assert "interactions.csv" in line and "row 3" in line and "'weight'" in line
    assert "1e300" in line or "1e+300" in line
    assert not (tmp_path / "out" / "current").exists()


def test_regions_with_another_separator_are_refused_with_row(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    data = _interactions(
        tmp_path, ["u1,i1,1700000000,1", "u2,i2,1700000001,1"], ["i1,DE|FR", "i2,DE;FR"]
    )
    line = _fails(capsys, "train", "--data", str(data), "--out", str(tmp_path / "out"), "--quiet")
    assert "items.csv" in line and "row 3" in line and "'regions'" in line
    assert "'DE|FR'" in line  # the fix is suggested


def test_unknown_log_level(edge_bundle, capsys) -> None:  # type: ignore[no-untyped-def]
    line = _fails(capsys, "serve", "--artifacts", str(edge_bundle), "--log-level", "verbose")
    assert line.startswith("recsvc serve: error: --log-level:") and "DEBUG" in line


def test_unknown_bandit_parameter_names_the_known_ones(edge_bundle, capsys) -> None:  # type: ignore[no-untyped-def]
    line = _fails(
        capsys,
        "serve",
        "--artifacts",
        str(edge_bundle),
        "--bandit-params",
        '{"ts": {"refrsh_ms": 0}}',
    )
    assert "'refrsh_ms'" in line and "refresh_ms" in line and "explore_share" in line
    line = _fails(
        capsys, "serve", "--artifacts", str(edge_bundle), "--bandit-params", '{"thompson": {}}'
    )
    assert "'thompson'" in line and "lints" in line


def _listening() -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


def test_port_in_use_is_one_line_from_the_console_script(edge_bundle) -> None:  # type: ignore[no-untyped-def]
    with _listening() as taken:
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "recsvc.cli", "serve", "--artifacts", str(edge_bundle),
             "--host", "127.0.0.1", "--port", str(port), "--feature-store", "none"],
            cwd=ROOT, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    assert done.returncode == 2, done.stderr
    lines = [ln for ln in done.stderr.splitlines() if ln.strip() and not ln.startswith("{")]
    assert lines == [f"recsvc serve: error: --port: cannot listen on 127.0.0.1:{port}: "
                     "Address already in use"], done.stderr  # fmt: skip


def test_port_in_use_with_workers(edge_bundle, capsys) -> None:  # type: ignore[no-untyped-def]
    with _listening() as taken:
        port = str(taken.getsockname()[1])
        line = _fails(capsys, "serve", "--artifacts", str(edge_bundle), "--host", "127.0.0.1",
                      "--port", port, "--workers", "2", "--feature-store", "none")  # fmt: skip
    assert "--port" in line and "in use" in line


def _self_signed(directory: Path, name: str) -> tuple[Path, Path]:
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=localhost"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl CLI not installed")
def test_tls_key_of_another_certificate(edge_bundle, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    cert, _ = _self_signed(tmp_path, "a")
    _, other_key = _self_signed(tmp_path, "b")
    base = ["serve", "--artifacts", str(edge_bundle), "--host", "127.0.0.1", "--port", "0",
            "--feature-store", "none", "--tls-cert", str(cert)]  # fmt: skip
    line = _fails(capsys, *base, "--tls-key", str(other_key))
    assert "--tls-key" in line and "is not the private key of --tls-cert" in line
    (tmp_path / "junk.key").write_text("not a key\n")
    line = _fails(capsys, *base, "--tls-key", str(tmp_path / "junk.key"))
    assert "PEM" in line


def test_query_errors_exit_2(capsys) -> None:  # type: ignore[no-untyped-def]
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    line = _fails(capsys, "query", "--user", "u1", "--target", f"127.0.0.1:{port}",
                  "--timeout", "2")  # fmt: skip
    assert line.startswith("recsvc query: error: UNAVAILABLE")
    line = _fails(capsys, "query", "--user", "u1", "--k", "0")
    assert "--k" in line


def test_query_refused_request_exits_2(edge_server, capsys) -> None:  # type: ignore[no-untyped-def]
    line = _fails(capsys, "query", "--user", "", "--target", f"127.0.0.1:{edge_server.port}")
    assert "INVALID_ARGUMENT" in line and "user_id" in line


@pytest.mark.parametrize("command", ["export", "audience"])
def test_a_selection_of_nobody_is_refused_unless_allowed(
    edge_bundle, tmp_path, capsys, command
) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "nobody.csv"
    items = tmp_path / "items.txt"
    items.write_text("i070\n")
    what = ["--k", "3"] if command == "export" else ["--top", "3", "--items", str(items)]
    argv = [command, "--artifacts", str(edge_bundle), "--out", str(out), *what,
            "--segment", 'region == "atlantis"', "--feature-store", "none",
            "--no-progress"]  # fmt: skip
    line = _fails(capsys, *argv)
    assert "matches none of" in line and "--allow-empty" in line
    assert not out.exists() and not list(tmp_path.glob(".nobody*"))
    assert main([*argv, "--allow-empty"]) == 0
    assert out.read_text().count("\n") == 1  # the header only


def test_users_file_of_suppressed_users_only_is_refused(edge_bundle, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    users = tmp_path / "users.txt"
    users.write_text("u001\nu002\n")
    suppress = tmp_path / "suppress.txt"
    suppress.write_text("u001\nu002\n")
    line = _fails(capsys, "export", "--artifacts", str(edge_bundle), "--out",
                  str(tmp_path / "o.csv"), "--k", "3", "--users", str(users), "--suppress",
                  str(suppress), "--feature-store", "none", "--no-progress")  # fmt: skip
    assert "no user left to export" in line and "2 suppressed" in line


def test_experiment_segment_field_checked_with_serves_artifacts(
    edge_bundle, tmp_path, capsys, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    spec = tmp_path / "exp.yaml"
    spec.write_text(
        "name: seg-check\nsalt: seg-check-1\ntraffic: 1.0\nsegment: 'regoin == \"north\"'\n"
        "variants:\n  - {name: a, weight: 0.5}\n  - {name: b, weight: 0.5}\n"
    )
    store = f"sqlite:///{tmp_path / 'store.sqlite'}"
    argv = ["experiments", "create", "--file", str(spec), "--feature-store", store, "--dry-run"]
    monkeypatch.delenv("RECSVC_ARTIFACTS", raising=False)
    err = _fails(capsys, *argv)  # nothing to check against: refused, saying how to give one
    assert "user feature 'regoin' cannot be checked" in err and "--artifacts ROOT" in err
    assert main([*argv, "--allow-unchecked-segment"]) == 0  # the explicit opt-out
    assert "segment field(s) regoin not checked" in capsys.readouterr().err
    monkeypatch.setenv("RECSVC_ARTIFACTS", str(edge_bundle))
    err = _fails(capsys, *argv)
    assert "unknown field 'regoin'" in err and "region" in err


def test_bad_store_url_for_train_is_refused_before_training(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    data = _interactions(
        tmp_path, [f"u{u},i{i},2024-01-0{1 + i},1" for u in range(6) for i in range(4)]
    )
    out = tmp_path / "bundles"
    line = _fails(
        capsys, "train", "--data", str(data), "--out", str(out), "--feature-store", "nosql://x"
    )
    assert "--feature-store" in line and "unsupported scheme" in line
    assert not (out / "current").exists()


def test_train_with_feature_store_none_materializes_nothing_and_succeeds(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    data = _interactions(
        tmp_path, [f"u{u},i{(u + i) % 5},2024-01-0{1 + i},1" for u in range(8) for i in range(3)]
    )
    out = tmp_path / "bundles"
    argv = ["train", "--data", str(data), "--out", str(out), "--feature-store", "none"]
    code = main(
        [*argv, "--no-tune", "--no-hybrid", "--factors", "4", "--iterations", "2", "--quiet"]
    )
    err = capsys.readouterr().err
    assert code == 0, err
    assert (out / "current").is_symlink()
    assert "error" not in err and "not materialized" not in err
    assert not list(out.glob("*.sqlite"))
