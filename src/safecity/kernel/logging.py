"""Structured JSON logs (structlog) with the correlation id of the message being handled."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import structlog

from safecity.kernel.envelope import Context

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


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
