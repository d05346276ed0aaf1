"""HTTP batch ingest: JSON lines, one device message a line, through the same pipeline as MQTT."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field

from safecity.api.auth import Principal, require
from safecity.sharing.keys import Role

router = APIRouter(prefix="/api/v1/ingest", tags=["ingest"])


class LineRefusal(BaseModel):
    """Why one line was not accepted."""

    line: int = Field(description="1-based line number in the request body.")
    reason: str = Field(description="Dead-letter reason code.")
    detail: str


class BatchReport(BaseModel):
    """What became of a batch."""

    lines: int
    accepted: int = Field(description="Events published (a line can yield more than one).")
    dead_lettered: list[LineRefusal]
    discarded: int = Field(description="Lines dropped on purpose (e.g. biometric data, non-alert IDS records).")
    event_ids: list[str]


@router.post(
    "/batch",
    response_model=BatchReport,
    status_code=202,
    summary="Ingest a batch of device messages (JSON lines)",
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
    principal: Annotated[Principal, require(Role.INGEST, Role.OPERATOR)],
    fmt: Annotated[
        Literal["generic", "frigate", "checkpoint", "suricata"],
        Query(alias="format", description="Payload format of every line."),
    ] = "generic",
) -> BatchReport:
    """Each line is one message; `generic` lines carry `device` and `kind`. Bad lines are dead-lettered."""
    runtime = request.app.state.runtime
    body = await request.body()
    report = BatchReport(lines=0, accepted=0, dead_lettered=[], discarded=0, event_ids=[])
    source = f"http:{principal.name}"
    for number, line in enumerate(body.splitlines(), start=1):
        if not line.strip():
            continue
        report.lines += 1
        result = await runtime.pipeline.ingest(line, fmt=fmt, source=source)
        report.accepted += len(result.published)
        report.event_ids.extend(env.id for env in result.published)
        if result.discarded:
            report.discarded += 1
        for reason, detail in result.dead_lettered:
            report.dead_lettered.append(LineRefusal(line=number, reason=reason, detail=detail))
    return report
