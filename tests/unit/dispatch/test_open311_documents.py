"""GeoReport v2 documents: the spec's examples parse, our renderings match the spec's shape and JSON Schemas, and a
POST is validated against its service definition with the spec's error list."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qs

import jsonschema_rs
import pytest
from lxml import etree

from safecity.dispatch.open311 import (
    Open311Error,
    RequestStatus,
    Service,
    ServiceDefinition,
    ServiceRequest,
    definition_of,
    error_rows,
    parse_post,
    render_definition,
    render_list,
)


def _schema(shared_data: Path, name: str) -> jsonschema_rs.Validator:
    return jsonschema_rs.validator_for(json.loads((shared_data / "open311" / "schema" / name).read_text()))


def _service(shared_data: Path) -> Service:
    """The spec's service definition example, as one of our services (plus two attributes the POST example sends)."""
    spec = ServiceDefinition.model_validate_json(
        (shared_data / "open311/spec_examples/service-definition.json").read_bytes()
    )
    attrs = [a.model_copy(update={"values": [v.model_copy() for v in a.values]}) for a in spec.attributes]
    extra = [
        {"code": "WHISPAWN", "datatype": "number", "order": 2, "description": "Pawn ticket number", "required": True},
        {"code": "WHISDORN", "datatype": "string", "order": 3, "description": "Door number"},
    ]
    return Service.model_validate(
        {
            "service_code": spec.service_code,
            "service_name": "Sinkhole",
            "metadata": True,
            "attributes": [a.model_dump() for a in attrs] + extra,
        }
    )


def test_the_spec_definition_example_round_trips_in_both_formats(shared_data: Path) -> None:
    service = _service(shared_data)
    definition = definition_of(service)
    assert [a.code for a in definition.attributes] == ["WHISHETN", "WHISPAWN", "WHISDORN"]
    as_json = json.loads(render_definition(definition, "json"))
    assert _schema(shared_data, "service-definition.json").is_valid(as_json)
    ours = etree.fromstring(render_definition(definition, "xml"))
    spec = etree.fromstring((shared_data / "open311/spec_examples/service-definition.xml").read_bytes())
    assert ours.tag == spec.tag == "service_definition"
    # Same element paths as the spec's example for the attribute it holds.
    first_ours = ours.find("attributes/attribute")
    first_spec = spec.find("attributes/attribute")
    assert first_ours is not None and first_spec is not None
    assert [e.tag for e in first_ours.iter()] == [e.tag for e in first_spec.iter()]
    assert ours.findtext("attributes/attribute/values/value/name") == "Ford"


def test_services_and_requests_render_like_the_spec(shared_data: Path) -> None:
    service = _service(shared_data)
    services_xml = etree.fromstring(render_list("services", [service], "xml"))
    spec_services = etree.fromstring((shared_data / "open311/spec_examples/service-list.xml").read_bytes())
    assert services_xml.tag == spec_services.tag
    assert {e.tag for e in services_xml[0]} == {e.tag for e in spec_services[0]}
    services_json = json.loads(render_list("services", [service], "json"))
    assert "attributes" not in services_json[0]
    assert _schema(shared_data, "service.json").is_valid(services_json[0])

    at = datetime(2026, 12, 3, 8, 30, tzinfo=UTC)
    request = ServiceRequest(
        service_request_id="INC-1",
        status=RequestStatus.OPEN,
        service_name="Sinkhole",
        service_code=service.service_code,
        requested_datetime=at,
        updated_datetime=at,
        lat=31.38,
        long=121.25,
    )
    as_json = json.loads(render_list("requests", [request], "json"))
    assert _schema(shared_data, "request.json").is_valid(as_json[0])
    as_xml = etree.fromstring(render_list("requests", [request], "xml"))
    spec_requests = etree.fromstring((shared_data / "open311/spec_examples/service-requests.xml").read_bytes())
    assert as_xml.tag == spec_requests.tag and as_xml[0].tag == spec_requests[0].tag
    assert {e.tag for e in as_xml[0]} == {e.tag for e in spec_requests[0]}


def test_the_spec_post_example_is_accepted_and_personal_fields_are_kept_apart(shared_data: Path) -> None:
    body = (shared_data / "open311/spec_examples/service-request-post.request.http").read_text().split("\n\n", 1)[1]
    form = parse_qs(body.strip(), keep_blank_values=True)
    form["service_code"] = [_service(shared_data).service_code]
    form["attribute[WHISHETN]"] = ["123"]
    service = _service(shared_data)
    got = parse_post(form, {service.service_code: service})
    assert got.lat == pytest.approx(37.76524078) and got.long == pytest.approx(-122.4212043)
    assert got.attributes == {"WHISHETN": "123", "WHISPAWN": "123456", "WHISDORN": "COISL001"}
    assert got.personal == {
        "email": "smit333@sfgov.edu",
        "first_name": "john",
        "last_name": "smith",
        "phone": "111111111",
    }
    dumped = got.model_dump_json()
    assert "tt222111" not in dumped  # the reporter's device id is never kept


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"service_code": []}, "service_code is required"),
        ({"lat": ["north"]}, "lat must be a number"),
        ({"long": ["200"]}, "long must be between"),
        ({"lat": [], "long": [], "address_string": []}, "a location is required"),
        ({"attribute[WHISPAWN]": []}, "attribute[WHISPAWN] is required"),
        ({"attribute[WHISPAWN]": ["many"]}, "attribute[WHISPAWN] must be a number"),
        ({"attribute[WHISHETN]": ["999"]}, "unknown value(s) 999"),
        ({"attribute[NOPE]": ["1"]}, "unknown attribute(s): attribute[NOPE]"),
        ({"media_url": ["file:///etc/passwd"]}, "media_url must be an http(s) URL"),
    ],
)
def test_a_bad_post_gets_the_spec_error_list(shared_data: Path, changes: dict[str, list[str]], expected: str) -> None:
    service = _service(shared_data)
    form = {
        "service_code": [service.service_code],
        "lat": ["31.38"],
        "long": ["121.25"],
        "address_string": ["1 Bole Rd"],
        "attribute[WHISHETN]": ["124"],
        "attribute[WHISPAWN]": ["7"],
    }
    form.update(changes)
    with pytest.raises(Open311Error) as caught:
        parse_post(form, {service.service_code: service})
    rows = error_rows(caught.value)
    assert any(expected in row["description"] for row in rows), rows
    assert all(row["code"] == 400 for row in rows)
    errors_xml = etree.fromstring(render_list("errors", rows, "xml"))
    assert errors_xml.tag == "errors" and errors_xml[0].findtext("code") == "400"


def test_an_unknown_service_is_a_404_in_the_spec_format() -> None:
    with pytest.raises(Open311Error) as caught:
        parse_post({"service_code": ["nope"], "lat": ["1"], "long": ["1"]}, {})
    assert caught.value.status == 404
    assert error_rows(caught.value) == [{"code": 404, "description": "service_code 'nope' is not a service here"}]
