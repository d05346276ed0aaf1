"""`safecity demo` as a real subprocess: Ctrl-C stops it in order, and other commands find the demo's data."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port

SAFECITY = str(Path(sys.executable).with_name("safecity"))
KEY_RE = re.compile(r"Admin API key:\s+(sc_demo_[A-Za-z0-9_\-]+)")


@dataclass
class Demo:
    """A running demo: its process, URL, admin key and output files."""

    proc: subprocess.Popen[bytes]
    url: str
    key: str
    out: Path
    err: Path

    def text(self) -> str:
        return self.out.read_text(encoding="utf-8") + self.err.read_text(encoding="utf-8")


def _env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAFECITY_")}
    # The data dir comes from the environment here, as an operator would set it, so every command finds it.
    return {**env, "SAFECITY_DATA_DIR": str(data_dir), "COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"}


def start_demo(tmp_path: Path, data_dir: Path, *extra: str, name: str = "demo") -> Demo:
    """Start `safecity demo` (small fleet) and wait until its API answers with the banner's key."""
    port = free_port()
    out, err = tmp_path / f"{name}.out", tmp_path / f"{name}.err"
    with out.open("wb") as out_file, err.open("wb") as err_file:
        proc = subprocess.Popen(
            [SAFECITY, "demo", "--devices", "300", "--rate", "200", "--port", str(port), *extra],
            stdout=out_file,
            stderr=err_file,
            env=_env(data_dir),
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the demo exited {proc.returncode}:\n" + err.read_text(encoding="utf-8"))
        found = KEY_RE.search(err.read_text(encoding="utf-8"))
        if found:
            counts = httpx.get(f"{url}/api/v1/events/counts", headers={"X-API-Key": found.group(1)}, timeout=5)
            # Up, and events flowing into the store.
            if counts.status_code == 200 and sum(counts.json().values()) > 0:
                return Demo(proc, url, found.group(1), out, err)
        time.sleep(0.1)
    proc.kill()
    raise AssertionError("the demo never came up:\n" + err.read_text(encoding="utf-8"))


def interrupt(demo: Demo) -> int:
    """Send Ctrl-C (SIGINT) and wait for the exit code."""
    demo.proc.send_signal(signal.SIGINT)
    try:
        return demo.proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        demo.proc.kill()
        demo.proc.wait()
        raise AssertionError("the demo did not stop within 60 s of Ctrl-C:\n" + demo.text()) from None


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "data"
    yield path


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_ctrl_c_stops_in_order_prints_the_summary_and_exits_0(tmp_path: Path, data_dir: Path) -> None:
    demo = start_demo(tmp_path, data_dir)
    code = interrupt(demo)
    text = demo.text()
    assert code == 0, text
    assert "Traceback" not in text, text
    for needle in ("Stored events by kind", "Latest alerts", "Dead letters by"):
        assert needle in text, text
    assert (data_dir / "safecity.db").is_file()


def run_cli(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run a `safecity` command with the demo's environment."""
    return subprocess.run(
        [SAFECITY, *args], capture_output=True, text=True, env=_env(data_dir), timeout=120, check=False
    )


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_keys_and_rules_find_the_demo_database_and_a_rerun_starts_clean(tmp_path: Path, data_dir: Path) -> None:
    demo = start_demo(tmp_path, data_dir)
    try:
        # A key made by `keys create` (same data dir, no config) works against the running demo.
        created = run_cli(data_dir, "keys", "create", "night desk", "--role", "operator")
        assert created.returncode == 0, created.stderr
        key = created.stdout.strip()
        me = httpx.get(f"{demo.url}/api/v1/me", headers={"X-API-Key": key}, timeout=5)
        assert me.status_code == 200, me.text
        listed = run_cli(data_dir, "keys", "list")
        assert listed.returncode == 0, listed.stderr
        assert "night desk" in listed.stdout and "bootstrap admin" in listed.stdout
        key_id = me.json()["key_id"]
        revoked = run_cli(data_dir, "keys", "revoke", key_id)
        assert revoked.returncode == 0, revoked.stderr
        # The demo's key cache holds a verified key for up to 10 s; a fresh principal lookup must fail after that.
        deadline = time.monotonic() + 30
        while httpx.get(f"{demo.url}/api/v1/me", headers={"X-API-Key": key}, timeout=5).status_code != 401:
            assert time.monotonic() < deadline, "the revoked key still works"
            time.sleep(0.5)
        # `rules test` backtests over the demo's stored events (the README's command, as written).
        pack = Path(__file__).resolve().parents[2] / "src" / "safecity" / "warning" / "rulepacks" / "default.yaml"
        backtest = run_cli(data_dir, "rules", "test", str(pack), "--since", "24h")
        assert backtest.returncode == 0, backtest.stderr
        events = re.search(r"events=(\d+)", backtest.stdout)
        assert events and int(events.group(1)) > 0, backtest.stdout
    finally:
        assert interrupt(demo) == 0, demo.text()
    # A second run starts clean: one admin key, no alerts from the first run.
    again = start_demo(tmp_path, data_dir, name="again")
    try:
        keys = httpx.get(f"{again.url}/api/v1/keys", headers={"X-API-Key": again.key}, timeout=5).json()
        assert [k["role"] for k in keys] == ["admin"], keys
        assert again.key != demo.key
    finally:
        assert interrupt(again) == 0, again.text()
    # --keep keeps the earlier run's data and its admin key (no second admin key piles up).
    kept = start_demo(tmp_path, data_dir, "--keep", name="kept")
    try:
        assert kept.key == again.key
        keys = httpx.get(f"{kept.url}/api/v1/keys", headers={"X-API-Key": kept.key}, timeout=5).json()
        assert [k["role"] for k in keys] == ["admin"], keys
    finally:
        assert interrupt(kept) == 0, kept.text()


def test_commands_without_a_database_say_what_to_run_and_create_nothing(tmp_path: Path) -> None:
    data_dir = tmp_path / "nothing-here"
    pack = Path(__file__).resolve().parents[2] / "src" / "safecity" / "warning" / "rulepacks" / "default.yaml"
    for args in (
        ("keys", "create", "x", "--role", "operator"),
        ("keys", "list"),
        ("keys", "revoke", "01HZZZZZZZZZZZZZZZZZZZZZZZ"),
        ("rules", "test", str(pack), "--since", "24h"),
    ):
        result = run_cli(data_dir, *args)
        assert result.returncode == 1, (args, result.stdout, result.stderr)
        assert "safecity db upgrade" in result.stderr and "safecity demo" in result.stderr, result.stderr
        assert str(data_dir / "safecity.db") in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
    assert not data_dir.exists()
