"""Rules through the API: read, check with line numbers, replace (the engine picks the new pack up at once)."""

from __future__ import annotations

import time

import orjson
from hypothesis import HealthCheck, given, settings
from tests.rule_packs import rule_packs

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


# The app is built once per test, not per example: each PUT replaces the pack (or is refused and changes nothing),
# so the property holds whatever the earlier examples left running.
@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=rule_packs())
async def test_put_rules_answers_2xx_or_a_line_numbered_422_never_500(
    app_client, key_headers, case: tuple[str, str | None]
) -> None:
    app, client = app_client
    text, fault = case
    headers = {**(await key_headers(app, Role.OPERATOR)), "Content-Type": "application/yaml"}
    checked = (await client.post("/api/v1/rules/check", content=text, headers=headers)).json()
    put = await client.put("/api/v1/rules", content=text, headers=headers)
    if checked["valid"]:
        assert fault is None, f"check accepted a pack with fault {fault!r}"
        assert put.status_code == 200, put.text
        assert [r["id"] for r in put.json()["rules"]] == [r.id for r in app.state.runtime.warning.engine.rules]
    else:
        assert checked["issues"] and all(isinstance(i["line"], int) for i in checked["issues"])
        assert put.status_code == 422, put.text
        assert put.headers["content-type"].startswith("application/problem+json")
        assert put.json()["issues"] == checked["issues"]


TREND = """rules:
  - id: crowd.surge
    kind: trend
    title: {zh: 人群密度快速上升, en: Crowd density rising fast}
    events: [crowd]
    rise_pct: 100
    over: 10m
    when: bogus_name > 1.0 &&
"""


async def test_put_of_a_trend_rule_with_a_broken_condition_is_a_422_not_a_500(app_client, key_headers) -> None:
    app, client = app_client
    headers = {**(await key_headers(app, Role.OPERATOR)), "Content-Type": "application/yaml"}
    before = app.state.runtime.warning.engine
    refused = await client.put("/api/v1/rules", content=TREND, headers=headers)
    assert refused.status_code == 422, refused.text
    assert refused.headers["content-type"].startswith("application/problem+json")
    (issue,) = refused.json()["issues"]
    assert issue["line"] == 8 and issue["message"].startswith("when: CEL syntax error")
    assert app.state.runtime.warning.engine is before
