"""OASIS CAP 1.2: render our alerts as XML and JSON, and parse external CAP messages safely.

Pure module (kernel, warning.model and lxml only). Coordinates are (lon, lat) everywhere in our code; CAP writes
`lat,lon`, and the only conversion between the two orders is `to_cap_point` / `from_cap_point` below.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
from lxml import etree

from safecity.kernel.errors import InvalidInput
from safecity.warning.model import Area, Category, Certainty, Circle, Severity, Text, Urgency

if TYPE_CHECKING:
    import xmlschema

CAP_NS = "urn:oasis:names:tc:emergency:cap:1.2"
CAP_11_NS = "urn:oasis:names:tc:emergency:cap:1.1"
CAP_MEDIA_TYPE = "application/cap+xml"
# Real CAP messages are a few kB; the largest public feeds' single alerts stay well under 1 MiB.
MAX_CAP_BYTES = 1_048_576
LANGUAGES = (("zh-CN", "zh"), ("en-US", "en"))

_Q = "{" + CAP_NS + "}"
# CAP 1.2 §3.3.2: dateTime with an explicit offset and no fractional seconds.
_DATETIME = re.compile(r"^\d\d\d\d-\d\d-\d\dT\d\d:\d\d:\d\d[-+]\d\d:\d\d$")


class MsgType(StrEnum):
    """CAP 1.2 `msgType`."""

    ALERT = "Alert"
    UPDATE = "Update"
    CANCEL = "Cancel"
    ACK = "Ack"
    ERROR = "Error"


class Status(StrEnum):
    """CAP 1.2 `status`."""

    ACTUAL = "Actual"
    EXERCISE = "Exercise"
    SYSTEM = "System"
    TEST = "Test"
    DRAFT = "Draft"


class Scope(StrEnum):
    """CAP 1.2 `scope`."""

    PUBLIC = "Public"
    RESTRICTED = "Restricted"
    PRIVATE = "Private"


class CapInvalid(InvalidInput):
    """A CAP message was refused; `reason` says why (stable, machine-readable)."""

    code = "cap.invalid"
    title_en = "Invalid CAP message"
    title_zh = "CAP 消息无效"
    message_en = "The CAP message was refused ({reason})."
    message_zh = "CAP 消息被拒绝（{reason}）。"

    def __init__(self, reason: str, detail: str | None = None) -> None:
        self.reason = reason
        super().__init__(detail, reason=reason)
        self.extensions = {"reason": reason}


class Reference(msgspec.Struct, frozen=True, kw_only=True):
    """One entry of CAP `references`: the earlier message this one updates or cancels."""

    sender: str
    identifier: str
    sent: datetime


class CapArea(msgspec.Struct, frozen=True, kw_only=True):
    """A CAP `<area>`; polygons and circles are (lon, lat) inside, radii in metres."""

    description: str
    polygons: list[list[tuple[float, float]]] = msgspec.field(default_factory=list)
    circles: list[Circle] = msgspec.field(default_factory=list)
    geocodes: list[tuple[str, str]] = msgspec.field(default_factory=list)


class CapInfo(msgspec.Struct, frozen=True, kw_only=True):
    """A CAP `<info>` block in one language."""

    language: str
    categories: list[Category]
    event: str
    urgency: Urgency
    severity: Severity
    certainty: Certainty
    response_types: list[str] = msgspec.field(default_factory=list)  # CAP `responseType` (e.g. AllClear)
    expires: datetime | None = None
    headline: str | None = None
    description: str | None = None
    parameters: list[tuple[str, str]] = msgspec.field(default_factory=list)
    areas: list[CapArea] = msgspec.field(default_factory=list)


class CapAlert(msgspec.Struct, frozen=True, kw_only=True):
    """A CAP 1.2 alert message (what we render, and what parsing an external message returns)."""

    identifier: str
    sender: str
    sent: datetime
    status: Status = Status.ACTUAL
    msg_type: MsgType = MsgType.ALERT
    scope: Scope = Scope.PUBLIC
    restriction: str | None = None  # CAP 1.2: the rule for limiting distribution of a Restricted message
    source: str | None = None
    references: list[Reference] = msgspec.field(default_factory=list)
    infos: list[CapInfo] = msgspec.field(default_factory=list)


# --- coordinates and times (the one place for CAP's lat,lon order) ------------------------------------------------


def _num(value: float) -> str:
    # Shortest text that reads back as the same float (repr), so render -> parse round-trips exactly.
    return repr(float(value))


def to_cap_point(point: tuple[float, float]) -> str:
    """(lon, lat) -> CAP's "lat,lon" (CAP 1.2 §3.2.4: WGS 84, latitude first)."""
    lon, lat = point
    return f"{_num(lat)},{_num(lon)}"


