"""RFC 9457 problem+json for every kind of error, localized by Accept-Language (zh-CN default, en)."""

from __future__ import annotations

import httpx
from fastapi import APIRouter, FastAPI

from safecity.api.auth import Role, require
from safecity.kernel.errors import ServiceUnavailable

PROBLEM_FIELDS = {"type", "title", "status", "detail", "code", "instance"}


def _assert_problem(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert set(body) >= PROBLEM_FIELDS
    assert body["status"] == status
    assert body["code"] == code
    assert body["type"] == f"https://safecity.dev/problems/{code}"
    assert body["instance"] == response.request.url.path
    return body


async def test_not_found_device_in_both_languages(app_client: tuple[FastAPI, httpx.AsyncClient], key_headers) -> None:
    app, client = app_client
    headers = await key_headers(app, Role.READER)
    zh = _assert_problem(await client.get("/api/v1/devices/nope", headers=headers), 404, "device.not_found")
    assert zh["title"] == "未找到"
    assert zh["detail"] == "未找到设备 nope。"
    en = _assert_problem(
        await client.get("/api/v1/devices/nope", headers={**headers, "Accept-Language": "en"}), 404, "device.not_found"
    )
    assert en["title"] == "Not found"
    assert en["detail"] == "Device nope was not found."
    # q-values decide: English preferred over Chinese here.
    ranked = await client.get("/api/v1/devices/nope", headers={**headers, "Accept-Language": "zh;q=0.5, en;q=0.8"})
    assert ranked.json()["title"] == "Not found"


async def test_routing_errors_are_problems(app_client: tuple[FastAPI, httpx.AsyncClient]) -> None:
    _, client = app_client
    missing = _assert_problem(await client.get("/no/such/route"), 404, "http.not_found")
    assert missing["title"] == "未找到"
    english = _assert_problem(await client.get("/no/such", headers={"Accept-Language": "en"}), 404, "http.not_found")
    assert english["detail"] == "The requested resource does not exist."
    method = _assert_problem(await client.put("/healthz"), 405, "http.method_not_allowed")
    assert method["title"] == "不支持该请求方法"


async def test_validation_error_lists_fields(app_client: tuple[FastAPI, httpx.AsyncClient], key_headers) -> None:
    app, client = app_client
    headers = await key_headers(app, Role.OPERATOR)
    response = await client.post(
        "/api/v1/devices",
        json={"id": "设备-1", "kind": "toaster", "lon": 200, "lat": 31},
        headers={**headers, "Accept-Language": "en"},
    )
    body = _assert_problem(response, 422, "invalid_input")
    assert body["title"] == "Invalid input"
    locations = {tuple(e["loc"]) for e in body["errors"]}
    assert {("body", "id"), ("body", "kind"), ("body", "lon")} <= locations
    assert all(set(e) == {"loc", "msg", "type"} for e in body["errors"])
    bad_query = await client.get("/api/v1/devices?limit=0", headers=headers)
    assert _assert_problem(bad_query, 422, "invalid_input")["title"] == "输入无效"
    not_json = await client.post(
        "/api/v1/devices", content=b"{not json", headers={**headers, "Content-Type": "application/json"}
    )
    _assert_problem(not_json, 422, "invalid_input")


async def test_field_errors_are_localized(app_client: tuple[FastAPI, httpx.AsyncClient], key_headers) -> None:
    app, client = app_client
    headers = await key_headers(app, Role.OPERATOR)
    body = {"id": "d-1", "kind": "toaster", "lon": 200, "lat": 31, "offline_after_s": "often", "colour": "red"}
    zh = await client.post("/api/v1/devices", json=body, headers={**headers, "Accept-Language": "zh-CN"})
    messages = {e["loc"][-1]: e["msg"] for e in _assert_problem(zh, 422, "invalid_input")["errors"]}
    assert messages["lon"] == "应小于或等于 180"
    assert messages["kind"].startswith("应为以下之一：'smoke'")
    assert messages["offline_after_s"] == "应为数字"
    assert messages["colour"] == "不允许的字段"
    half = await client.post("/api/v1/devices", json={"id": "d-1", "kind": "door", "lon": 121.0}, headers=headers)
    assert [e["msg"] for e in half.json()["errors"]] == ["取值无效：lon 与 lat 须同时给出"]
    limit = await client.get("/api/v1/devices?limit=0", headers=headers)
    assert [e["msg"] for e in limit.json()["errors"]] == ["应大于或等于 1"]
    en = await client.post("/api/v1/devices", json=body, headers={**headers, "Accept-Language": "en"})
    assert {e["loc"][-1]: e["msg"] for e in en.json()["errors"]}["lon"] == "Input should be less than or equal to 180"


async def test_body_cap_gives_413(app_factory, sqlite_url: str, key_headers) -> None:
    app, client = await app_factory(sqlite_url, http={"max_body_bytes": 2048})
    headers = await key_headers(app, Role.OPERATOR)
    big = "id,kind\n" + "".join(f"d{i:05d},smoke\n" for i in range(400))
    response = await client.post(
        "/api/v1/devices/import", content=big.encode(), headers={**headers, "Content-Type": "text/csv"}
    )
    body = _assert_problem(response, 413, "payload.too_large")
    assert "2048" in body["detail"]

    async def chunks():
        for _ in range(10):
            yield b"x" * 1000

    # Without Content-Length (chunked), the cap still holds.
    streamed = await client.post(
        "/api/v1/devices/import", content=chunks(), headers={**headers, "Content-Type": "text/csv"}
    )
    _assert_problem(streamed, 413, "payload.too_large")
    small = await client.post(
        "/api/v1/devices/import", content=b"id,kind\na1,smoke\n", headers={**headers, "Content-Type": "text/csv"}
    )
    assert small.status_code == 200


async def test_unhandled_error_is_a_bare_500(app_factory, sqlite_url: str, key_headers) -> None:
    router = APIRouter()

    @router.get("/api/v1/boom", dependencies=[require(Role.OPERATOR)])
    async def boom() -> None:
        raise RuntimeError("secret connection string postgres://u:p@db")

    @router.get("/api/v1/down", dependencies=[require(Role.OPERATOR)])
    async def down() -> None:
        raise ServiceUnavailable(service="NATS")

    app, client = await app_factory(sqlite_url, extra_routers=[router])
    headers = await key_headers(app, Role.OPERATOR)
    response = await client.get("/api/v1/boom", headers={**headers, "Accept-Language": "en"})
    body = _assert_problem(response, 500, "http.internal_server_error")
    assert "secret" not in response.text and "RuntimeError" not in response.text
    assert body["detail"] == "Something went wrong."
    zh = await client.get("/api/v1/boom", headers=headers)
    assert zh.json()["title"] == "内部错误"
    unavailable = _assert_problem(await client.get("/api/v1/down", headers=headers), 503, "service.unavailable")
    assert unavailable["detail"] == "NATS 当前不可用。"
