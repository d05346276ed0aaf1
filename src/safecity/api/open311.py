"""The Open311 GeoReport v2 server (`/open311/v2`): discovery, services, service definitions, requests (GET and
POST) and our status-update extension, in JSON or XML as the path's extension says, with the spec's error lists.

Reads are public, as GeoReport servers are, except request descriptions (free text a caller wrote), which are shown
only to callers with a key. Creating a request takes an API key (the spec's `api_key` form field, or the usual
header); a status update takes a department reader's or an operator's key and closes the incident when `closed`.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Literal

import orjson
from fastapi import APIRouter, Request, Response
from lxml import etree

from safecity.api.deps import KeysDep, Open311Dep
from safecity.dispatch.open311 import (
    Open311Error,
    ServiceRequest,
    error_rows,
    render_definition,
    render_list,
)
from safecity.sharing.principal import Principal, Role

router = APIRouter(prefix="/open311/v2", tags=["open311"])

Format = Literal["json", "xml"]
MEDIA = {"json": "application/json", "xml": "text/xml; charset=utf-8"}
CREATORS = frozenset({Role.ADMIN, Role.OPERATOR, Role.DISPATCHER, Role.RESPONDER, Role.CITIZEN})
UPDATERS = frozenset({Role.ADMIN, Role.OPERATOR, Role.READER})
MAX_FORM_FIELDS = 200


def _answer(body: bytes, fmt: str, status: int = 200) -> Response:
    return Response(body, status_code=status, media_type=MEDIA.get(fmt, MEDIA["json"]))


def _error(err: Open311Error, fmt: str) -> Response:
    return _answer(render_list("errors", error_rows(err), fmt if fmt in MEDIA else "json"), fmt, err.status)


async def _principal(request: Request, keys: KeysDep, form_key: str | None) -> Principal | None:
    key = form_key or request.headers.get("x-api-key")
    auth = request.headers.get("authorization", "")
    if not key and auth.lower().startswith("bearer "):
        key = auth[7:].strip()
    return await keys.verify(key) if key else None


async def _form(request: Request) -> dict[str, list[str]]:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type not in ("application/x-www-form-urlencoded", "multipart/form-data"):
        raise Open311Error([(400, "send the request as application/x-www-form-urlencoded form fields")])
    async with request.form(max_files=0, max_fields=MAX_FORM_FIELDS) as form:
        fields: dict[str, list[str]] = {}
        for name, value in form.multi_items():
            if isinstance(value, str):
                fields.setdefault(_printable("a field name", name), []).append(_printable(name, value))
    return fields


def _field(form: dict[str, list[str]], name: str) -> str | None:
    values = form.get(name)
    return values[-1] if values else None


def _dates(text: str | None, name: str) -> datetime | None:
    if text is None:
        return None
    try:
        found = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise Open311Error([(400, f"{name} must be a W3C (ISO 8601) date and time")]) from None
    if found.tzinfo is None:
        raise Open311Error([(400, f"{name} needs a time zone offset")])
    return found


_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _printable(name: str, value: str) -> str:
    """`value`, or the spec's 400 when it holds control characters (no store takes a NUL, no reader wants one)."""
    if _CONTROL.search(value):
        # The name is a client's too (a query parameter's): named escaped, so the error document stays valid XML.
        raise Open311Error([(400, f"{name[:40]!a} holds control characters")])
    return value


def _listed(text: str | None) -> list[str]:
    return [part.strip() for part in (text or "").split(",") if part.strip()][:1000]


def _public(requests: list[ServiceRequest], principal: Principal | None) -> list[ServiceRequest]:
    if principal is not None:
        return requests
    return [r.model_copy(update={"description": None}) for r in requests]


@router.get("/discovery.{fmt}", summary="Open311 discovery")
async def discovery(request: Request, fmt: Format) -> Response:
    """The endpoint and its formats (GeoReport v2 service discovery)."""
    base = str(request.base_url).rstrip("/") + router.prefix
    doc: dict[str, Any] = {
        "changeset": "2026-12-06T00:00:00Z",
        "contact": "SafeCity node operator",
        "key_service": "Ask the node's administrator for an API key (safecity keys create).",
        "endpoints": [
            {
                "specification": "http://wiki.open311.org/GeoReport_v2",
                "url": base,
                "changeset": "2026-12-06T00:00:00Z",
                "type": "production",
                "formats": ["application/json", "text/xml"],
            }
        ],
    }
    if fmt == "json":
        return _answer(orjson.dumps(doc), fmt)
    root = etree.Element("discovery")
    for name in ("changeset", "contact", "key_service"):
        etree.SubElement(root, name).text = doc[name]
    endpoints = etree.SubElement(root, "endpoints")
    for entry in doc["endpoints"]:
        endpoint = etree.SubElement(endpoints, "endpoint")
        for name in ("specification", "url", "changeset", "type"):
            etree.SubElement(endpoint, name).text = entry[name]
        formats = etree.SubElement(endpoint, "formats")
        for media in entry["formats"]:
            etree.SubElement(formats, "format").text = media
    return _answer(etree.tostring(root, xml_declaration=True, encoding="utf-8"), fmt)