def from_cap_point(text: str) -> tuple[float, float]:
    """CAP's "lat,lon" -> (lon, lat); CapInvalid when it is not two numbers in range."""
    parts = text.strip().split(",")
    if len(parts) != 2:
        raise CapInvalid("bad_coordinates", f"not a lat,lon pair: {text[:40]!r}")
    try:
        lat, lon = float(parts[0]), float(parts[1])
    except ValueError as err:
        raise CapInvalid("bad_coordinates", f"not numbers: {text[:40]!r}") from err
    if not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0):
        raise CapInvalid("bad_coordinates", f"out of range: {text[:40]!r}")
    return (lon, lat)


def polygon_to_cap(ring: list[tuple[float, float]]) -> str:
    """A (lon, lat) ring -> CAP `<polygon>` text, closed (CAP 1.2 §3.2.4: first pair == last pair)."""
    points = list(ring)
    if points and points[0] != points[-1]:
        points.append(points[0])
    return " ".join(to_cap_point(p) for p in points)


def polygon_from_cap(text: str) -> list[tuple[float, float]]:
    """CAP `<polygon>` text -> a (lon, lat) ring; CAP requires at least four pairs, first == last."""
    ring = [from_cap_point(pair) for pair in text.split()]
    if len(ring) < 4 or ring[0] != ring[-1]:
        raise CapInvalid("bad_polygon", "a polygon needs four or more pairs, first equal to last")
    return ring


def circle_to_cap(circle: Circle) -> str:
    """A circle -> CAP `<circle>` text "lat,lon radius_km"."""
    return f"{to_cap_point((circle.lon, circle.lat))} {_num(circle.radius_m / 1000.0)}"


def circle_from_cap(text: str) -> Circle:
    """CAP `<circle>` text "lat,lon radius_km" -> a circle (radius in metres)."""
    parts = text.split()
    if len(parts) != 2:
        raise CapInvalid("bad_circle", f"not 'lat,lon radius': {text[:40]!r}")
    lon, lat = from_cap_point(parts[0])
    try:
        radius_km = float(parts[1])
    except ValueError as err:
        raise CapInvalid("bad_circle", f"radius is not a number: {text[:40]!r}") from err
    if radius_km < 0:
        raise CapInvalid("bad_circle", "negative radius")
    return Circle(lon=lon, lat=lat, radius_m=radius_km * 1000.0)


