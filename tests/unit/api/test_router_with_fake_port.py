"""Routers depend only on their ports: the events router and the ops probes, mounted alone with fakes.

No runtime, no database, no bus: each test builds a bare FastAPI app with one router and overrides the provider in
`safecity.api.deps` with an in-memory fake of the port. This is the worked example in docs/extending.md ("Add an API
router").
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
from fastapi import FastAPI

from safecity.api import deps, events
from safecity.api.app import ops_router
from safecity.api.ports import EventQueries, Keys
from safecity.api.problems import install_problem_handlers
from safecity.kernel.readiness import Readiness, readiness, tasks_check
from safecity.sharing.principal import ApiKeyInfo, CreatedKey, Principal, Role

T0 = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
KEY = "sc_test-operator"


def _event(event_id: str, kind: str = "smoke") -> dict[str, Any]:
    return {
        "id": event_id,
        "key": f"event.{kind}",
        "kind": kind,
        "device_id": "smoke-1",
        "message_id": None,
        "occurred_at": T0,
        "received_at": T0,
        "stored_at": T0,
        "town": "town-a",
        "community": None,
        "building": None,
        "device_kind": kind,
        "lon": 121.47,
        "lat": 31.23,
        "value": None,
        "state": "alarm",
        "data": {},
        "pseudonyms": {},
        "source": "test",
        "tier": "district",
        "correlation_id": event_id,
        "hops": {},
    }


class FakeEvents:
    """Stored events in a list; remembers the filters it was asked for."""

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.rows = rows
        self.asked: list[dict[str, Any]] = []

    async def list(self, **filters: Any) -> list[dict[str, Any]]:
        self.asked.append(filters)
        rows = [r for r in self.rows if filters.get("kind") in (None, r["kind"])]
        return rows[: filters["limit"]]

    async def get(self, event_id: str) -> dict[str, Any] | None:
        return next((r for r in self.rows if r["id"] == event_id), None)

    async def count_by_kind(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for r in self.rows:
            counts[r["kind"]] = counts.get(r["kind"], 0) + 1
        return counts


class FakeKeys:
    """One valid key, an operator's."""

    async def verify(self, key: str) -> Principal | None:
        return Principal(key_id="k1", name="fake operator", role=Role.OPERATOR) if key == KEY else None

    async def create(self, name: str, role: Role) -> CreatedKey:
        raise NotImplementedError

    async def list(self) -> list[ApiKeyInfo]:
        return []

    async def get(self, key_id: str) -> ApiKeyInfo:
        raise NotImplementedError

    async def revoke(self, key_id: str) -> ApiKeyInfo:
        raise NotImplementedError


# The fakes are the ports as far as the type checker is concerned, too.
_EVENTS_PORT: type[EventQueries] = FakeEvents
_KEYS_PORT: type[Keys] = FakeKeys


def _events_app(fake: FakeEvents) -> FastAPI:
    app = FastAPI()
    install_problem_handlers(app)
    app.include_router(events.router)
    app.dependency_overrides[deps.event_queries] = lambda: fake
    app.dependency_overrides[deps.keys] = FakeKeys
    return app


def _client(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")


async def test_the_events_router_runs_on_a_fake_port() -> None:
    fake = FakeEvents([_event("01A", "smoke"), _event("01B", "door"), _event("01C", "smoke")])
    async with _client(_events_app(fake)) as client:
        page = await client.get("/api/v1/events", params={"kind": "smoke", "limit": 2}, headers={"X-API-Key": KEY})
        assert page.status_code == 200
        assert [e["id"] for e in page.json()["items"]] == ["01A", "01C"]
        assert page.json()["next_after"] == "01C"  # a full page: there may be more
        assert fake.asked[-1]["kind"] == "smoke" and fake.asked[-1]["limit"] == 2
        counts = await client.get("/api/v1/events/counts", headers={"X-API-Key": KEY})
        assert counts.json() == {"smoke": 2, "door": 1}
        assert (await client.get("/api/v1/events/01B", headers={"X-API-Key": KEY})).json()["kind"] == "door"
        missing = await client.get("/api/v1/events/nope", headers={"X-API-Key": KEY})
        assert missing.status_code == 404
        assert missing.headers["content-type"].startswith("application/problem+json")


async def test_the_fake_key_port_decides_who_gets_in() -> None:
    fake = FakeEvents([_event("01A")])
    async with _client(_events_app(fake)) as client:
        assert (await client.get("/api/v1/events")).status_code == 401
        assert (await client.get("/api/v1/events", headers={"X-API-Key": "sc_other"})).status_code == 401
    assert fake.asked == []  # refused before the port was asked anything


def _ops_app(report: Readiness) -> FastAPI:
    app = FastAPI()
    app.include_router(ops_router)

    async def probe() -> Readiness:
        return report

    app.dependency_overrides[deps.readiness_probe] = lambda: probe
    return app


async def test_readyz_answers_what_the_readiness_function_reports() -> None:
    async def ok() -> None:
        return None

    ready = await readiness({"database": ok, "bus": ok})
    async with _client(_ops_app(ready)) as client:
        response = await client.get("/readyz")
    assert response.status_code == 200
    assert response.json()["status"] == "ready"
    assert set(response.json()["checks"]) == {"database", "bus"}

    down = await readiness({"database": ok, "tasks": tasks_check(lambda: ["device-health"])})
    async with _client(_ops_app(down)) as client:
        response = await client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "not_ready"
    assert body["checks"]["database"]["ok"] is True
    assert body["checks"]["tasks"]["ok"] is False
    assert body["checks"]["tasks"]["down"] == ["device-health"]
