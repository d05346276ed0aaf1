"""Browser tests of the command centre: a real `safecity demo` node on a free port with its own data dir, Debian's
chromium driven by Playwright, and a guard that fails a test on any non-loopback request or console error.

No mocks: the page talks to the real server, which runs the synthetic district, its sensors and its dispatch floor.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from safecity.web.chromium import CHROMIUM, HEADLESS_ARGS
from tests.conftest import REPO_ROOT, free_port

CHROMIUM_ARGS = [*HEADLESS_ARGS, "--disable-gpu"]
# The screenshots in docs/ are refreshed on request (SAFECITY_UPDATE_SCREENSHOTS=1); other runs still take them, into
# a scratch folder, so a test run leaves the checkout clean.
SCREENSHOTS = (
    REPO_ROOT / "docs" / "img"
    if os.environ.get("SAFECITY_UPDATE_SCREENSHOTS") == "1"
    else Path(tempfile.gettempdir()) / "safecity-screenshots"
)
LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}
START_TIMEOUT_S = 90.0
LOG_TAIL_CHARS = 6000


@dataclass
class Node:
    """A running demo node: its address, admin key and an HTTP client."""

    url: str
    admin_key: str
    data_dir: Path
    process: subprocess.Popen[bytes]
    keys: dict[str, str] = field(default_factory=dict)

    def client(self, key: str | None = None) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"X-API-Key": key or self.admin_key}, timeout=30)

    def key(self, role: str) -> str:
        """An API key of `role` (made once per node through the admin API)."""
        if role == "admin":
            return self.admin_key
        if role not in self.keys:
            with self.client() as http:
                made = http.post("/api/v1/keys", json={"name": f"e2e {role}", "role": role})
                made.raise_for_status()
                self.keys[role] = made.json()["key"]
        return self.keys[role]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A failed test's report carries the end of its demo node's log (what the server did while the page waited)."""
    report: pytest.TestReport = yield
    node = getattr(item, "funcargs", {}).get("node")
    if report.failed and isinstance(node, Node):
        log = node.data_dir / "demo.log"
        tail = log.read_text(errors="replace")[-LOG_TAIL_CHARS:] if log.is_file() else "(no demo.log)"
        report.sections.append(("demo node log (end)", tail))
    return report


@pytest.fixture(scope="session")
def ui_build() -> Path:
    """The built UI (built here when missing or stale, as `safecity demo` would)."""
    from safecity.web.build import UiBuildError, ensure_built

    try:
        return ensure_built()
    except UiBuildError as err:
        pytest.fail(str(err))


@pytest.fixture(scope="module")
def node(ui_build: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    """`safecity demo` on a free port with a fresh data dir (small fleet, low rate: the browser tests' load)."""
    data_dir = tmp_path_factory.mktemp("demo")
    port = free_port()
    exe = Path(sys.executable).parent / "safecity"
    log = (data_dir / "demo.log").open("wb")
    process = subprocess.Popen(
        [str(exe), "demo", "--port", str(port), "--data-dir", str(data_dir), "--devices", "400", "--rate", "40"],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "COLUMNS": "200"},
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, data_dir, process)
        yield Node(url=url, admin_key=(data_dir / "demo.key").read_text().strip(), data_dir=data_dir, process=process)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGINT)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)
        log.close()


def _wait_ready(url: str, data_dir: Path, process: subprocess.Popen[bytes]) -> None:
    """Until the node answers, its road tiles are baked and the dispatch floor has its responders."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"demo exited {process.returncode}: {(data_dir / 'demo.log').read_text()[-3000:]}")
        key_file = data_dir / "demo.key"
        if key_file.is_file():
            try:
                headers = {"X-API-Key": key_file.read_text().strip()}
                info = httpx.get(f"{url}/api/v1/routing/info", headers=headers, timeout=2).json()
                units = httpx.get(f"{url}/api/v1/responders", headers=headers, timeout=2).json()
                if info.get("tiles") and len(units) >= 20:
                    return
            except (httpx.HTTPError, ValueError):
                pass
        time.sleep(0.3)
    raise RuntimeError(f"demo not ready in {START_TIMEOUT_S} s: {(data_dir / 'demo.log').read_text()[-3000:]}")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's chromium, headless, through Playwright (never a downloaded browser). Module-scoped: Playwright's sync
    API keeps an event loop running in this thread while it is open, so it must be closed before a worker goes on to
    an asyncio test file."""
    from playwright.sync_api import sync_playwright

    if not CHROMIUM.is_file():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (./scripts/test installs it as root)")
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        yield launched
        launched.close()


@dataclass
class Guard:
    """What a page did that a test must not: requests off this machine, console errors, uncaught exceptions."""

    offsite: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    allowed: list[re.Pattern[str]] = field(default_factory=list)

    def allow(self, pattern: str) -> None:
        """Expect console errors matching `pattern` (e.g. the browser's line for a refusal the test provokes)."""
        self.allowed.append(re.compile(pattern))

    def problems(self) -> list[str]:
        unexpected = [e for e in self.errors if not any(p.search(e) for p in self.allowed)]
        return [f"non-loopback request: {u}" for u in self.offsite] + [f"console error: {e}" for e in unexpected]


PageFactory = Callable[..., Any]


@pytest.fixture
def open_page(browser: Any, node: Node) -> Iterator[tuple[PageFactory, Guard]]:
    """`page = open_page(role="operator", lang=None)`: a fresh context logged in with a key of `role` (through the
    `#key=` fragment, as `safecity demo` prints it), guarded; the test fails on what the guard saw."""
    guard = Guard()
    contexts: list[Any] = []

    def make(role: str = "operator", *, lang: str | None = None, wait: bool = True) -> Any:
        context = browser.new_context(viewport={"width": 1440, "height": 900}, locale="zh-CN")
        contexts.append(context)
        if lang is not None:
            context.add_init_script(f"localStorage.setItem('safecity.lang', {lang!r})")
        context.route("**/*", _block_offsite(guard))
        page = context.new_page()
        page.on("console", lambda m: m.type == "error" and guard.errors.append(m.text))
        page.on("pageerror", lambda exc: guard.errors.append(f"uncaught: {exc}"))
        page.on("websocket", lambda ws: _check_socket(guard, ws.url))
        page.goto(f"{node.url}/#key={node.key(role)}")
        if wait:
            page.wait_for_selector("body[data-ready='true']", timeout=30_000)
        return page

    yield make, guard
    for context in contexts:
        context.close()
    problems = guard.problems()
    assert not problems, "\n".join(problems)


def _block_offsite(guard: Guard) -> Callable[[Any], None]:
    def handle(route: Any) -> None:
        url = route.request.url
        parts = urlsplit(url)
        if parts.scheme in ("data", "blob") or (parts.hostname or "") in LOOPBACK:
            route.continue_()
        else:
            guard.offsite.append(url)
            route.abort()

    return handle


def _check_socket(guard: Guard, url: str) -> None:
    if (urlsplit(url).hostname or "") not in LOOPBACK:
        guard.offsite.append(url)


def screenshot(page: Any, name: str) -> None:
    """Save a screenshot of the main views for docs/ (docs/img/ui-<name>.png)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"ui-{name}.png"))
