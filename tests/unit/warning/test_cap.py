"""CAP 1.2: coordinate order, rendering valid against the official XSD, JSON, real feeds, refused payloads."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import xmlschema
from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree

from safecity.warning import cap
from safecity.warning.cap import CapAlert, CapArea, CapInfo, CapInvalid, MsgType, Reference
from safecity.warning.model import Area, Category, Certainty, Circle, Severity, Text, Urgency

SENT = datetime(2026, 12, 1, 8, 30, 5, 123456, tzinfo=UTC)
RING = [(121.26, 31.37), (121.28, 31.37), (121.28, 31.39), (121.26, 31.39)]


@pytest.fixture(scope="module")
def schema(shared_data: Path) -> xmlschema.XMLSchema:
    """The official OASIS CAP 1.2 XSD from ../shared/data."""
    return cap.load_schema(shared_data / "cap" / "schema" / "CAP-v1.2.xsd")


def assert_valid(schema: xmlschema.XMLSchema, xml: bytes) -> None:
    """Validate rendered XML against the XSD, showing the first error."""
    errors = list(schema.iter_errors(etree.fromstring(xml).getroottree()))
    assert errors == [], errors[0] if errors else None


def sample(
    msg_type: MsgType = MsgType.ALERT, area: Area | None = None, references: list[Reference] | None = None
) -> CapAlert:
    """A bilingual smoke alert."""
    return CapAlert(
        identifier="01JDZ0000000000000000000AB",
        sender="safecity@jiading-hub",
        sent=SENT,
        msg_type=msg_type,
        references=references or [],
        infos=cap.bilingual_infos(
            headline=Text(zh="烟感报警：嘉定新城 3 号楼", en="Smoke alarm: Jiading New Town building 3"),
            description=Text(zh="两个烟感在 60 秒内报警。", en="Two smoke detectors alarmed within 60 s."),
            category=Category.FIRE,
            urgency=Urgency.IMMEDIATE,
            severity=Severity.SEVERE,
            certainty=Certainty.LIKELY,
            area=area if area is not None else Area(description="嘉定新城 3 号楼", polygon=RING),
            parameters=[("safecity:rule", "smoke-two-detectors"), ("safecity:count", "2")],
        ),
    )


# --- coordinate order: the one conversion ------------------------------------------------------------------------


def test_cap_point_is_lat_lon_and_back() -> None:
    """(lon, lat) inside becomes "lat,lon" in CAP and reads back as (lon, lat)."""
    assert cap.to_cap_point((121.26, 31.37)) == "31.37,121.26"
    assert cap.from_cap_point("31.37,121.26") == (121.26, 31.37)
    assert cap.from_cap_point(" -35.3888,147.0598 ") == (147.0598, -35.3888)


@pytest.mark.parametrize("text", ["31.37", "a,b", "91,10", "10,181", "1,2,3"])
def test_bad_points_are_refused(text: str) -> None:
    """Not two numbers, or latitude/longitude out of range."""
    with pytest.raises(CapInvalid) as err:
        cap.from_cap_point(text)
    assert err.value.reason == "bad_coordinates"


def test_polygon_is_closed_and_circle_in_km() -> None:
    """CAP 1.2 §3.2.4: a closed ring of lat,lon pairs; a circle's radius is in kilometres."""
    text = cap.polygon_to_cap(RING)
    assert text.split()[0] == text.split()[-1] == "31.37,121.26"
    assert len(text.split()) == 5
    assert cap.polygon_from_cap(text) == [*RING, RING[0]]
    assert cap.circle_to_cap(Circle(lon=121.27, lat=31.38, radius_m=500)) == "31.38,121.27 0.5"
    assert cap.circle_from_cap("31.38,121.27 0.5") == Circle(lon=121.27, lat=31.38, radius_m=500.0)
    with pytest.raises(CapInvalid) as err:
        cap.polygon_from_cap("31.37,121.26 31.38,121.27 31.37,121.26")
    assert err.value.reason == "bad_polygon"


