"""Device registry over HTTP on SQLite and PostgreSQL: CRUD, filters, pagination, CSV / GeoJSON bulk import."""

from __future__ import annotations

import json

import httpx
from fastapi import FastAPI

from safecity.sharing.keys import Role

CSV_HEADERS = {"Content-Type": "text/csv; charset=utf-8"}


async def test_crud_and_index(db_app_client: tuple[FastAPI, httpx.AsyncClient], key_headers) -> None:
    app, client = db_app_client
    op = await key_headers(app, Role.OPERATOR)
    index = app.state.runtime.devices.index
    device = {
        "id": "jd-001:smoke.7",
        "kind": "smoke",
        "name": "嘉定一号楼烟感",
        "town": "anting",
        "community": "c-01",
        "building": "b-1",
        "lon": 121.165,
        "lat": 31.29,
        "owner": "物业",
        "heartbeat_s": 60,
        "attributes": {"floor": 3},
    }
    created = await client.post("/api/v1/devices", json=device, headers=op)
    assert created.status_code == 201, created.text
    assert created.headers["location"] == "/api/v1/devices/jd-001:smoke.7"
    body = created.json()
    assert body["status"] == "active"
    assert body["created_at"] == body["updated_at"]
    assert index.get("jd-001:smoke.7").community == "c-01"

    again = await client.post("/api/v1/devices", json=device, headers=op)
    assert again.status_code == 409
    assert again.json()["code"] == "device.exists"

    got = await client.get("/api/v1/devices/jd-001:smoke.7", headers=op)
    assert got.json()["name"] == "嘉定一号楼烟感"
    assert got.json()["attributes"] == {"floor": 3}

    patched = await client.patch(
        "/api/v1/devices/jd-001:smoke.7",
        json={"community": "c-02", "status": "maintenance", "building": None},
        headers=op,
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["community"] == "c-02"
    assert patched.json()["building"] is None
    assert patched.json()["name"] == "嘉定一号楼烟感"
    info = index.get("jd-001:smoke.7")
    assert (info.community, info.building, info.status) == ("c-02", None, "maintenance")

    half = await client.patch("/api/v1/devices/jd-001:smoke.7", json={"lon": 121.0}, headers=op)
    assert half.status_code == 422
    null_kind = await client.patch("/api/v1/devices/jd-001:smoke.7", json={"kind": None}, headers=op)
    assert null_kind.status_code == 422
    assert (await client.patch("/api/v1/devices/ghost", json={"name": "x"}, headers=op)).status_code == 404

    deleted = await client.delete("/api/v1/devices/jd-001:smoke.7", headers=op)
    assert deleted.status_code == 204
    assert index.get("jd-001:smoke.7") is None
    assert (await client.get("/api/v1/devices/jd-001:smoke.7", headers=op)).status_code == 404
    assert (await client.delete("/api/v1/devices/jd-001:smoke.7", headers=op)).status_code == 404


async def test_list_filters_and_pages(db_app_client: tuple[FastAPI, httpx.AsyncClient], key_headers) -> None:
    app, client = db_app_client
    op = await key_headers(app, Role.OPERATOR)
    reader = await key_headers(app, Role.READER)
    for i in range(7):
        kind = "door" if i % 2 else "smoke"
        device = {"id": f"d{i}", "kind": kind, "town": "t1" if i < 4 else "t2", "community": f"c{i % 3}"}
        assert (await client.post("/api/v1/devices", json=device, headers=op)).status_code == 201
    page = (await client.get("/api/v1/devices?limit=3", headers=reader)).json()
    assert page["total"] == 7
    assert [d["id"] for d in page["items"]] == ["d0", "d1", "d2"]
    rest = (await client.get("/api/v1/devices?limit=3&offset=6", headers=reader)).json()
    assert [d["id"] for d in rest["items"]] == ["d6"]
    doors = (await client.get("/api/v1/devices?kind=door&town=t1", headers=reader)).json()
    assert [d["id"] for d in doors["items"]] == ["d1", "d3"]
    assert doors["total"] == 2
    by_community = (await client.get("/api/v1/devices?community=c0&status=active", headers=reader)).json()
    assert [d["id"] for d in by_community["items"]] == ["d0", "d3", "d6"]
    assert (await client.get("/api/v1/devices?kind=toaster", headers=reader)).status_code == 422


async def test_csv_import_reports_line_numbers(db_app_client: tuple[FastAPI, httpx.AsyncClient], key_headers) -> None:
    app, client = db_app_client
    op = await key_headers(app, Role.OPERATOR)
    csv_text = (
        "id,kind,name,town,community,lon,lat,heartbeat_s,floor\n"  # line 1
        "s-1,smoke,烟感1,anting,c1,121.1,31.3,60,2\n"  # 2 ok
        "s-2,toaster,bad kind,anting,c1,121.1,31.3,,\n"  # 3 bad kind
        "s-3,door,,anting,c1,181,31.3,,\n"  # 4 lon out of range
        "\n"  # 5 blank
        "s-4,door,门磁,anting,c1,,,,\n"  # 6 ok, no position
        "s-1,smoke,dup,anting,c1,121.1,31.3,,\n"  # 7 duplicate
        "设备5,smoke,non-ascii id,anting,c1,,,,\n"  # 8 id pattern
        "s-6,smoke,half,anting,c1,121.1,,,\n"  # 9 lon without lat
    )
    strict = await client.post(
        "/api/v1/devices/import?mode=all_or_nothing", content=csv_text.encode(), headers={**op, **CSV_HEADERS}
    )
    assert strict.status_code == 422
    problem = strict.json()
    assert problem["code"] == "device.import_rejected"
    assert [e["line"] for e in problem["errors"]] == [3, 4, 7, 8, 9]
    assert (await client.get("/api/v1/devices", headers=op)).json()["total"] == 0

    loose = await client.post("/api/v1/devices/import", content=csv_text.encode(), headers={**op, **CSV_HEADERS})
    assert loose.status_code == 200, loose.text
    report = loose.json()
    assert (report["created"], report["updated"], report["applied"]) == (2, 0, True)
    errors = {e["line"]: e for e in report["errors"]}
    assert set(errors) == {3, 4, 7, 8, 9}
    # Row reasons follow Accept-Language (zh-CN by default), field names stay as they are.
    assert errors[3]["reason"].startswith("kind: 应为以下之一：'smoke'")
    assert errors[4]["reason"] == "lon: 应小于或等于 180"
    assert errors[7]["reason"] == "id 重复（首次出现在第 2 行）"
    assert errors[9]["reason"] == "取值无效：lon 与 lat 须同时给出"
    assert errors[8]["id"] == "设备5"
    s1 = (await client.get("/api/v1/devices/s-1", headers=op)).json()
    assert s1["attributes"] == {"floor": "2"}
    assert s1["offline_after_s"] == 60  # read from the deprecated column name
    assert app.state.runtime.devices.index.get("s-4").kind == "door"

    english = await client.post(
        "/api/v1/devices/import?mode=all_or_nothing",
        content=csv_text.encode(),
        headers={**op, **CSV_HEADERS, "Accept-Language": "en"},
    )
    reasons = {e["line"]: e["reason"] for e in english.json()["errors"]}
    assert reasons[4] == "lon: Input should be less than or equal to 180"
    assert reasons[7] == "duplicate id (first on line 2)"

    # Importing again updates instead of creating.
    again = await client.post(
        "/api/v1/devices/import?mode=valid_only",
        content=b"id,kind,name\ns-1,smoke,renamed\nnew-1,crowd,\n",
        headers={**op, **CSV_HEADERS},
    )
    assert (again.json()["created"], again.json()["updated"]) == (1, 1)
    assert (await client.get("/api/v1/devices/s-1", headers=op)).json()["name"] == "renamed"
    assert (await client.get("/api/v1/devices/new-1", headers=op)).json()["name"] == "new-1"


async def test_geojson_import(db_app_client: tuple[FastAPI, httpx.AsyncClient], key_headers) -> None:
    app, client = db_app_client
    op = await key_headers(app, Role.OPERATOR)
    collection = {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "id": "cam-1",
                "geometry": {"type": "Point", "coordinates": [121.25, 31.38]},
                "properties": {"kind": "video", "community": "c9", "vendor": "acme"},
            },
            {"type": "Feature", "geometry": {"type": "LineString", "coordinates": [[0, 0], [1, 1]]}, "properties": {}},
            {"type": "Feature", "geometry": None, "properties": {"id": "p-1", "kind": "parking"}},
            {
                "type": "Feature",
                "geometry": {"type": "Point", "coordinates": [1, 95]},
                "properties": {"id": "x", "kind": "smoke"},
            },
        ],
    }
    response = await client.post(
        "/api/v1/devices/import",
        content=json.dumps(collection).encode(),
        headers={**op, "Content-Type": "application/geo+json"},
    )
    assert response.status_code == 200, response.text
    report = response.json()
    assert report["created"] == 2
    assert [(e["feature"], e["line"]) for e in report["errors"]] == [(1, None), (3, None)]
    assert "lat" in report["errors"][1]["reason"]
    cam = (await client.get("/api/v1/devices/cam-1", headers=op)).json()
    assert (cam["lon"], cam["lat"], cam["attributes"]) == (121.25, 31.38, {"vendor": "acme"})

    not_geojson = await client.post("/api/v1/devices/import?mode=all_or_nothing", json={"type": "Point"}, headers=op)
    assert not_geojson.status_code == 422
    unsupported = await client.post(
        "/api/v1/devices/import", content=b"<xml/>", headers={**op, "Content-Type": "application/xml"}
    )
    assert unsupported.status_code == 415
    assert unsupported.json()["code"] == "http.unsupported_media_type"


