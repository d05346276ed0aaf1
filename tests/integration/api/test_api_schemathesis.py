"""Property-based run of schemathesis over /openapi.json with an admin key: no request may get a 5xx.

The operations are driven through `APIOperation.as_strategy` (positive and negative cases) rather than
`schemathesis.pytest.from_fixture`, whose lazy loader does not work with pytest 9 (`Function._nodeid`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.python import asgi as schemathesis_asgi

from safecity.api.app import create_app
from safecity.kernel.settings import Settings
from safecity.runtime import Runtime

ADMIN_KEY = "sc_schemathesis-admin-key-000000000000"


@schemathesis.serializer("application/x-ndjson", "application/jsonl")
def _json_lines(ctx: object, value: object) -> bytes:
    """Send generated JSON-lines bodies as they are (a string schema) or as one JSON document."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass")
    return json.dumps(value).encode()


EXAMPLES = 60


@pytest.fixture
def api_schema(db_url: str) -> Iterator[schemathesis.BaseSchema]:
    """The app on a fresh database (SQLite and PostgreSQL), started by schemathesis's ASGI client (lifespan there)."""
    node_settings = Settings(
        database={"url": db_url},
        security={"bootstrap_admin_key": ADMIN_KEY},
        log_json=False,
        # A small road network, so the routing routes are exercised rather than all answering 503.
        roads={"synthetic": True, "synthetic_nodes": 900, "max_matrix_cells": 2500},
    )
    app = create_app(Runtime(node_settings).api_services())
    yield schemathesis.openapi.from_asgi("/openapi.json", app)
    # Stop the runtime now rather than at interpreter exit.
    schemathesis_asgi.shutdown_lifespans()


def server_errors(schema: schemathesis.BaseSchema, headers: dict[str, str], examples: int = EXAMPLES) -> list[str]:
    """Run every operation with positive and negative cases; return one line per operation that got a 5xx."""
    failures: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck), database=None)
            def run(case: schemathesis.Case) -> None:
                case.call_and_validate(headers=headers, checks=[not_a_server_error])

            try:
                run()
            except Unsatisfiable:
                # No parameters, so no negative case exists (e.g. GET /healthz).
                assert mode is GenerationMode.NEGATIVE, operation.label
            except Exception as err:
                failures.append(f"{operation.label} [{mode.value}]: {err}")
    return failures


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_no_server_errors(api_schema: schemathesis.BaseSchema) -> None:
    labels = {result.ok().label for result in api_schema.get_all_operations()}
    assert {"GET /api/v1/devices", "POST /api/v1/devices/import", "DELETE /api/v1/keys/{key_id}"} <= labels
    failures = server_errors(api_schema, {"X-API-Key": ADMIN_KEY})
    assert not failures, "\n\n".join(failures)


def test_the_harness_sees_server_errors() -> None:
    """The run above can fail: the same harness reports a route that answers 500 for some inputs."""
    app = FastAPI()

    @app.get("/fragile")
    async def fragile(n: int = 0) -> dict[str, int]:
        return {"inverse": 1 // n}  # ZeroDivisionError -> 500 when n == 0

    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    try:
        failures = server_errors(schema, {}, examples=20)
    finally:
        schemathesis_asgi.shutdown_lifespans()
    assert any(f.startswith("GET /fragile") for f in failures)