def test_times_are_utc_with_minus_zero() -> None:
    """CONVENTIONS §5: CAP writes UTC as -00:00, whole seconds; other offsets read back as UTC."""
    shanghai = timezone(timedelta(hours=8))
    assert cap.cap_datetime(datetime(2026, 12, 1, 16, 30, 5, 999, tzinfo=shanghai)) == "2026-12-01T08:30:05-00:00"
    assert cap.parse_cap_datetime("2026-12-01T16:30:05+08:00") == datetime(2026, 12, 1, 8, 30, 5, tzinfo=UTC)
    with pytest.raises(ValueError):
        cap.cap_datetime(datetime(2026, 12, 1))  # noqa: DTZ001 - the naive case is the point
    with pytest.raises(CapInvalid):
        cap.parse_cap_datetime("2026-12-01T08:30:05Z")


@pytest.mark.parametrize("text", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:30:00-01:00"])
def test_times_with_no_utc_year_are_invalid_cap(text: str) -> None:
    """Well-formed CAP text whose instant falls outside UTC's years 1-9999 is a refusal, not a crash."""
    with pytest.raises(CapInvalid) as err:
        cap.parse_cap_datetime(text)
    assert err.value.reason == "bad_datetime"


# --- rendering -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "area",
    [
        Area(description="3 号楼", polygon=RING),
        Area(description="3 号楼周边 500 米", circle=Circle(lon=121.27, lat=31.38, radius_m=500)),
    ],
    ids=["polygon", "circle"],
)
def test_rendered_alert_is_valid_cap(schema: xmlschema.XMLSchema, area: Area) -> None:
    """Two `<info>` blocks (zh-CN, en-US), vocabularies from the model, area in lat,lon order; XSD-valid."""
    xml = cap.render_xml(sample(area=area))
    assert_valid(schema, xml)
    root = etree.fromstring(xml)
    ns = {"c": cap.CAP_NS}
    assert root.findtext("c:sent", namespaces=ns) == "2026-12-01T08:30:05-00:00"
    assert root.xpath("c:info/c:language/text()", namespaces=ns) == ["zh-CN", "en-US"]
    assert root.xpath("c:info/c:severity/text()", namespaces=ns) == ["Severe", "Severe"]
    assert root.findtext("c:info/c:headline", namespaces=ns) == "烟感报警：嘉定新城 3 号楼"
    if area.polygon:
        assert root.findtext("c:info/c:area/c:polygon", namespaces=ns).startswith("31.37,121.26 ")
    else:
        assert root.findtext("c:info/c:area/c:circle", namespaces=ns) == "31.38,121.27 0.5"


@pytest.mark.parametrize("msg_type", [MsgType.UPDATE, MsgType.CANCEL])
def test_updates_and_cancels_reference_the_original(schema: xmlschema.XMLSchema, msg_type: MsgType) -> None:
    """`<references>` holds "sender,identifier,sent" of the original; the message is XSD-valid."""
    original = Reference(sender="safecity@jiading-hub", identifier="01JDZ0000000000000000000AB", sent=SENT)
    message = sample(msg_type=msg_type, references=[original])
    xml = cap.render_xml(message)
    assert_valid(schema, xml)
    root = etree.fromstring(xml)
    ns = {"c": cap.CAP_NS}
    assert root.findtext("c:msgType", namespaces=ns) == msg_type.value
    assert (
        root.findtext("c:references", namespaces=ns)
        == "safecity@jiading-hub,01JDZ0000000000000000000AB,2026-12-01T08:30:05-00:00"
    )


def test_json_rendering_has_the_same_content() -> None:
    """The JSON form uses CAP element names and the same strings as the XML."""
    data = cap.render_json(sample())
    assert data["msgType"] == "Alert"
    assert data["sent"] == "2026-12-01T08:30:05-00:00"
    assert [i["language"] for i in data["info"]] == ["zh-CN", "en-US"]
    assert data["info"][1]["category"] == ["Fire"]
    assert data["info"][1]["area"][0]["polygon"] == [cap.polygon_to_cap(RING)]
    assert "references" not in data


