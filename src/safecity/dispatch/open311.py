"""Open311 GeoReport v2 documents (pure): services, service definitions, requests, errors, in JSON and XML.

Non-police incidents are diverted to the owning department as GeoReport v2 service requests that we serve; the
department reads and updates them, and its outcome flows back into the incident. This module holds the wire format:
parsing a POSTed request (form-encoded, `attribute[CODE]=value`) against a service definition, and rendering the
documents the spec defines. Errors are the spec's list of `{code, description}`.

Spec: https://wiki.open311.org/GeoReport_v2 (example payloads in ../shared/data/open311/spec_examples).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

import orjson
from lxml import etree
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from safecity.kernel.errors import SafeCityError

# Personal fields a POST may carry. They are never stored in the clear: the service pseudonymizes what it keeps
# (phone, e-mail) and drops the rest. `device_id` identifies the reporter's phone: out of scope by design.
PERSONAL_FIELDS = ("email", "first_name", "last_name", "phone")
DROPPED_FIELDS = ("device_id", "account_id", "api_key")


class Datatype(StrEnum):
    """GeoReport v2 attribute datatypes."""

    STRING = "string"
    NUMBER = "number"
    DATETIME = "datetime"
    TEXT = "text"
    SINGLEVALUELIST = "singlevaluelist"
    MULTIVALUELIST = "multivaluelist"


class _Doc(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AttributeValue(_Doc):
    """One allowed value of a list attribute (the spec's examples write numeric keys; we keep them as text)."""

    key: Annotated[str, BeforeValidator(lambda v: str(v) if isinstance(v, int) else v)]
    name: str


class Attribute(_Doc):
    """A question a service asks (GET services/{code})."""

    variable: bool = True
    code: str
    datatype: Datatype
    required: bool = False
    datatype_description: str | None = None
    order: int
    description: str
    values: list[AttributeValue] = Field(default_factory=list)


class Service(_Doc):
    """A service a department offers (GET services)."""

    service_code: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    service_name: str
    description: str = ""
    metadata: bool = False
    type: Literal["realtime", "batch", "blackbox"] = "realtime"
    keywords: str = ""
    group: str = ""
    attributes: list[Attribute] = Field(default_factory=list, exclude=True)


class RequestStatus(StrEnum):
    """GeoReport v2 request status."""

    OPEN = "open"
    CLOSED = "closed"


class ServiceRequest(_Doc):
    """A request as GET requests / request/{id} show it."""

    service_request_id: str
    status: RequestStatus
    status_notes: str | None = None
    service_name: str
    service_code: str
    description: str | None = None
    agency_responsible: str | None = None
    service_notice: str | None = None
    requested_datetime: datetime
    updated_datetime: datetime
    expected_datetime: datetime | None = None
    address: str | None = None
    address_id: str | None = None
    zipcode: str | None = None
    lat: float | None = None
    long: float | None = None
    media_url: str | None = None


class Open311Error(SafeCityError):
    """A GeoReport v2 request failed: answered as the spec's list of `{code, description}`."""

    code = "dispatch.open311_invalid"
    status = 400
    title_en = "Invalid Open311 request"
    title_zh = "Open311 请求无效"
    message_en = "{errors}"
    message_zh = "{errors}"

    def __init__(self, errors: Sequence[tuple[int, str]], *, status: int = 400) -> None:
        super().__init__(errors="; ".join(d for _, d in errors))
        self.errors = list(errors)
        self.status = status  # type: ignore[misc]  # per instance: 400, 403 or 404 as the spec's examples


class NewRequest(_Doc):
    """A validated POST: what the service keeps, personal fields apart (to be pseudonymized, never stored clear)."""

    service_code: str
    lat: float | None
    long: float | None
    address_string: str | None
    address_id: str | None
    description: str | None
    media_url: str | None
    attributes: dict[str, str | list[str]]
    personal: dict[str, str]


def _one(form: Mapping[str, Sequence[str]], name: str) -> str | None:
    values = form.get(name) or []
    text = values[-1].strip() if values else ""
    return text or None


def _float(
    form: Mapping[str, Sequence[str]], name: str, low: float, high: float, errors: list[tuple[int, str]]
) -> float | None:
    text = _one(form, name)
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        errors.append((400, f"{name} must be a number, got {text[:40]!r}"))
        return None
    if not low <= value <= high:
        errors.append((400, f"{name} must be between {low} and {high}"))
        return None
    return value


def _attribute_errors(attribute: Attribute, values: list[str]) -> list[str]:
    if attribute.datatype is Datatype.NUMBER:
        bad = [v for v in values if not _is_number(v)]
        return [f"attribute[{attribute.code}] must be a number"] if bad else []
    if attribute.datatype is Datatype.DATETIME:
        bad = [v for v in values if not _is_datetime(v)]
        return [f"attribute[{attribute.code}] must be an ISO 8601 date and time"] if bad else []
    if attribute.datatype in (Datatype.SINGLEVALUELIST, Datatype.MULTIVALUELIST):
        keys = {v.key for v in attribute.values}
        unknown = sorted(set(values) - keys)
        errors = [f"attribute[{attribute.code}] has unknown value(s) {', '.join(unknown)}"] if unknown else []
        if attribute.datatype is Datatype.SINGLEVALUELIST and len(values) > 1:
            errors.append(f"attribute[{attribute.code}] takes one value")
        return errors
    return []


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _is_datetime(text: str) -> bool:
    try:
        datetime.fromisoformat(text)
    except ValueError:
        return False
    return True


def parse_post(form: Mapping[str, Sequence[str]], services: Mapping[str, Service]) -> NewRequest:
    """Validate a POSTed request (form fields, each a list of values) against the service it names."""
    errors: list[tuple[int, str]] = []
    code = _one(form, "service_code")
    service = services.get(code) if code is not None else None
    if code is None:
        errors.append((400, "service_code is required"))
    elif service is None:
        raise Open311Error([(404, f"service_code {code[:64]!r} is not a service here")], status=404)
    lat = _float(form, "lat", -90.0, 90.0, errors)
    lon = _float(form, "long", -180.0, 180.0, errors)
    if (lat is None) != (lon is None) and not errors:
        errors.append((400, "lat and long come together"))
    address = _one(form, "address_string")
    address_id = _one(form, "address_id")
    if lat is None and address is None and address_id is None and not errors:
        errors.append((400, "a location is required: lat and long, address_string or address_id"))
    attributes: dict[str, str | list[str]] = {}
    for attribute in service.attributes if service is not None else []:
        values = [v.strip() for v in form.get(f"attribute[{attribute.code}]", []) if v.strip()]
        if not values:
            if attribute.required and attribute.variable:
                errors.append((400, f"attribute[{attribute.code}] is required: {attribute.description}"))
            continue
        errors.extend((400, e) for e in _attribute_errors(attribute, values))
        attributes[attribute.code] = values if attribute.datatype is Datatype.MULTIVALUELIST else values[0]
    known = {f"attribute[{a.code}]" for a in (service.attributes if service is not None else [])}
    unknown = sorted(k for k in form if k.startswith("attribute[") and k not in known)
    if unknown:
        errors.append((400, f"unknown attribute(s): {', '.join(unknown)[:200]}"))
    description = _one(form, "description")
    if description is not None and len(description) > 4000:
        errors.append((400, "description is longer than 4000 characters"))
    media_url = _one(form, "media_url")
    if media_url is not None and not media_url.startswith(("http://", "https://")):
        errors.append((400, "media_url must be an http(s) URL"))
    if errors:
        raise Open311Error(errors)
    assert code is not None  # for the type checker: an error was raised otherwise
    return NewRequest(
        service_code=code,
        lat=lat,
        long=lon,
        address_string=address,
        address_id=address_id,
        description=description,
        media_url=media_url,
        attributes=attributes,
        personal={f: v for f in PERSONAL_FIELDS if (v := _one(form, f)) is not None},
    )


# --- rendering -----------------------------------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


def _element(tag: str, fields: Mapping[str, Any]) -> etree._Element:
    element = etree.Element(tag)
    for name, value in fields.items():
        child = etree.SubElement(element, name)
        if isinstance(value, list):
            # GeoReport v2 XML: a list holds its items under the singular tag.
            singular = {"attributes": "attribute", "values": "value"}[name]
            child.extend(_element(singular, entry) for entry in value)
        elif value is not None:
            child.text = str(_plain(value))
    return element


def _xml(element: etree._Element) -> bytes:
    return bytes(etree.tostring(element, xml_declaration=True, encoding="utf-8"))


_ROOTS = {
    "services": ("services", "service"),
    "requests": ("service_requests", "request"),
    "created": ("service_requests", "request"),
    "errors": ("errors", "error"),
}


def render_list(kind: Literal["services", "requests", "created", "errors"], rows: Iterable[Any], fmt: str) -> bytes:
    """Render a GeoReport v2 list document in `fmt` (`json` or `xml`), with the spec's root and item names."""
    plain = [r.model_dump(mode="json") if isinstance(r, BaseModel) else dict(r) for r in rows]
    if fmt == "json":
        return orjson.dumps(plain)
    root, item = _ROOTS[kind]
    top = etree.Element(root)
    top.extend(_element(item, row) for row in plain)
    return _xml(top)


def render_definition(definition: ServiceDefinition, fmt: str) -> bytes:
    """Render GET services/{code} in `fmt` (`json` or `xml`)."""
    doc = definition.model_dump(mode="json")
    return orjson.dumps(doc) if fmt == "json" else _xml(_element("service_definition", doc))


class ServiceDefinition(_Doc):
    """GET services/{code}: the attributes a service asks for."""

    service_code: str
    attributes: list[Attribute]


def definition_of(service: Service) -> ServiceDefinition:
    """The service definition document of a service, attributes in their `order`."""
    return ServiceDefinition(
        service_code=service.service_code, attributes=sorted(service.attributes, key=lambda a: a.order)
    )


def error_rows(err: Open311Error) -> list[dict[str, Any]]:
    """The spec's error list for an error."""
    return [{"code": code, "description": description} for code, description in err.errors]