async def test_empty_or_headerless_csv_is_a_422_problem(
    app_client: tuple[FastAPI, httpx.AsyncClient], key_headers
) -> None:
    app, client = app_client
    op = await key_headers(app, Role.OPERATOR)
    cases = {
        b"": "device.file_empty",
        b"\r\n": "device.file_empty",
        "s-1,smoke,烟感1,anting,c1,121.1,31.3\n".encode(): "device.csv_header_missing",
    }
    for body, code in cases.items():
        for mode in ("valid_only", "all_or_nothing"):
            response = await client.post(
                f"/api/v1/devices/import?mode={mode}", content=body, headers={**op, **CSV_HEADERS}
            )
            assert response.status_code == 422, (body, mode, response.text)
            assert response.headers["content-type"] == "application/problem+json"
            assert response.json()["code"] == code
    headerless = await client.post(
        "/api/v1/devices/import", content=b"s-1,smoke\n", headers={**op, **CSV_HEADERS, "Accept-Language": "zh-CN"}
    )
    assert headerless.json()["detail"] == "第一行须为列名表头（例如 id,kind,name,lon,lat）；缺少列：id, kind。"
    geojson = await client.post(
        "/api/v1/devices/import", content=b"{", headers={**op, "Content-Type": "application/geo+json"}
    )
    assert (geojson.status_code, geojson.json()["code"]) == (422, "device.geojson_invalid")
    assert (await client.get("/api/v1/devices", headers=op)).json()["total"] == 0