def test_rendered_xml_snapshot(snapshot: Any) -> None:
    """The exact bytes of one rendered alert (a change in the output shows up in review)."""
    assert cap.render_xml(sample()).decode() == snapshot


# --- round trip ------------------------------------------------------------------------------------------------------

_words = st.text(alphabet=st.sampled_from("abcXYZ 烟感报警楼-_09"), min_size=1, max_size=30).map(str.strip).filter(bool)
_lon = st.floats(min_value=-180, max_value=180, allow_nan=False)
_lat = st.floats(min_value=-90, max_value=90, allow_nan=False)
_point = st.tuples(_lon, _lat)


@st.composite
def _areas(draw: st.DrawFn) -> Area:
    desc = draw(_words)
    if draw(st.booleans()):
        ring = draw(st.lists(_point, min_size=3, max_size=8, unique=True))
        return Area(description=desc, polygon=[*ring, ring[0]])
    lon, lat = draw(_point)
    return Area(description=desc, circle=Circle(lon=lon, lat=lat, radius_m=draw(st.floats(0, 100_000))))


@given(
    identifier=_words.map(lambda s: s.replace(" ", "")).filter(bool),
    # hypothesis wants naive bounds; the drawn values are aware (UTC).
    sent=st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)),  # noqa: DTZ001
    category=st.sampled_from(Category),
    severity=st.sampled_from(Severity),
    urgency=st.sampled_from(Urgency),
    certainty=st.sampled_from(Certainty),
    msg_type=st.sampled_from([MsgType.ALERT, MsgType.UPDATE, MsgType.CANCEL]),
    area=st.one_of(st.none(), _areas()),
    zh=_words,
    en=_words,
)
@settings(max_examples=60, deadline=None)
def test_round_trip(schema: xmlschema.XMLSchema, **kw: Any) -> None:
    """render -> XSD-valid -> parse gives back the same message (times to the second, radii to float precision)."""
    sent = kw["sent"].replace(microsecond=0)
    refs = [] if kw["msg_type"] is MsgType.ALERT else [Reference(sender="s@x", identifier="orig", sent=sent)]
    message = CapAlert(
        identifier=kw["identifier"],
        sender="safecity@node",
        sent=sent,
        msg_type=kw["msg_type"],
        references=refs,
        infos=cap.bilingual_infos(
            headline=Text(zh=kw["zh"], en=kw["en"]),
            description=Text(zh=kw["en"], en=kw["zh"]),
            category=kw["category"],
            urgency=kw["urgency"],
            severity=kw["severity"],
            certainty=kw["certainty"],
            area=kw["area"],
        ),
    )
    xml = cap.render_xml(message)
    parsed = cap.parse_xml(xml, schema=schema)
    area = kw["area"]
    if area is not None and area.circle is not None:
        got = parsed.infos[0].areas[0].circles[0]
        assert math.isclose(got.radius_m, area.circle.radius_m, rel_tol=1e-12, abs_tol=1e-9)
        assert (got.lon, got.lat) == (area.circle.lon, area.circle.lat)
        infos = [
            CapInfo(**{**_fields(i), "areas": [CapArea(description=a.description, circles=[area.circle])]})
            for i, a in ((i, i.areas[0]) for i in parsed.infos)
        ]
        parsed = CapAlert(**{**_fields(parsed), "infos": infos})
    assert parsed == message


def _fields(obj: Any) -> dict[str, Any]:
    return {name: getattr(obj, name) for name in obj.__struct_fields__}


# --- parsing external feeds ----------------------------------------------------------------------------------------


