"""The Open311 GeoReport v2 server on a real HTTP server, read by the `georeport` client from PyPI: services,
definitions, a POSTed request (an incident diverted to its department), lookups in JSON and XML, the department's
status update closing the incident, and the spec's error lists. Documents are checked against the Open311 JSON
Schemas in ../shared/data/open311."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import jsonschema_rs
import pytest
import uvicorn
from fastapi import FastAPI
from georeport import GeoReport
from lxml import etree
from tests.conftest import free_port
from tests.integration.api.conftest import AppFactory, HeadersFactory

from safecity.sharing.keys import Role


@pytest.fixture
async def served(db_url: str, app_factory: AppFactory) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient, str]]:
    """The app (lifespan entered) behind a real uvicorn server on loopback, and its Open311 root."""
    app, client = await app_factory(db_url)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off", log_level="warning"))
    task = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110 - uvicorn offers no event for it
        await asyncio.sleep(0.02)
    try:
        yield app, client, f"http://127.0.0.1:{port}/open311/v2"
    finally:
        server.should_exit = True
        await task


def _validator(shared_data: Path, name: str) -> jsonschema_rs.Validator:
    return jsonschema_rs.validator_for(json.loads((shared_data / "open311" / "schema" / name).read_text()))


async def test_a_department_request_round_trips_through_the_georeport_client(
    served: tuple[FastAPI, httpx.AsyncClient, str], key_headers: HeadersFactory, shared_data: Path
) -> None:
    app, client, root = served
    citizen = (await key_headers(app, Role.CITIZEN))["X-API-Key"]
    water = (await app.state.runtime.keys.create("water", Role.READER)).key
    dispatcher = await key_headers(app, Role.DISPATCHER)
    geo = GeoReport(root)

    services = await asyncio.to_thread(geo.get_service_list)
    assert {s["service_code"] for s in services} >= {"water.leak", "road.damage", "city.noise"}
    service_schema = _validator(shared_data, "service.json")
    for service in services:
        service_schema.validate(service)
    xml_services = await asyncio.to_thread(GeoReport(root, output_format="xml").get_service_list)
    assert {s["service_code"] for s in xml_services} == {s["service_code"] for s in services}
    definition = await asyncio.to_thread(geo.get_service_definition, "water.leak")
    _validator(shared_data, "service-definition.json").validate(definition)
    assert definition["service_code"] == "water.leak"

    async with httpx.AsyncClient() as http:
        posted = await http.post(
            f"{root}/requests.json",
            data={
                "api_key": citizen,
                "service_code": "water.leak",
                "lat": "31.371",
                "long": "121.251",
                "description": "Water running down the street",
                "phone": "13800138000",
                "device_id": "phone-123",
            },
        )
        assert posted.status_code == 201, posted.text
        [created] = posted.json()
        request_id = created["service_request_id"]

        incident = (await client.get(f"/api/v1/incidents/{request_id}", headers=dispatcher)).json()["incident"]
        assert (incident["stage"], incident["service_code"], incident["department"]) == (
            "diverted",
            "water.leak",
            "water",
        )
        assert incident["origin"] == "report" and "13800138000" not in json.dumps(incident)

        [found] = await asyncio.to_thread(geo.get_service_requests, service_request_id=request_id)
        _validator(shared_data, "request.json").validate(found)
        assert (found["status"], found["service_code"], found["lat"]) == ("open", "water.leak", 31.371)
        assert found["description"] is None  # free text is shown to callers with a key only
        with_key = await http.get(f"{root}/requests/{request_id}.json", headers={"X-API-Key": water})
        assert with_key.json()[0]["description"] == "Water running down the street"
        listed = await asyncio.to_thread(geo.get_service_requests, service_code="water.leak", status="open")
        assert [r["service_request_id"] for r in listed] == [request_id]

        updated = await http.post(
            f"{root}/requests/{request_id}.xml",
            data={"api_key": water, "status": "closed", "status_notes": "Valve replaced"},
        )
        assert updated.status_code == 200, updated.text
        assert etree.fromstring(updated.content).findtext("request/status") == "closed"

    closed = await asyncio.to_thread(geo.get_service_request, request_id)
    assert (closed["status"], closed["status_notes"]) == ("closed", "Valve replaced")
    detail = (await client.get(f"/api/v1/incidents/{request_id}", headers=dispatcher)).json()
    assert detail["incident"]["stage"] == "closed"
    assert (detail["history"][-1]["actor"], detail["history"][-1]["note"]) == ("department:water", "Valve replaced")


async def test_errors_come_in_the_spec_format(
    served: tuple[FastAPI, httpx.AsyncClient, str], key_headers: HeadersFactory
) -> None:
    app, _, root = served
    citizen = (await key_headers(app, Role.CITIZEN))["X-API-Key"]
    async with httpx.AsyncClient() as http:
        no_key = await http.post(
            f"{root}/requests.json", data={"service_code": "water.leak", "lat": "31", "long": "121"}
        )
        assert no_key.status_code == 403
        assert no_key.json() == [
            {"code": 403, "description": "Invalid api_key received -- can't proceed with create_request."}
        ]
        missing = await http.post(f"{root}/requests.xml", data={"api_key": citizen, "service_code": "water.leak"})
        assert missing.status_code == 400
        errors = etree.fromstring(missing.content)
        assert errors.tag == "errors" and errors.findtext("error/code") == "400"
        assert "location" in (errors.findtext("error/description") or "")
        unknown = await http.get(f"{root}/services/nope.json")
        assert unknown.status_code == 404 and unknown.json()[0]["code"] == 404
        bad_date = await http.get(f"{root}/requests.json", params={"start_date": "yesterday"})
        assert bad_date.status_code == 400 and "start_date" in bad_date.json()[0]["description"]
        # A refused value whose parameter name holds control characters too: still valid XML (it was a 500).
        odd_name = await http.get(f"{root}/requests.xml", params=[("k\x03y", "\x01")])
        assert odd_name.status_code == 400
        assert "holds control characters" in (etree.fromstring(odd_name.content).findtext("error/description") or "")
        citizen_update = await http.post(f"{root}/requests/nope.json", data={"api_key": citizen, "status": "closed"})
        assert citizen_update.status_code == 403
        assert (await http.get(f"{root}/requests/nope.json")).status_code == 404
        discovery = (await http.get(f"{root}/discovery.json")).json()
        assert discovery["endpoints"][0]["url"] == root