async def test_gbk_csv_from_chinese_excel_is_imported(
    app_client: tuple[FastAPI, httpx.AsyncClient], key_headers
) -> None:
    app, client = app_client
    op = await key_headers(app, Role.OPERATOR)
    csv_text = "id,kind,name,town\r\ns-1,smoke,嘉定一号楼烟感,安亭镇\r\n"
    response = await client.post(
        "/api/v1/devices/import", content=csv_text.encode("gbk"), headers={**op, "Content-Type": "text/csv"}
    )
    assert response.status_code == 200, response.text
    assert response.json()["created"] == 1
    device = (await client.get("/api/v1/devices/s-1", headers=op)).json()
    assert (device["name"], device["town"]) == ("嘉定一号楼烟感", "安亭镇")
    garbage = await client.post(
        "/api/v1/devices/import",
        content=b"id,kind\n\x81\x20\xff\n",
        headers={**op, "Content-Type": "text/csv", "Accept-Language": "zh-CN"},
    )
    assert (garbage.status_code, garbage.json()["code"]) == (422, "device.csv_encoding")
    assert garbage.json()["detail"] == "无法解码该 CSV：请保存为 UTF-8（带或不带 BOM）或 GBK/GB18030 编码。"


async def test_multipart_upload_like_curl_form(app_client: tuple[FastAPI, httpx.AsyncClient], key_headers) -> None:
    app, client = app_client
    op = await key_headers(app, Role.OPERATOR)
    # What `curl -F file=@devices.csv` sends: a form part typed application/octet-stream, named by its file.
    csv_bytes = "id,kind,name\r\ns-1,smoke,烟感\r\n".encode("gbk")
    files = {"file": ("devices.csv", csv_bytes, "application/octet-stream")}
    response = await client.post("/api/v1/devices/import", files=files, headers=op)
    assert response.status_code == 200, response.text
    assert response.json()["created"] == 1
    assert (await client.get("/api/v1/devices/s-1", headers=op)).json()["name"] == "烟感"

    feature = {"type": "Feature", "id": "g-1", "geometry": None, "properties": {"kind": "door"}}
    geojson = json.dumps({"type": "FeatureCollection", "features": [feature]}).encode()
    typed = {"upload": ("devices.geojson", geojson, "application/geo+json")}
    assert (await client.post("/api/v1/devices/import", files=typed, headers=op)).json()["created"] == 1

    no_file = await client.post(
        "/api/v1/devices/import",
        headers={**op, "Content-Type": "multipart/form-data; boundary=b"},
        content=b'--b\r\nContent-Disposition: form-data; name="note"\r\n\r\nx\r\n--b--\r\n',
    )
    assert (no_file.status_code, no_file.json()["code"]) == (422, "device.upload_missing")
    unknown = {"file": ("devices.xlsx", b"PK\x03\x04", "application/octet-stream")}
    assert (await client.post("/api/v1/devices/import", files=unknown, headers=op)).status_code == 415


