"""Alert routes: list / read / acknowledge / assign / resolve / cancel, CAP per alert, and the public CAP feed.

The public feed (`/cap/feed.atom`, `/cap/alerts/{public_id}.xml`) needs no key: other agencies' CAP aggregators poll
it and cannot hold our keys. It shows only alerts whose rule's audience is Public, by unguessable public ids, and
their public content only (no actors, feedback or assignees). It is paged (RFC 5005 `next`/`prev` links) and covers
the alerts changed in the last `FEED_WINDOW`.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Annotated, Any
from xml.sax.saxutils import escape

from fastapi import APIRouter, Path, Query, Request, Response
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from safecity.api.auth import Principal, Role, require
from safecity.api.deps import AlertsDep, SettingsDep
from safecity.api.problems import PROBLEM_RESPONSES
from safecity.kernel import clock
from safecity.kernel.errors import InvalidInput
from safecity.kernel.settings import Settings
from safecity.warning import cap
from safecity.warning.alert_views import (
    FEED_PAGE,
    Alert,
    AlertNotFound,
    AlertPage,
    alert_of_public_id,
    public_id,
)
from safecity.warning.model import AlertState, Category, Severity

READ = require(Role.OPERATOR, Role.DISPATCHER, Role.RESPONDER, Role.READER)
Acknowledger = Annotated[Principal, require(Role.OPERATOR, Role.DISPATCHER, Role.RESPONDER)]
Assigner = Annotated[Principal, require(Role.OPERATOR, Role.DISPATCHER)]

_ULID = r"^[0-9A-HJKMNP-TV-Z]{26}$"
_FILTER = r"^[^\x00-\x1f\x7f]*$"
_TEXT = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*$"
ATOM_MEDIA_TYPE = "application/atom+xml"

router = APIRouter(prefix="/api/v1/alerts", tags=["alerts"], responses=PROBLEM_RESPONSES)
feed_router = APIRouter(prefix="/cap", tags=["cap feed"])

AlertId = Annotated[str, Path(pattern=_ULID, description="Alert id.")]


def _actor(principal: Principal) -> str:
    return principal.name[:128]


class Acknowledge(BaseModel):
    """Acknowledge an alert (optionally with a note)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    feedback: str | None = Field(None, max_length=2000, pattern=_TEXT)


class Assign(BaseModel):
    """Assign an alert to a unit or person."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    assignee: str = Field(min_length=1, max_length=128, pattern=_FILTER)
    feedback: str | None = Field(None, max_length=2000, pattern=_TEXT)


class Resolve(BaseModel):
    """Resolve an alert with feedback on what was found and done."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    feedback: str = Field(min_length=1, max_length=2000, pattern=_TEXT)


class Cancel(BaseModel):
    """Cancel an alert (false alarm, duplicate, test) with the reason."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    reason: str = Field(min_length=1, max_length=2000, pattern=_TEXT)


_CAP_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {"content": {cap.CAP_MEDIA_TYPE: {"schema": {"type": "string"}}}, "description": "CAP 1.2"}
}


@router.get("", response_model=AlertPage, dependencies=[READ], summary="List alerts")
async def list_alerts(
    alerts: AlertsDep,
    state: AlertState | None = None,
    severity: Severity | None = None,
    category: Category | None = None,
    town: str | None = Query(None, max_length=64, pattern=_FILTER),
    community: str | None = Query(None, max_length=64, pattern=_FILTER),
    since: Annotated[
        AwareDatetime | None, Query(description="Only alerts last seen at or after this time (with a zone).")
    ] = None,
    limit: int = Query(100, ge=1, le=1000),
    offset: int = Query(0, ge=0, le=100_000_000),
) -> AlertPage:
    """Return one page of alerts, newest first, with the total that match."""
    return await alerts.list(
        state=state,
        severity=severity,
        category=category,
        town=town,
        community=community,
        since=since,
        limit=limit,
        offset=offset,
    )


# Declared before "/{alert_id}": that template would otherwise match "<id>.cap" and fail its pattern.
@router.get(
    "/{alert_id}.cap",
    dependencies=[READ],
    response_class=Response,
    responses=_CAP_RESPONSE,
    summary="One alert as CAP 1.2 XML",
)
async def get_alert_cap(alerts: AlertsDep, alert_id: AlertId) -> Response:
    """Return the alert's current CAP message (Alert, Update or Cancel)."""
    message = await alerts.cap_of(alert_id)
    return Response(cap.render_xml(message), media_type=cap.CAP_MEDIA_TYPE)


