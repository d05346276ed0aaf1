"""API key lifecycle over HTTP: create (shown once), list, get, revoke; only hashes are stored."""

from __future__ import annotations

import hashlib
import re

import httpx
from fastapi import FastAPI
from sqlalchemy import select

from safecity.sharing.keys import Role
from safecity.store.tables import api_keys


async def test_key_lifecycle(db_app_client: tuple[FastAPI, httpx.AsyncClient], key_headers) -> None:
    app, client = db_app_client
    admin = await key_headers(app, Role.ADMIN)
    created = await client.post("/api/v1/keys", json={"name": "duty desk", "role": "dispatcher"}, headers=admin)
    assert created.status_code == 201
    body = created.json()
    key = body["key"]
    assert re.fullmatch(r"sc_[A-Za-z0-9_-]{32}", key)
    assert body["prefix"] == key[:10]
    assert body["role"] == "dispatcher"

    # Only the SHA-256 is stored; the clear key appears nowhere in the table.
    async with app.state.runtime.engine.connect() as conn:
        rows = (await conn.execute(select(api_keys))).mappings().all()
    assert hashlib.sha256(key.encode()).hexdigest() in {r["key_hash"] for r in rows}
    assert all(key not in str(dict(r).values()) for r in rows)

    listed = await client.get("/api/v1/keys", headers=admin)
    assert listed.status_code == 200
    entry = next(k for k in listed.json() if k["id"] == body["id"])
    assert "key" not in entry and "key_hash" not in entry

    mine = {"Authorization": f"Bearer {key}"}
    me = await client.get("/api/v1/me", headers=mine)
    assert me.json() == {"key_id": body["id"], "name": "duty desk", "role": "dispatcher"}

    revoked = await client.delete(f"/api/v1/keys/{body['id']}", headers=admin)
    assert revoked.status_code == 200
    assert revoked.json()["revoked_at"] is not None
    # Revocation takes effect at once, even though the key was just verified (and cached).
    assert (await client.get("/api/v1/me", headers=mine)).status_code == 401
    got = await client.get(f"/api/v1/keys/{body['id']}", headers=admin)
    assert got.json()["revoked_at"] is not None
    assert got.json()["last_used_at"] is not None


async def test_unknown_key_id_and_bad_role(app_client: tuple[FastAPI, httpx.AsyncClient], key_headers) -> None:
    app, client = app_client
    admin = await key_headers(app, Role.ADMIN)
    missing = await client.delete("/api/v1/keys/01ARZ3NDEKTSV4RRFFQ69G5FAV", headers=admin)
    assert missing.status_code == 404
    assert missing.json()["code"] == "api_key.not_found"
    bad = await client.post("/api/v1/keys", json={"name": "x", "role": "superuser"}, headers=admin)
    assert bad.status_code == 422
    assert bad.json()["errors"][0]["loc"] == ["body", "role"]


async def test_bootstrap_admin_key_is_ensured(app_factory, sqlite_url: str) -> None:
    key = "bootstrap-" + "z" * 30
    _, client = await app_factory(sqlite_url, security={"bootstrap_admin_key": key})
    response = await client.get("/api/v1/keys", headers={"X-API-Key": key})
    assert response.status_code == 200
    assert [k["role"] for k in response.json()] == ["admin"]
