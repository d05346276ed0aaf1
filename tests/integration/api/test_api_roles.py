"""Role checks: each role reaches what it may (admin everything) and gets a 403 problem elsewhere."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI

from safecity.sharing.keys import Role

READERS = {Role.ADMIN, Role.OPERATOR, Role.DISPATCHER, Role.RESPONDER, Role.READER}
WRITERS = {Role.ADMIN, Role.OPERATOR}


@pytest.mark.parametrize("role", list(Role))
async def test_device_routes_by_role(app_client: tuple[FastAPI, httpx.AsyncClient], key_headers, role: Role) -> None:
    app, client = app_client
    headers = await key_headers(app, role)
    listed = await client.get("/api/v1/devices", headers=headers)
    assert listed.status_code == (200 if role in READERS else 403)
    created = await client.post(
        "/api/v1/devices", json={"id": f"smoke-{role}", "kind": "smoke", "lon": 121.2, "lat": 31.4}, headers=headers
    )
    assert created.status_code == (201 if role in WRITERS else 403)
    keys = await client.get("/api/v1/keys", headers=headers)
    assert keys.status_code == (200 if role is Role.ADMIN else 403)
    me = await client.get("/api/v1/me", headers=headers)
    assert me.status_code == 200
    assert me.json()["role"] == role.value


async def test_forbidden_is_a_localized_problem(app_client: tuple[FastAPI, httpx.AsyncClient], key_headers) -> None:
    app, client = app_client
    headers = await key_headers(app, Role.CITIZEN)
    response = await client.delete("/api/v1/devices/any", headers=headers)
    assert response.status_code == 403
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["code"] == "auth.forbidden"
    assert body["title"] == "无权访问"
    assert "admin" in body["detail"] and "operator" in body["detail"]
    english = await client.delete("/api/v1/devices/any", headers={**headers, "Accept-Language": "en-US,en;q=0.9"})
    assert english.json()["title"] == "Forbidden"
    assert english.json()["detail"].startswith("This requires one of the roles: admin, operator")


async def test_bearer_token_is_the_same_key(app_client: tuple[FastAPI, httpx.AsyncClient], key_headers) -> None:
    app, client = app_client
    headers = await key_headers(app, Role.READER, bearer=True)
    assert (await client.get("/api/v1/devices", headers=headers)).status_code == 200
    assert (await client.post("/api/v1/devices", json={"id": "a", "kind": "door"}, headers=headers)).status_code == 403