@router.get("/services.{fmt}", summary="Open311 service list")
async def services(open311: Open311Dep, fmt: Format) -> Response:
    """The services departments handle here (from the triage table's department routes)."""
    return _answer(render_list("services", open311.services(), fmt), fmt)


@router.get("/services/{service_code}.{fmt}", summary="Open311 service definition")
async def service_definition(open311: Open311Dep, service_code: str, fmt: Format) -> Response:
    """The attributes a service asks for; 404 in the spec's error format for an unknown code."""
    try:
        return _answer(render_definition(open311.definition(service_code), fmt), fmt)
    except Open311Error as err:
        return _error(err, fmt)


@router.get("/requests.{fmt}", summary="Open311 service requests")
async def list_requests(
    request: Request,
    open311: Open311Dep,
    keys: KeysDep,
    fmt: Format,
    service_request_id: str | None = None,
    service_code: str | None = None,
    start_date: str | None = None,
    end_date: str | None = None,
    status: str | None = None,
) -> Response:
    """Requests by id (comma list; then the other filters are ignored), or by service code, status and dates
    (default: the last 90 days), newest first, at most 1,000."""
    try:
        for name, value in request.query_params.multi_items():
            _printable(name, value)
        principal = await _principal(request, keys, request.query_params.get("api_key"))
        found = await open311.requests(
            ids=_listed(service_request_id),
            service_codes=_listed(service_code),
            start=_dates(start_date, "start_date"),
            end=_dates(end_date, "end_date"),
            statuses=_listed(status),
        )
        return _answer(render_list("requests", _public(found, principal), fmt), fmt)
    except Open311Error as err:
        return _error(err, fmt)


@router.post("/requests.{fmt}", summary="Create an Open311 service request")
async def create_request(request: Request, open311: Open311Dep, keys: KeysDep, fmt: Format) -> Response:
    """A new request: an incident diverted to the service's department at once. Needs an API key; personal fields
    are never stored in the clear (a phone number is kept as a pseudonym, the rest is dropped)."""
    try:
        form = await _form(request)
        principal = await _principal(request, keys, _field(form, "api_key"))
        if principal is None or principal.role not in CREATORS:
            raise Open311Error([(403, "Invalid api_key received -- can't proceed with create_request.")], status=403)
        created = await open311.create(form, actor=f"open311:{principal.name}")
        return _answer(render_list("created", created, fmt), fmt, 201)
    except Open311Error as err:
        return _error(err, fmt)


@router.get("/requests/{service_request_id}.{fmt}", summary="Open311 service request")
async def get_request(
    request: Request, open311: Open311Dep, keys: KeysDep, service_request_id: str, fmt: Format
) -> Response:
    """One request (a list of one, as the spec says)."""
    try:
        principal = await _principal(request, keys, request.query_params.get("api_key"))
        found = [await open311.request(_printable("service_request_id", service_request_id))]
        return _answer(render_list("requests", _public(found, principal), fmt), fmt)
    except Open311Error as err:
        return _error(err, fmt)


@router.post("/requests/{service_request_id}.{fmt}", summary="Update an Open311 request's status (extension)")
async def update_request(
    request: Request, open311: Open311Dep, keys: KeysDep, service_request_id: str, fmt: Format
) -> Response:
    """Our extension for the department's outcome: form fields `status` (open | closed) and `status_notes`; a
    `closed` status closes the incident with the notes as its feedback. Needs a department reader's or an
    operator's key."""
    try:
        form = await _form(request)
        principal = await _principal(request, keys, _field(form, "api_key"))
        if principal is None or principal.role not in UPDATERS:
            raise Open311Error([(403, "Invalid api_key received -- can't proceed with update_request.")], status=403)
        status = (form.get("status") or [""])[-1].strip()
        notes = _field(form, "status_notes")
        updated = await open311.update(
            _printable("service_request_id", service_request_id), status=status, notes=notes, agency=principal.name
        )
        return _answer(render_list("requests", [updated], fmt), fmt)
    except Open311Error as err:
        return _error(err, fmt)