@router.get("/{alert_id}", response_model=Alert, dependencies=[READ], summary="Get an alert")
async def get_alert(alerts: AlertsDep, alert_id: AlertId) -> Alert:
    """Return one alert with its hop times, per-hop latencies and lifecycle steps."""
    return await alerts.get(alert_id)


@router.post("/{alert_id}/acknowledge", response_model=Alert, summary="Acknowledge an alert")
async def acknowledge_alert(
    alerts: AlertsDep, alert_id: AlertId, caller: Acknowledger, body: Acknowledge | None = None
) -> Alert:
    """new -> acknowledged (operators, dispatchers, responders)."""
    feedback = body.feedback if body is not None else None
    return await alerts.acknowledge(alert_id, _actor(caller), feedback)


@router.post("/{alert_id}/assign", response_model=Alert, summary="Assign an alert")
async def assign_alert(alerts: AlertsDep, alert_id: AlertId, body: Assign, caller: Assigner) -> Alert:
    """Any open state -> assigned (operators, dispatchers)."""
    return await alerts.assign(alert_id, _actor(caller), body.assignee, body.feedback)


@router.post("/{alert_id}/resolve", response_model=Alert, summary="Resolve an alert with feedback")
async def resolve_alert(alerts: AlertsDep, alert_id: AlertId, body: Resolve, caller: Acknowledger) -> Alert:
    """acknowledged | assigned -> resolved (operators, dispatchers, responders)."""
    return await alerts.resolve(alert_id, _actor(caller), body.feedback)


@router.post("/{alert_id}/cancel", response_model=Alert, summary="Cancel an alert")
async def cancel_alert(alerts: AlertsDep, alert_id: AlertId, body: Cancel, caller: Assigner) -> Alert:
    """Any open state -> cancelled (operators, dispatchers)."""
    return await alerts.cancel(alert_id, _actor(caller), body.reason)


# --- public CAP feed --------------------------------------------------------------------------------------------


def _atom_time(value: datetime) -> str:
    # RFC 4287 §3.3 date-time (RFC 3339), UTC.
    return cap.cap_datetime(value).replace("-00:00", "Z")


_CURSOR = r"^\d{1,19}\.[0-9A-HJKMNP-TV-Z]{26}$"
_PUBLIC_ID = r"^[0-9A-HJKMNP-TV-Z]{26}-[0-9a-f]{32}$"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _cursor(alert: Alert) -> str:
    """A feed position: the alert's last change in microseconds since the epoch, and its id."""
    return f"{(alert.updated_at - _EPOCH) // timedelta(microseconds=1)}.{alert.id}"


def _position(cursor: str | None) -> tuple[datetime, str] | None:
    if cursor is None:
        return None
    micros, _, alert_id = cursor.partition(".")
    try:
        return _EPOCH + timedelta(microseconds=int(micros)), alert_id
    except OverflowError as err:  # past year 9999: no alert was ever there
        raise InvalidInput("the feed position is out of range") from err


def _public_secret(settings: Settings) -> bytes:
    """The key public ids are signed with (the district's pseudonym key; `public_id` derives its own use of it)."""
    return settings.security.pseudonym_key.get_secret_value().encode()


