"""No API key reaches a log line: a real `safecity serve` on a loopback port, every auth path, all its output read.

Paths: `X-API-Key`, `Authorization: Bearer`, `?key=` on REST (not an auth path there: refused, but in the URL) and on
the live WebSocket, the `safecity, bearer.<key>` subprotocols, and refused attempts with wrong keys on each.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from tests.conftest import free_port
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

SAFECITY = str(Path(sys.executable).with_name("safecity"))
ADMIN_KEY = "sc_" + secrets.token_urlsafe(24)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path, subprocess.Popen[bytes]]]:
    """`safecity serve` at debug level, stdout and stderr in a file; yields (base URL, log file, process)."""
    port = free_port()
    config = tmp_path / "safecity.toml"
    config.write_text(
        "\n".join(
            [
                'node_id = "redaction-test"',
                "log_json = true",
                'log_level = "debug"',
                "[database]",
                f'url = "sqlite+aiosqlite:///{tmp_path / "node.db"}"',
                "[http]",
                f"port = {port}",
                "",
            ]
        )
    )
    env = {**os.environ, "SAFECITY_SECURITY__BOOTSTRAP_ADMIN_KEY": ADMIN_KEY}
    log_path = tmp_path / "serve.log"
    url = f"http://127.0.0.1:{port}"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [SAFECITY, "serve", "--config", str(config)], stdout=log, stderr=subprocess.STDOUT, env=env
        )
        try:
            deadline = time.monotonic() + 60
            while True:
                assert proc.poll() is None, "safecity serve exited:\n" + log_path.read_text()
                try:
                    if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "never ready:\n" + log_path.read_text()
                time.sleep(0.1)
            yield url, log_path, proc
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def _refused(url: str, **kwargs: object) -> int:
    with pytest.raises(InvalidStatus) as refused:
        connect(url, open_timeout=10, **kwargs)  # type: ignore[arg-type]
    return refused.value.response.status_code


def test_no_key_in_any_log_line(server: tuple[str, Path, subprocess.Popen[bytes]]) -> None:
    url, log_path, proc = server
    ws = url.replace("http://", "ws://") + "/api/v1/alerts/live"
    admin = {"X-API-Key": ADMIN_KEY}
    created = httpx.post(f"{url}/api/v1/keys", json={"name": "night desk", "role": "operator"}, headers=admin)
    assert created.status_code == 201, created.text
    key = created.json()["key"]
    wrong_keys = ["sc_" + secrets.token_urlsafe(24), "hunter2-" + secrets.token_hex(8)]

    # REST: header key, bearer, ?key= (not accepted on REST, but it is in the request line), and refusals.
    assert httpx.get(f"{url}/api/v1/me", headers={"X-API-Key": key}).status_code == 200
    assert httpx.get(f"{url}/api/v1/me", headers={"Authorization": f"Bearer {key}"}).status_code == 200
    assert httpx.get(f"{url}/api/v1/me", params={"key": key}).status_code == 401
    for wrong in wrong_keys:
        assert httpx.get(f"{url}/api/v1/me", headers={"X-API-Key": wrong}).status_code == 401
        assert httpx.get(f"{url}/api/v1/me", headers={"Authorization": f"Bearer {wrong}"}).status_code == 401
        assert httpx.get(f"{url}/api/v1/alerts", params={"key": wrong, "limit": 5}).status_code == 401

    # WebSocket: the bearer subprotocol (the server selects `safecity`, never the key), headers, ?key=, refusals.
    with connect(ws, subprotocols=["safecity", f"bearer.{key}"], open_timeout=10) as sock:  # type: ignore[list-item]
        assert sock.subprotocol == "safecity"
    with connect(ws, additional_headers={"X-API-Key": key}, open_timeout=10) as sock:
        assert sock.subprotocol is None
    with connect(ws, additional_headers={"Authorization": f"Bearer {key}"}, open_timeout=10):
        pass
    with connect(f"{ws}?min_severity=Severe&key={key}", open_timeout=10):
        pass
    for wrong in wrong_keys:
        assert _refused(f"{ws}?key={wrong}") == 403
        assert _refused(ws, subprotocols=["safecity", f"bearer.{wrong}"]) == 403
        assert _refused(ws, additional_headers={"X-API-Key": wrong}) == 403

    # Stop the server so every line is flushed, then read all of its output.
    proc.terminate()
    proc.wait(timeout=30)
    text = log_path.read_text(errors="replace")
    assert '"GET /api/v1/me?key=[redacted] HTTP/1.1" 401' in text  # the access log was captured, redacted
    assert "WebSocket /api/v1/alerts/live?min_severity=Severe&key=[redacted]" in text
    for secret in [ADMIN_KEY, key, *wrong_keys]:
        assert secret not in text, f"a key was logged:\n{text}"