def cap_datetime(value: datetime) -> str:
    """An aware datetime -> CAP dateTime in UTC, written with "-00:00" (house style, CONVENTIONS §5)."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("naive datetime: CAP times need a zone")
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S") + "-00:00"


def parse_cap_datetime(text: str) -> datetime:
    """CAP dateTime text -> aware UTC datetime; CapInvalid for any other form."""
    text = text.strip()
    if not _DATETIME.match(text):
        raise CapInvalid("bad_datetime", f"not a CAP dateTime: {text[:40]!r}")
    try:
        return datetime.fromisoformat(text).astimezone(UTC)
    except (ValueError, OverflowError) as err:  # OverflowError: 0001-01-01T00:00:00+01:00 has no UTC instant
        raise CapInvalid("bad_datetime", f"not a CAP dateTime: {text[:40]!r}") from err


def references_text(references: list[Reference]) -> str:
    """CAP `references`: space-separated "sender,identifier,sent" triples."""
    return " ".join(f"{r.sender},{r.identifier},{cap_datetime(r.sent)}" for r in references)


# --- building our alerts ------------------------------------------------------------------------------------------


def area_to_cap(area: Area, language: str = "zh-CN") -> CapArea:
    """Our area (one polygon or circle) -> a CAP area, described in `language`."""
    english = language.startswith("en") and area.description_en
    return CapArea(
        description=area.description_en if english and area.description_en else area.description,
        polygons=[list(area.polygon)] if area.polygon else [],
        circles=[area.circle] if area.circle else [],
    )


def bilingual_infos(
    *,
    headline: Text,
    description: Text,
    category: Category,
    urgency: Urgency,
    severity: Severity,
    certainty: Certainty,
    area: Area | None,
    parameters: list[tuple[str, str]] | None = None,
    expires: datetime | None = None,
    response_types: list[str] | None = None,
) -> list[CapInfo]:
    """One `<info>` per UI language (zh-CN, en-US) with the same vocabulary values and area."""
    return [
        CapInfo(
            language=language,
            categories=[category],
            event=getattr(headline, attr),
            urgency=urgency,
            severity=severity,
            certainty=certainty,
            response_types=list(response_types or []),
            expires=expires,
            headline=getattr(headline, attr),
            description=getattr(description, attr),
            parameters=list(parameters or []),
            areas=[area_to_cap(area, language)] if area is not None else [],
        )
        for language, attr in LANGUAGES
    ]


# --- rendering ----------------------------------------------------------------------------------------------------


def _sub(parent: etree._Element, name: str, text: str) -> etree._Element:
    child = etree.SubElement(parent, _Q + name)
    child.text = text
    return child


def to_element(alert: CapAlert) -> etree._Element:
    """Build the CAP 1.2 `<alert>` element (children in the XSD's sequence order)."""
    root = etree.Element(_Q + "alert", nsmap={None: CAP_NS})
    _sub(root, "identifier", alert.identifier)
    _sub(root, "sender", alert.sender)
    _sub(root, "sent", cap_datetime(alert.sent))
    _sub(root, "status", alert.status.value)
    _sub(root, "msgType", alert.msg_type.value)
    if alert.source:
        _sub(root, "source", alert.source)
    _sub(root, "scope", alert.scope.value)
    if alert.restriction is not None:
        _sub(root, "restriction", alert.restriction)
    if alert.references:
        _sub(root, "references", references_text(alert.references))
    for info in alert.infos:
        el = etree.SubElement(root, _Q + "info")
        _sub(el, "language", info.language)
        for category in info.categories:
            _sub(el, "category", category.value)
        _sub(el, "event", info.event)
        for response in info.response_types:
            _sub(el, "responseType", response)
        _sub(el, "urgency", info.urgency.value)
        _sub(el, "severity", info.severity.value)
        _sub(el, "certainty", info.certainty.value)
        if info.expires is not None:  # XSD order: after certainty, audience, eventCode, effective, onset
            _sub(el, "expires", cap_datetime(info.expires))
        if info.headline is not None:
            _sub(el, "headline", info.headline)
        if info.description is not None:
            _sub(el, "description", info.description)
        for name, value in info.parameters:
            param = etree.SubElement(el, _Q + "parameter")
            _sub(param, "valueName", name)
            _sub(param, "value", value)
        for area in info.areas:
            area_el = etree.SubElement(el, _Q + "area")
            _sub(area_el, "areaDesc", area.description)
            for ring in area.polygons:
                _sub(area_el, "polygon", polygon_to_cap(ring))
            for circle in area.circles:
                _sub(area_el, "circle", circle_to_cap(circle))
            for name, value in area.geocodes:
                code = etree.SubElement(area_el, _Q + "geocode")
                _sub(code, "valueName", name)
                _sub(code, "value", value)
    return root


def render_xml(alert: CapAlert) -> bytes:
    """Render a CAP 1.2 XML document (UTF-8, with declaration)."""
    return bytes(etree.tostring(to_element(alert), xml_declaration=True, encoding="UTF-8", pretty_print=True))


def render_json(alert: CapAlert) -> dict[str, Any]:
    """Render the same content as a JSON-ready dict with CAP's element names (for WebSocket / MQTT)."""
    out: dict[str, Any] = {
        "identifier": alert.identifier,
        "sender": alert.sender,
        "sent": cap_datetime(alert.sent),
        "status": alert.status.value,
        "msgType": alert.msg_type.value,
        "scope": alert.scope.value,
    }
    if alert.restriction is not None:
        out["restriction"] = alert.restriction
    if alert.source:
        out["source"] = alert.source
    if alert.references:
        out["references"] = references_text(alert.references)
    out["info"] = [
        {
            "language": info.language,
            "category": [c.value for c in info.categories],
            "event": info.event,
            "urgency": info.urgency.value,
            "severity": info.severity.value,
            "certainty": info.certainty.value,
            **({"responseType": list(info.response_types)} if info.response_types else {}),
            **({"expires": cap_datetime(info.expires)} if info.expires is not None else {}),
            **({"headline": info.headline} if info.headline is not None else {}),
            **({"description": info.description} if info.description is not None else {}),
            "parameter": [{"valueName": n, "value": v} for n, v in info.parameters],
            "area": [
                {
                    "areaDesc": area.description,
                    "polygon": [polygon_to_cap(r) for r in area.polygons],
                    "circle": [circle_to_cap(c) for c in area.circles],
                    "geocode": [{"valueName": n, "value": v} for n, v in area.geocodes],
                }
                for area in info.areas
            ],
        }
        for info in alert.infos
    ]
    return out


# --- parsing external messages ------------------------------------------------------------------------------------


def _parser() -> etree.XMLParser:
    # Untrusted XML (ARCHITECTURE §7): no entity expansion, no DTD loading, no network, no huge trees.
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        remove_pis=True,
    )


