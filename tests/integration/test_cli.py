"""The `safecity` command on a temporary SQLite database: db upgrade, keys create, settings errors, serve and demo."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import structlog
from typer.testing import CliRunner

from safecity.cli import app
from safecity.sharing.keys import Role
from tests.conftest import free_port

# The console script of this environment, so the installed entry point itself is exercised.
SAFECITY = str(Path(sys.executable).with_name("safecity"))
# Wide, plain output: rich tables and panels must not wrap or colour what the tests parse.
PLAIN_ENV = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"}
KEY_RE = re.compile(r"\bsc_[A-Za-z0-9_\-]{16,}")


@pytest.fixture
def runner() -> Iterator[CliRunner]:
    """A CLI runner with a wide terminal; the logging set-up a command makes is undone afterwards."""
    # Commands configure structlog and the root logger onto the runner's stderr, which closes after each run; put
    # back what the rest of this test process uses.
    saved_structlog = structlog.get_config()
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    yield CliRunner(env={"COLUMNS": "200", "NO_COLOR": "1"})
    structlog.configure(**saved_structlog)
    root.handlers[:] = saved_handlers
    root.setLevel(saved_level)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """A settings file for a node on a fresh SQLite database, on a free port."""
    path = tmp_path / "safecity.toml"
    path.write_text(
        "\n".join(
            [
                'node_id = "cli-test"',
                "log_json = false",
                'log_level = "warning"',
                "[database]",
                f'url = "sqlite+aiosqlite:///{tmp_path / "node.db"}"',
                "[http]",
                f"port = {free_port()}",
                "",
            ]
        ),
        encoding="utf-8",
    )
    return path


def _port_of(config: Path) -> int:
    found = re.search(r"port = (\d+)", config.read_text(encoding="utf-8"))
    assert found
    return int(found.group(1))


def test_db_upgrade_prints_the_revision(runner: CliRunner, config: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["db", "upgrade", "--config", str(config)])
    assert result.exit_code == 0, result.output
    found = re.search(r"Database at revision (\S+)", result.output)
    assert found, result.output
    assert found.group(1) not in {"None", "none", ""}
    assert (tmp_path / "node.db").is_file()
    # Again: idempotent, same revision.
    again = runner.invoke(app, ["db", "upgrade", "--config", str(config)])
    assert again.exit_code == 0, again.output
    assert f"Database at revision {found.group(1)}" in again.output


def test_bad_role_is_exit_2_with_the_valid_roles(runner: CliRunner, config: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["keys", "create", "bob", "--role", "superuser", "--config", str(config)])
    assert result.exit_code == 2
    assert "Unknown role 'superuser'" in result.output
    for role in Role:
        assert role.value in result.output
    assert not KEY_RE.search(result.output)
    # The role is checked before anything touches the database.
    assert not (tmp_path / "node.db").exists()


def test_missing_role_is_a_usage_error(runner: CliRunner, config: Path) -> None:
    result = runner.invoke(app, ["keys", "create", "bob", "--config", str(config)])
    assert result.exit_code == 2
    assert "--role" in result.output


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ("[database]\nurll = 'sqlite+aiosqlite:///x.db'\n", "database.urll"),
        ("rolle = 'town'\n", "rolle"),
        ("role = 'county'\n", "role"),
        ("[mqtt]\nport = 70000\n", "mqtt.port"),
    ],
)
def test_bad_settings_file_is_exit_2_naming_the_key(runner: CliRunner, tmp_path: Path, body: str, named: str) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(body, encoding="utf-8")
    result = runner.invoke(app, ["db", "upgrade", "--config", str(bad)])
    assert result.exit_code == 2, result.output
    assert "Invalid settings" in result.output
    assert re.search(rf"^{re.escape(named)}\b", result.output, re.MULTILINE), result.output


def test_missing_settings_file_is_exit_2(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(app, ["db", "upgrade", "--config", str(tmp_path / "nope.toml")])
    assert result.exit_code == 2
    assert f"{tmp_path / 'nope.toml'} does not exist" in result.output


@pytest.fixture
def served(config: Path, tmp_path: Path) -> Iterator[str]:
    """`safecity serve --config` in a subprocess; yields its base URL."""
    port = _port_of(config)
    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen([SAFECITY, "serve", "--config", str(config)], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise AssertionError("safecity serve exited:\n" + (tmp_path / "serve.log").read_text())
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError("safecity serve never became ready:\n" + (tmp_path / "serve.log").read_text())
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def test_created_key_authenticates_against_the_served_api(runner: CliRunner, config: Path, served: str) -> None:
    result = subprocess.run(
        [SAFECITY, "keys", "create", "night desk", "--role", "operator", "--config", str(config)],
        capture_output=True,
        text=True,
        env=PLAIN_ENV,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    # The key alone on stdout, so scripts can capture it.
    key = result.stdout.strip()
    assert KEY_RE.fullmatch(key), result.stdout
    assert httpx.get(f"{served}/api/v1/devices", timeout=5).status_code == 401
    response = httpx.get(f"{served}/api/v1/devices", headers={"X-API-Key": key}, timeout=5)
    assert response.status_code == 200, response.text
    bearer = httpx.get(f"{served}/api/v1/devices", headers={"Authorization": f"Bearer {key}"}, timeout=5)
    assert bearer.status_code == 200
    # An operator is not an admin: listing keys is refused.
    assert httpx.get(f"{served}/api/v1/keys", headers={"X-API-Key": key}, timeout=5).status_code == 403
    assert httpx.get(f"{served}/api/v1/devices", headers={"X-API-Key": key + "x"}, timeout=5).status_code == 401


def _table_rows(text: str, title: str) -> dict[str, int]:
    """Rows `name | count` of the rich table printed under `title`."""
    after = text.split(title, 1)
    assert len(after) == 2, f"no table {title!r} in:\n{text}"
    rows: dict[str, int] = {}
    for line in after[1].splitlines()[1:]:
        cells = [c.strip() for c in re.split(r"[│┃|]", line) if c.strip()]
        if len(cells) == 2 and cells[1].isdigit():
            rows[cells[0]] = int(cells[1])
        elif rows and not line.strip().startswith(("└", "╰", "+", "-")):
            continue
        elif rows:
            break
    return rows


@pytest.mark.slow
def test_demo_runs_serves_and_prints_its_summary(tmp_path: Path) -> None:
    port = free_port()
    err_path = tmp_path / "demo.err"
    with err_path.open("w", encoding="utf-8") as err:
        proc = subprocess.Popen(
            [SAFECITY, "demo", "--duration", "4", "--rate", "300", "--port", str(port), "--data-dir", str(tmp_path)],
            stdout=subprocess.DEVNULL,
            stderr=err,
            env=PLAIN_ENV,
        )
        try:
            key = None
            deadline = time.monotonic() + 120
            while key is None and proc.poll() is None and time.monotonic() < deadline:
                found = re.search(r"Admin API key:\s+(sc_demo_[A-Za-z0-9_\-]+)", err_path.read_text(encoding="utf-8"))
                key = found.group(1) if found else None
                time.sleep(0.05)
            assert key, "no banner with an admin key:\n" + err_path.read_text(encoding="utf-8")
            # While it runs, the banner's key opens the API it points at.
            counts = httpx.get(f"http://127.0.0.1:{port}/api/v1/events/counts", headers={"X-API-Key": key}, timeout=5)
            assert counts.status_code == 200, counts.text
            assert proc.wait(timeout=120) == 0, err_path.read_text(encoding="utf-8")
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    text = err_path.read_text(encoding="utf-8")
    assert f"http://127.0.0.1:{port}/docs" in text
    assert "synthetic" in text
    stored = _table_rows(text, "Stored events by kind")
    dead = _table_rows(text, "Dead letters by reason")
    assert sum(stored.values()) > 0, text
    assert "heartbeat" in stored
    assert sum(dead.values()) > 0, text
    assert (tmp_path / "safecity.db").is_file()