def atom_feed(
    base_url: str,
    entries: list[tuple[Alert, cap.CapAlert]],
    sender: str,
    *,
    id_of: Any = str,
    links: dict[str, str] | None = None,
) -> bytes:
    """An Atom index of the feed's alerts; each entry links to the alert's CAP XML (the common CAP-feed shape).

    `links` are the paging links (RFC 5005 §3: `first`, `next` = older entries, `prev` = newer entries) by relation.
    """
    updated = max((a.updated_at for a, _ in entries), default=None) or clock.now()
    parts = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        '<feed xmlns="http://www.w3.org/2005/Atom">',
        f"<id>{escape(base_url)}/cap/feed.atom</id>",
        f"<title>SafeCity CAP alerts ({escape(sender)})</title>",
        f"<updated>{_atom_time(updated)}</updated>",
        f"<author><name>{escape(sender)}</name></author>",
    ]
    for rel, href in (links or {"self": f"{base_url}/cap/feed.atom"}).items():
        parts.append(f'<link rel="{rel}" href="{escape(href)}"/>')
    for alert, message in entries:
        en = next((i for i in message.infos if i.language == "en-US"), message.infos[0])
        url = f"{base_url}/cap/alerts/{id_of(alert.id)}.xml"
        parts += [
            "<entry>",
            f"<id>urn:safecity:{escape(sender)}:{escape(message.identifier)}</id>",
            f"<title>{escape(message.msg_type.value)}: {escape(en.headline or en.event)}</title>",
            f"<updated>{_atom_time(message.sent)}</updated>",
            f"<summary>{escape(alert.severity.value)} / {escape(en.urgency.value)}</summary>",
            f'<link rel="alternate" type="{cap.CAP_MEDIA_TYPE}" href="{escape(url)}"/>',
            "</entry>",
        ]
    parts.append("</feed>")
    return "\n".join(parts).encode()


@feed_router.get(
    "/feed.atom",
    response_class=Response,
    responses={200: {"content": {ATOM_MEDIA_TYPE: {"schema": {"type": "string"}}}, "description": "Atom"}},
    summary="Public CAP feed (Atom index, paged)",
)
async def cap_feed(
    request: Request,
    alerts: AlertsDep,
    settings: SettingsDep,
    before: Annotated[str | None, Query(pattern=_CURSOR, description="Older than this position (`next`).")] = None,
    after: Annotated[str | None, Query(pattern=_CURSOR, description="Newer than this position (`prev`).")] = None,
    limit: Annotated[int, Query(ge=1, le=500, description="Entries a page.")] = FEED_PAGE,
) -> Response:
    """Public alerts changed in the last 7 days, newest first, each as its current CAP message (Alert, Update,
    resolved Update or Cancel); no key needed. Paged with RFC 5005 `next` (older) and `prev` (newer) links."""
    id_of = partial(public_id, _public_secret(settings))
    page = await alerts.feed(id_of=id_of, before=_position(before), after=_position(after), limit=limit)
    base = str(request.base_url).rstrip("/")
    first = f"{base}/cap/feed.atom" + (f"?limit={limit}" if limit != FEED_PAGE else "")
    sep = "&" if "?" in first else "?"
    links = {"self": str(request.url), "first": first}
    if page.entries and page.has_older:
        links["next"] = f"{first}{sep}before={_cursor(page.entries[-1][0])}"
    if page.entries and page.has_newer:
        links["prev"] = f"{first}{sep}after={_cursor(page.entries[0][0])}"
    body = atom_feed(base, page.entries, alerts.sender, id_of=id_of, links=links)
    return Response(body, media_type=ATOM_MEDIA_TYPE)


@feed_router.get(
    "/alerts/{public_alert_id}.xml",
    response_class=Response,
    responses={**_CAP_RESPONSE, **PROBLEM_RESPONSES},
    summary="Public CAP 1.2 XML of one public alert",
)
async def public_cap(
    alerts: AlertsDep,
    settings: SettingsDep,
    public_alert_id: Annotated[str, Path(max_length=80, description="The alert's public id (from the feed).")],
) -> Response:
    """The public alert's current CAP message; no key needed (other agencies' systems fetch it). Restricted alerts,
    and ids that are not ours, are not found."""
    secret = _public_secret(settings)
    # Anything that is not one of our public ids is simply not found (no hint of which part was wrong).
    alert_id = alert_of_public_id(secret, public_alert_id) if re.match(_PUBLIC_ID, public_alert_id) else None
    if alert_id is None:
        raise AlertNotFound(id=public_alert_id)
    message = await alerts.public_cap_of(alert_id, id_of=partial(public_id, secret))
    return Response(cap.render_xml(message), media_type=cap.CAP_MEDIA_TYPE)
