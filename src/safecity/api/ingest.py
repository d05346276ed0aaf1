"""HTTP batch ingest: JSON lines, one device message a line, through the same pipeline as MQTT.

The answer comes once the batch is durable (every accepted event stored, every refused line dead-lettered) and says
what became of each line; content never makes it fail. Under back-pressure the whole batch is refused up front with
503 and `Retry-After`, before any line is taken.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field

from safecity.api.auth import Principal, require
from safecity.api.deps import IntakeDep
from safecity.kernel.errors import Overloaded
from safecity.sensing.normalize import registry
from safecity.sharing.principal import Role

router = APIRouter(prefix="/api/v1/ingest", tags=["ingest"])

RETRY_AFTER_S = 2


def _format_enum(schema: dict[str, Any]) -> None:
    """The OpenAPI enum of `format`: the registered normalizers, read when the schema is generated."""
    schema["enum"] = [spec.key for spec in registry.specs()]


class LineRefusal(BaseModel):
    """Why one line was not accepted."""

    line: int = Field(description="1-based line number in the request body.")
    reason: str = Field(description="Dead-letter reason code.")
    detail: str


class BatchReport(BaseModel):
    """What became of a batch: every line is stored, dead-lettered (a duplicate among them) or discarded."""

    lines: int
    accepted: int = Field(description="Events stored (a line can yield more than one).")
    dead_lettered: list[LineRefusal] = Field(
        description="Lines refused, with the reason; `duplicate` when the same device and `id` was stored before."
    )
    discarded: int = Field(description="Lines dropped on purpose (e.g. biometric data, non-alert IDS records).")
    event_ids: list[str] = Field(description="Ids of the events stored, in line order.")


@router.post(
    "/batch",
    response_model=BatchReport,
    status_code=202,
    summary="Ingest a batch of device messages (JSON lines)",
    responses={503: {"description": "Back-pressure: nothing was taken; retry after `Retry-After` seconds."}},
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/x-ndjson": {"schema": {"type": "string"}},
                "application/jsonl": {"schema": {"type": "string"}},
            },
        }
    },
)
async def ingest_batch(
    request: Request,
    intake: IntakeDep,
    principal: Annotated[Principal, require(Role.INGEST, Role.OPERATOR)],
    fmt: Annotated[
        str,
        Query(
            alias="format",
            description="Payload format of every line: a registered normalizer (else 422 `sensing.unknown_format`).",
            json_schema_extra=_format_enum,
        ),
    ] = "generic",
) -> BatchReport:
    """Each line is one message; `generic` lines carry `device` and `kind`. Bad lines are dead-lettered.

    Answered once the batch is durable. Under back-pressure (the store stalled or its queues filling) the batch is
    refused whole with 503 and `Retry-After` before any line is taken, so a retry sends it again as it is.
    """
    registry.get(fmt)  # an unknown format refuses the whole batch: 422 `sensing.unknown_format`
    cause = intake.pressure()
    if cause is not None:
        intake.refused(cause)
        raise Overloaded(cause=cause, retry_after=RETRY_AFTER_S)
    body = await request.body()
    source = f"http:{principal.name}"
    numbered = [(n, line) for n, line in enumerate(body.splitlines(), start=1) if line.strip()]
    results = [(n, await intake.ingest(line, fmt=fmt, source=source)) for n, line in numbered]
    await intake.settle(result for _, result in results)
    report = BatchReport(lines=len(numbered), accepted=0, dead_lettered=[], discarded=0, event_ids=[])
    for number, result in results:
        not_stored = {event_id for event_id, _ in result.not_stored}
        stored = [env.id for env in result.published if env.id not in not_stored]
        report.accepted += len(stored)
        report.event_ids.extend(stored)
        if result.discarded:
            report.discarded += 1
        for reason, detail in result.dead_lettered:
            report.dead_lettered.append(LineRefusal(line=number, reason=reason, detail=detail))
    return report