def test_every_real_cap_12_alert_parses(shared_data: Path, schema: xmlschema.XMLSchema) -> None:
    """All real messages in valid_1.2 parse, with their geometry in (lon, lat)."""
    files = sorted((shared_data / "cap" / "alerts" / "valid_1.2").iterdir())
    assert len(files) >= 13
    parsed = {f.name: cap.parse_xml(f.read_bytes(), schema=schema) for f in files}
    australia = parsed["australia.cap"]
    assert australia.infos[0].areas[0].circles[0] == Circle(lon=147.0598, lat=-35.3888, radius_m=25_000.0)
    assert parsed["taiwan.cap"].infos[0].language == "zh-tw"
    assert "水庫" in (parsed["taiwan.cap"].infos[0].event + (parsed["taiwan.cap"].infos[0].headline or ""))
    assert parsed["no_info_tag.cap"].infos == []
    noaa = parsed["NOAA_MultiplePolygons.xml"].infos[0].areas[0].polygons
    assert len(noaa) == 2
    assert all(-100 < lon < -60 and 10 < lat < 40 for ring in noaa for lon, lat in ring)
    assert parsed["earthquake-iso8859-1.cap"].sent.tzinfo is not None


# What each negative case actually is (PROVENANCE.md), and the reason we give.
NEGATIVE = {
    "invalid.cap": ("schema", "scope"),
    "sweden.cap": ("schema", "Type"),
    "CanadaNaad.xml": ("schema", "NAADS Signature"),
    "invalid_xmlns.cap": ("wrong_namespace", "alerts:1.2"),
    "earthquake.cap": ("cap_1_1", "CAP 1.1"),
    "smhi.se.alerts.cap": ("not_an_alert", "alerts"),
}


def test_every_negative_case_is_refused_with_its_reason(shared_data: Path, schema: xmlschema.XMLSchema) -> None:
    """Each file in invalid_or_other is refused, for the reason it is there."""
    folder = shared_data / "cap" / "alerts" / "invalid_or_other"
    assert {f.name for f in folder.iterdir()} == set(NEGATIVE)
    for name, (reason, detail) in NEGATIVE.items():
        with pytest.raises(CapInvalid) as err:
            cap.parse_xml((folder / name).read_bytes(), schema=schema)
        assert err.value.reason == reason, name
        assert detail in str(err.value), name


def test_missing_scope_is_refused_even_without_the_schema(shared_data: Path) -> None:
    """The structural checks alone catch what the XSD catches for required elements."""
    data = (shared_data / "cap" / "alerts" / "invalid_or_other" / "invalid.cap").read_bytes()
    with pytest.raises(CapInvalid) as err:
        cap.parse_xml(data)
    assert err.value.reason == "missing_element"


XXE = b"""<?xml version="1.0"?>
<!DOCTYPE alert [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2"><identifier>&xxe;</identifier></alert>"""

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2"><identifier>&lol9;</identifier></alert>"""


@pytest.mark.parametrize("payload", [XXE, BILLION_LAUGHS], ids=["xxe", "billion_laughs"])
def test_entity_payloads_are_refused_unexpanded(payload: bytes) -> None:
    """A DOCTYPE is refused before anything is read from it; no entity is expanded, no file is opened."""
    with pytest.raises(CapInvalid) as err:
        cap.parse_xml(payload)
    assert err.value.reason == "dtd_forbidden"
    assert "root:" not in str(err.value) and "lollol" not in str(err.value)
    # The parser itself never expands entities or reads files, even behind the DOCTYPE check.
    try:
        tree = etree.fromstring(payload, parser=cap._parser())
    except etree.XMLSyntaxError:
        return  # libxml2 refuses the entity loop itself: nothing was expanded
    rendered = etree.tostring(tree, encoding="unicode")
    assert "lollol" not in rendered
    assert "root:" not in rendered


@pytest.mark.parametrize(
    ("data", "reason"),
    [(b"not xml <", "not_xml"), (b"<a/>" + b" " * 2000, "too_large")],
    ids=["not_xml", "too_large"],
)
def test_garbage_is_refused(data: bytes, reason: str) -> None:
    """Not XML, or over the size cap."""
    with pytest.raises(CapInvalid) as err:
        cap.parse_xml(data, max_bytes=1000)
    assert err.value.reason == reason
