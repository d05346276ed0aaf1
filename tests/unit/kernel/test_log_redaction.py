"""The log filter: secrets out of messages and arguments, uvicorn's access-record shape kept."""

from __future__ import annotations

import logging

from uvicorn.logging import AccessFormatter

from safecity.kernel.logging import RedactSecrets

KEY = "sc_" + "A1b2" * 8


def _record(name: str, msg: str, args: tuple[object, ...]) -> logging.LogRecord:
    record = logging.LogRecord(name, logging.INFO, __file__, 1, msg, args, None)
    assert RedactSecrets().filter(record)
    return record


def test_access_record_keeps_its_five_arguments_for_uvicorns_formatter() -> None:
    record = _record(
        "uvicorn.access",
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "GET", f"/api/v1/alerts/live?min_severity=Severe&key={KEY}", "1.1", 403),
    )
    line = AccessFormatter('%(client_addr)s - "%(request_line)s" %(status_code)s', use_colors=False).format(record)
    expected = '"GET /api/v1/alerts/live?min_severity=Severe&key=[redacted] HTTP/1.1" 403 Forbidden'
    assert line == f"127.0.0.1:5000 - {expected}"


def test_header_split_over_two_arguments_is_redacted() -> None:
    record = _record("websockets.server", "< %s: %s", ("x-api-key", "hunter2"))
    assert record.getMessage() == "< x-api-key: [redacted]"
    record = _record("websockets.server", "< %s: %s", ("sec-websocket-protocol", f"safecity, bearer.{KEY}"))
    assert KEY not in record.getMessage()
    assert _record("x", "ticket %s", ({"ticket": KEY},)).getMessage() == "ticket {'ticket': '[redacted]'}"
