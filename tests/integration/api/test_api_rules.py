"""Rules through the API: read, check with line numbers, replace (the engine picks the new pack up at once)."""

from __future__ import annotations

import time

import orjson

from safecity.sharing.keys import Role

PACK = """version: 1
rules:
  - id: test.hot
    kind: threshold
    title: {zh: 高温, en: Hot}
    category: Fire
    severity: Severe
    urgency: Immediate
    certainty: Observed
    events: [smoke]
    when: has(data.temp) && double(data.temp) > 50.0
    group_by: device
"""

BAD = """version: 1
rules:
  - id: test.bad
    kind: correlation
    title: {zh: 坏, en: Bad}
    category: Fire
    severity: Severe
    urgency: Immediate
    certainty: Observed
    group_by: building
    within: 400d
    require:
      - events: [smoke]
        count: 2
    colour: red
"""


async def test_rules_read_check_and_replace(app_client, key_headers) -> None:
    app, client = app_client
    operator = await key_headers(app, Role.OPERATOR)
    reader = await key_headers(app, Role.READER)

    running = await client.get("/api/v1/rules", headers=operator)
    assert running.status_code == 200
    ids = {r["id"] for r in running.json()["rules"]}
    assert "fire.smoke_pair" in ids
    # Watch lists show their size only: never plates, not even their pseudonyms.
    assert running.json()["watchlists"]
    assert "沪A12345" not in running.text

    yaml = {"Content-Type": "application/yaml"}
    checked = await client.post("/api/v1/rules/check", content=BAD, headers={**operator, **yaml})
    assert checked.status_code == 200
    report = checked.json()
    assert report["valid"] is False
    assert all(issue["line"] for issue in report["issues"])
    assert any("colour" in issue["message"] for issue in report["issues"])

    refused = await client.put("/api/v1/rules", content=BAD, headers={**operator, **yaml})
    assert refused.status_code == 422
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert refused.json()["code"] == "rules.invalid"
    assert refused.json()["issues"]
    assert (await client.get("/api/v1/rules", headers=operator)).json()["rules"] == running.json()["rules"]

    assert (await client.put("/api/v1/rules", content=PACK, headers={**reader, **yaml})).status_code == 403
    replaced = await client.put("/api/v1/rules", content=PACK, headers={**operator, **yaml})
    assert replaced.status_code == 200
    assert [r["id"] for r in replaced.json()["rules"]] == ["test.hot"]

    # The new pack is live: a hot reading from a registered detector raises its alert.
    runtime = app.state.runtime
    await runtime.devices.upsert_many(
        [
            {
                "id": "smk-1",
                "kind": "smoke",
                "name": "烟感1",
                "town": "t1",
                "community": "c1",
                "building": "b1",
                "lon": 121.25,
                "lat": 31.37,
                "owner": "test",
                "status": "active",
                "offline_after_s": None,
                "attributes": {},
            }
        ]
    )
    await runtime.mqtt_route(
        "safecity/c1/smoke/smk-1", orjson.dumps({"id": "h1", "ts": time.time(), "alarm": False, "temp": 60.0})
    )
    await runtime.bus.drain()
    assert runtime.warning.status()["raised"] == 1