async def test_offline_after_s_and_heartbeat_kind(app_client: tuple[FastAPI, httpx.AsyncClient], key_headers) -> None:
    app, client = app_client
    op = await key_headers(app, Role.OPERATOR)
    # A gateway that only reports it is alive registers as kind `heartbeat`.
    gateway = await client.post("/api/v1/devices", json={"id": "gw-1", "kind": "heartbeat"}, headers=op)
    assert gateway.status_code == 201, gateway.text
    named = await client.post(
        "/api/v1/devices", json={"id": "s-1", "kind": "smoke", "offline_after_s": 900}, headers=op
    )
    assert named.json()["offline_after_s"] == 900
    assert "heartbeat_s" not in named.json()
    # The old name is still read on input (deprecated alias), in JSON, PATCH and CSV.
    old = await client.post("/api/v1/devices", json={"id": "s-2", "kind": "smoke", "heartbeat_s": 120}, headers=op)
    assert old.json()["offline_after_s"] == 120
    patched = await client.patch("/api/v1/devices/s-2", json={"heartbeat_s": 60}, headers=op)
    assert patched.json()["offline_after_s"] == 60
    assert app.state.runtime.devices.index.get("s-2").offline_after_s == 60
    imported = await client.post(
        "/api/v1/devices/import", content=b"id,kind,offline_after_s\ns-3,door,30\n", headers={**op, **CSV_HEADERS}
    )
    assert imported.json()["created"] == 1
    assert (await client.get("/api/v1/devices/s-3", headers=op)).json()["offline_after_s"] == 30