def load_schema(path: str | Path) -> xmlschema.XMLSchema:
    """Load the official CAP 1.2 XSD from a local file (it has no imports, so nothing is fetched)."""
    import xmlschema

    return xmlschema.XMLSchema(str(path))


def _text(parent: etree._Element, name: str, *, required: bool = False) -> str | None:
    child = parent.find(_Q + name)
    if child is None or child.text is None:
        if required:
            raise CapInvalid("missing_element", f"<{name}> is required")
        return None
    return str(child.text).strip()


def _enum(enum: Any, value: str | None, name: str) -> Any:
    try:
        return enum(value)
    except ValueError as err:
        raise CapInvalid("bad_value", f"<{name}> {str(value)[:40]!r} is not a CAP 1.2 value") from err


def _pairs(parent: etree._Element, name: str) -> list[tuple[str, str]]:
    return [(_text(el, "valueName") or "", _text(el, "value") or "") for el in parent.findall(_Q + name)]


def parse_references(text: str) -> list[Reference]:
    """CAP `references` text -> references; CapInvalid on a malformed triple."""
    refs = []
    for triple in text.split():
        parts = triple.split(",")
        if len(parts) != 3:
            raise CapInvalid("bad_references", f"not sender,identifier,sent: {triple[:60]!r}")
        refs.append(Reference(sender=parts[0], identifier=parts[1], sent=parse_cap_datetime(parts[2])))
    return refs


