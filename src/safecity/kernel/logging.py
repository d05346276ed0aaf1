"""Structured JSON logs (structlog) with the correlation id of the message being handled, and secrets redacted.

No secret reaches a log line: `RedactSecrets` rewrites standard-library records (uvicorn's access and WebSocket
lines, the websockets library's debug handshake) before any handler formats them. It removes the values of secret
query parameters (`?key=`, `token`, `ticket`, ...), anything shaped like an API key (`sc_...`), and credential
headers (`X-API-Key`, `Authorization`, a `bearer.` WebSocket subprotocol).
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import structlog

from safecity.kernel.envelope import Context

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}

REDACTED = "[redacted]"
# Loggers that write request lines: uvicorn's access log and its WebSocket handshake lines ("uvicorn.error").
REQUEST_LOGGERS = ("uvicorn.access", "uvicorn.error", "uvicorn")
_SECRET_PATTERNS = (
    # Query parameters that carry credentials, in a path or a full URL (`?key=sc_...&min_severity=Severe`).
    re.compile(r"(?i)([?&;](?:key|api_key|apikey|api-key|token|access_token|ticket|secret|password)=)[^&;\s\"'#]*"),
    # Credential headers, as the websockets library's debug log writes them ("> X-API-Key: ...").
    re.compile(r"(?i)((?:x-api-key|authorization|cookie|sec-websocket-protocol)\s*[:=]\s*)[^\r\n\"']+"),
    # A bearer subprotocol offered by a WebSocket client ("bearer.sc_...").
    re.compile(r"(?i)(\bbearer\.)[^\s,\"']+"),
    # Anything shaped like one of our API keys, wherever it appears.
    re.compile(r"()\bsc_[A-Za-z0-9_\-]{6,}"),
)


def redact(text: str) -> str:
    """Return `text` with secret query values, credential headers and API keys replaced by `[redacted]`."""
    if not text:
        return text
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(lambda m: m.group(1) + REDACTED, text)
    return text


def _redact_arg(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, bytes):
        return redact(value.decode("utf-8", "replace"))
    return value


class RedactSecrets(logging.Filter):
    """A logging filter that removes secrets from a record's message and arguments (it never drops a record)."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the record in place; always keep it.

        Arguments are redacted one by one first, so formatters that read them (uvicorn's access formatter unpacks
        its five) keep working; when a secret only shows once they are put together (the websockets library logs a
        header's name and value as two arguments), the record becomes its redacted, formatted message.
        """
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, dict):
            record.args = {k: _redact_arg(v) for k, v in record.args.items()}
        elif record.args:
            record.args = tuple(_redact_arg(a) for a in record.args)
        if record.args:
            try:
                message = record.getMessage()
            except (TypeError, ValueError):  # arguments that do not fit the format: left as they are
                return True
            redacted = redact(message)
            if redacted != message:
                record.msg, record.args = redacted, None
        return True


_FILTER = RedactSecrets()


def install_redaction() -> None:
    """Attach the redaction filter to the request loggers and to every root handler (idempotent).

    Logger filters cover uvicorn's own handlers (its default log config); handler filters cover records that
    propagate to the root from any library, since a logger's filters do not run for its children's records.
    """
    for name in REQUEST_LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
    for handler in logging.getLogger().handlers:
        if _FILTER not in handler.filters:
            handler.addFilter(_FILTER)


def configure(level: str = "info", json: bool = True) -> None:
    """Configure structlog and the standard library logging to emit one JSON object a line."""
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,
    ]
    renderer: Any = structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer()
    structlog.configure(
        processors=[*processors, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=False,
    )
    logging.basicConfig(level=_LEVELS[level], stream=sys.stderr, format="%(message)s")
    install_redaction()


@contextmanager
def bound_context(context: Context) -> Iterator[None]:
    """Bind a message's correlation id, actor and parent id to every log line inside the block."""
    tokens = structlog.contextvars.bind_contextvars(
        correlation_id=context.correlation_id, actor=context.actor, parent_id=context.parent_id
    )
    try:
        yield
    finally:
        structlog.contextvars.reset_contextvars(**tokens)
