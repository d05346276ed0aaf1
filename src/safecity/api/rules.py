"""Rules through the API: read the running pack, check a pack, replace it (the engine keeps unchanged windows)."""

from __future__ import annotations

from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from safecity.api.auth import Principal, require
from safecity.api.deps import RuleEngineDep, RuleParserDep
from safecity.api.ports import RuleEngine, RuleParser
from safecity.kernel.errors import ServiceUnavailable
from safecity.sharing.principal import Role
from safecity.warning.rules import RuleError, RulePack

log = structlog.get_logger(__name__)

router = APIRouter(prefix="/api/v1/rules", tags=["rules"])

YAML_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"application/yaml": {"schema": {"type": "string"}}, "text/plain": {"schema": {"type": "string"}}},
    }
}
MAX_PACK_BYTES = 1024 * 1024


class RuleIssue(BaseModel):
    """One problem in a rule pack."""

    line: int | None = Field(description="1-based line in the YAML, when known.")
    message: str


class CheckReport(BaseModel):
    """Whether a pack is valid, and why not."""

    valid: bool
    rules: int = Field(description="Enabled rules in the pack (0 when invalid).")
    issues: list[RuleIssue]


class PackSummary(BaseModel):
    """The running pack; watch lists show their size only (they hold pseudonyms, never plates)."""

    source: str
    rules: list[dict[str, Any]]
    watchlists: dict[str, int]
    calendars: dict[str, int]


def _running(engine: RuleEngine | None) -> RuleEngine:
    if engine is None:
        raise ServiceUnavailable(service="rule engine (warning.enabled is false)")
    return engine


async def _parse(request: Request, parse: RuleParser) -> RulePack:
    body = await request.body()
    if len(body) > MAX_PACK_BYTES:
        raise RuleError("<request>", [(None, f"the pack has {len(body)} bytes; the limit is {MAX_PACK_BYTES}")])
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as err:
        raise RuleError("<request>", [(None, "the pack is not UTF-8 text")]) from err
    return parse(text, "<request>")


def _summary(pack: RulePack) -> PackSummary:
    return PackSummary(
        source=pack.source,
        rules=[rule.model_dump(mode="json") for rule in pack.spec.rules],
        watchlists={name: len(hashes) for name, hashes in pack.watchlists.items()},
        calendars={name: len(days) for name, days in pack.calendars.items()},
    )


@router.get("", response_model=PackSummary, summary="The running rule pack")
async def get_rules(
    engine: RuleEngineDep, _: Annotated[Principal, require(Role.OPERATOR, Role.DISPATCHER)]
) -> PackSummary:
    """Every rule of the running pack, as its YAML document would give it."""
    return _summary(_running(engine).engine.pack)


@router.post("/check", response_model=CheckReport, summary="Check a rule pack (YAML)", openapi_extra=YAML_BODY)
async def check_rules(
    request: Request, parse: RuleParserDep, _: Annotated[Principal, require(Role.OPERATOR)]
) -> CheckReport:
    """Validate a pack without running it: line-numbered issues, like `safecity rules check`."""
    try:
        pack = await _parse(request, parse)
    except RuleError as err:
        return CheckReport(valid=False, rules=0, issues=[RuleIssue(line=ln, message=msg) for ln, msg in err.issues])
    return CheckReport(valid=True, rules=len(pack), issues=[])


@router.put("", response_model=PackSummary, summary="Replace the running rule pack (YAML)", openapi_extra=YAML_BODY)
async def put_rules(
    request: Request,
    engine: RuleEngineDep,
    parse: RuleParserDep,
    who: Annotated[Principal, require(Role.OPERATOR)],
) -> PackSummary:
    """Swap in a new pack at once; open windows of unchanged rules carry over. An invalid pack changes nothing."""
    running = _running(engine)
    pack = await _parse(request, parse)  # RuleError -> 422 problem with the issues
    running.reload(pack)
    log.info("rules_replaced", actor=who.name, rules=len(pack))
    return _summary(pack)