def _area(el: etree._Element) -> CapArea:
    return CapArea(
        description=_text(el, "areaDesc", required=True) or "",
        polygons=[polygon_from_cap(p.text or "") for p in el.findall(_Q + "polygon")],
        circles=[circle_from_cap(c.text or "") for c in el.findall(_Q + "circle")],
        geocodes=_pairs(el, "geocode"),
    )


def _info(el: etree._Element) -> CapInfo:
    categories = [_enum(Category, (c.text or "").strip(), "category") for c in el.findall(_Q + "category")]
    if not categories:
        raise CapInvalid("missing_element", "<category> is required in <info>")
    return CapInfo(
        language=_text(el, "language") or "en-US",
        categories=categories,
        event=_text(el, "event", required=True) or "",
        urgency=_enum(Urgency, _text(el, "urgency", required=True), "urgency"),
        severity=_enum(Severity, _text(el, "severity", required=True), "severity"),
        certainty=_enum(Certainty, _text(el, "certainty", required=True), "certainty"),
        response_types=[(r.text or "").strip() for r in el.findall(_Q + "responseType")],
        expires=parse_cap_datetime(expires) if (expires := _text(el, "expires")) else None,
        headline=_text(el, "headline"),
        description=_text(el, "description"),
        parameters=_pairs(el, "parameter"),
        areas=[_area(a) for a in el.findall(_Q + "area")],
    )


def parse_xml(data: bytes, *, schema: xmlschema.XMLSchema | None = None, max_bytes: int = MAX_CAP_BYTES) -> CapAlert:
    """Parse one external CAP 1.2 message; CapInvalid (with a `reason`) when it is refused.

    Without `schema` the structure is still checked (namespace, required elements, vocabularies); with the official
    XSD every rule of the schema applies too.
    """
    if len(data) > max_bytes:
        raise CapInvalid("too_large", f"{len(data)} bytes; the limit is {max_bytes}")
    # CAP has no DTD: a DOCTYPE (the carrier of entity bombs and external entities) is refused before parsing;
    # the check after parsing catches one hidden by another encoding.
    if b"<!DOCTYPE" in data or b"<!ENTITY" in data:
        raise CapInvalid("dtd_forbidden", "a DOCTYPE is not allowed in CAP")
    try:
        tree = etree.fromstring(data, parser=_parser()).getroottree()
    except etree.XMLSyntaxError as err:
        raise CapInvalid("not_xml", str(err)[:200]) from err
    if tree.docinfo.doctype or tree.docinfo.internalDTD is not None:
        raise CapInvalid("dtd_forbidden", "a DOCTYPE is not allowed in CAP")
    root = tree.getroot()
    qname = etree.QName(root)
    if qname.namespace == CAP_11_NS:
        raise CapInvalid("cap_1_1", "a CAP 1.1 message; only CAP 1.2 is accepted")
    if qname.namespace != CAP_NS:
        raise CapInvalid("wrong_namespace", f"namespace {str(qname.namespace)[:80]!r} is not CAP 1.2")
    if qname.localname != "alert":
        raise CapInvalid("not_an_alert", f"root element <{qname.localname}> is not <alert>")
    if schema is not None:
        error = next(iter(schema.iter_errors(tree)), None)
        if error is not None:
            raise CapInvalid("schema", str(error.reason or error.message)[:300])
    references = _text(root, "references")
    return CapAlert(
        identifier=_text(root, "identifier", required=True) or "",
        sender=_text(root, "sender", required=True) or "",
        sent=parse_cap_datetime(_text(root, "sent", required=True) or ""),
        status=_enum(Status, _text(root, "status", required=True), "status"),
        msg_type=_enum(MsgType, _text(root, "msgType", required=True), "msgType"),
        scope=_enum(Scope, _text(root, "scope", required=True), "scope"),
        restriction=_text(root, "restriction"),
        source=_text(root, "source"),
        references=parse_references(references) if references else [],
        infos=[_info(el) for el in root.findall(_Q + "info")],
    )
