"""Fixtures for API tests: a real runtime on a real database, the app around it, keys per role, an HTTP client."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from safecity.api.app import create_app
from safecity.kernel.settings import Settings
from safecity.runtime import Runtime
from safecity.sharing.keys import Role

AppFactory = Callable[..., Awaitable[tuple[FastAPI, httpx.AsyncClient]]]


def make_settings(db_url: str, **overrides: Any) -> Settings:
    """Settings for a test node on `db_url` (in-process bus, no MQTT unless asked)."""
    return Settings(database={"url": db_url}, log_json=False, **overrides)


@pytest.fixture
async def app_factory() -> AsyncIterator[AppFactory]:
    """Build started apps (lifespan entered) with their clients; everything is closed after the test."""
    stack: list[tuple[LifespanManager, httpx.AsyncClient]] = []

    async def build(db_url: str, *, extra_routers: Any = (), **overrides: Any) -> tuple[FastAPI, httpx.AsyncClient]:
        runtime = Runtime(make_settings(db_url, **overrides))
        app = create_app(runtime.api_services(), extra_routers=extra_routers)
        # The app itself holds only the services' ports; tests reach the node behind it here.
        app.state.runtime = runtime
        manager = LifespanManager(app, startup_timeout=60, shutdown_timeout=60)
        await manager.__aenter__()
        # raise_app_exceptions=False: see the 500 problem the way a real client would.
        transport = httpx.ASGITransport(app=manager.app, raise_app_exceptions=False)
        client = httpx.AsyncClient(transport=transport, base_url="http://testserver")
        stack.append((manager, client))
        return app, client

    yield build
    for manager, client in reversed(stack):
        await client.aclose()
        await manager.__aexit__(None, None, None)


@pytest.fixture
async def app_client(app_factory: AppFactory, sqlite_url: str) -> tuple[FastAPI, httpx.AsyncClient]:
    """An app on a fresh SQLite database."""
    return await app_factory(sqlite_url)


@pytest.fixture
async def db_app_client(db_url: str, app_factory: AppFactory) -> tuple[FastAPI, httpx.AsyncClient]:
    """An app on a fresh database, on SQLite and on PostgreSQL.

    `db_url` comes first so it is torn down last: the app stops before its database is dropped.
    """
    return await app_factory(db_url)


HeadersFactory = Callable[..., Awaitable[dict[str, str]]]


@pytest.fixture
def key_headers() -> HeadersFactory:
    """`await key_headers(app, role, bearer=False)`: create a key with `role`, return headers that carry it."""

    async def make(app: FastAPI, role: Role, *, bearer: bool = False) -> dict[str, str]:
        created = await app.state.runtime.keys.create(f"test {role}", role)
        if bearer:
            return {"Authorization": f"Bearer {created.key}"}
        return {"X-API-Key": created.key}

    return make
