"""The command centre in a real browser against a real demo node: the operator's fire-alert flow, roles, refusals
shown to the user, the language switch, and a reconnect that loses no update. Screenshots go to docs/img/."""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

import orjson
import pytest

from tests.e2e.web.conftest import Node, PageFactory, screenshot

pytestmark = pytest.mark.slow
CJK = re.compile(r"[\u3400-\u9fff]")


def _smoke_alarm(node: Node) -> tuple[str, str]:
    """Set off one smoke detector nobody has alerted on yet; return (device id, alert id) once the alert exists."""
    with node.client() as http:
        alerted = {d for a in http.get("/api/v1/alerts", params={"limit": 1000}).json()["items"] for d in a["devices"]}
        smoke = [d["id"] for d in http.get("/api/v1/devices", params={"kind": "smoke", "limit": 200}).json()["items"]]
        device = next(d for d in smoke if d not in alerted)
    line = {"device": device, "kind": "smoke", "alarm": True, "smoke_density": 3.5, "id": uuid.uuid4().hex}
    with node.client(node.key("ingest")) as http:
        sent = http.post(
            "/api/v1/ingest/batch?format=generic",
            content=orjson.dumps(line),
            headers={"Content-Type": "application/x-ndjson"},
        )
        assert sent.status_code == 202 and sent.json()["accepted"] == 1, sent.text
    deadline = time.monotonic() + 20
    with node.client() as http:
        while time.monotonic() < deadline:
            for alert in http.get("/api/v1/alerts", params={"category": "Fire", "limit": 200}).json()["items"]:
                if device in alert["devices"]:
                    return device, alert["id"]
            time.sleep(0.2)
    raise AssertionError(f"no fire alert for {device}")


def _responder(page: Any, unit: str) -> dict[str, Any]:
    found: dict[str, Any] = page.evaluate(f"({{...window.safecity.state.responders.get({unit!r})}})")
    return found


def test_operator_acknowledges_a_fire_alert_turns_it_into_an_incident_and_dispatches(
    open_page: tuple[PageFactory, Any], node: Node
) -> None:
    make, _ = open_page
    page = make("operator")
    _, alert_id = _smoke_alarm(node)

    row = page.locator(f"li[data-alert='{alert_id}']")
    row.wait_for(timeout=15_000)  # it arrives over the live channel
    row.locator(".row").click()
    row.locator("textarea.feedback").fill("值班员已电话核实：楼内有烟")
    row.locator("button.act-ack").click()
    row.locator(".badge.state-acknowledged").wait_for(timeout=10_000)
    page.locator(".toast.ok").first.wait_for()
    screenshot(page, "alerts")

    row.locator("button.act-incident").click()
    panel = page.locator(".detail-panel")
    panel.wait_for(timeout=10_000)
    incident_id = panel.get_attribute("data-incident")
    assert incident_id
    with node.client() as http:
        incident = http.get(f"/api/v1/incidents/{incident_id}").json()["incident"]
    assert incident["alert_id"] == alert_id and incident["type"] == "fire"
    # The opening step carries the alert and its triggering events as evidence.
    assert panel.locator(".history .evidence").first.inner_text()

    panel.locator("table.ranked tr.eligible").first.wait_for(timeout=15_000)
    shown = panel.locator("table.ranked tr.eligible").evaluate_all("(rows) => rows.map((r) => r.dataset.responder)")
    # One click: the server dispatches the first eligible responder of its recommendation at that moment. The floor's
    # units keep moving (and its own dispatcher keeps taking them), so that can be another eligible one than the row
    # shown first; which one ranks first is the dispatch service's tests' business.
    positions = page.evaluate(
        "Object.fromEntries([...window.safecity.state.responders.values()].map((r) => [r.id, [r.lon, r.lat]]))"
    )
    panel.locator("button.act-dispatch-best").click()
    page.locator(".toast.ok", has_text=re.compile("P\\d\\d|G\\d\\d")).first.wait_for(timeout=10_000)
    page.wait_for_function(f"window.safecity.state.incidents.get({incident_id!r}).unit_id", timeout=10_000)
    unit = page.evaluate(f"window.safecity.state.incidents.get({incident_id!r}).unit_id")
    assert unit in shown, (unit, shown)
    page.locator(f"#incident-unit:has-text('{unit}')").wait_for(timeout=10_000)
    lon, lat = positions[unit]  # where it stood when dispatched
    page.locator("li[data-step='dispatched_at'].done").wait_for()
    # The unit sets off (the floor drives it along the road network) and the stages fill in as it goes.
    page.locator("li[data-step='en_route_at'].done").wait_for(timeout=20_000)
    screenshot(page, "incident")
    # ... and the map draws it where it has moved to (the moving layer's own position, not only the page's state).
    page.wait_for_function(
        f"(() => {{ const p = window.safecity.map.responders.positionOf({unit!r});"
        f" return p !== null && (p[0] !== {lon} || p[1] !== {lat}); }})()",
        timeout=30_000,
    )
    page.locator("li[data-step='on_scene_at'].done").wait_for(timeout=180_000)
    assert panel.get_attribute("data-stage") == "on_scene"
    assert _responder(page, unit)["status"] == "on_scene"
    with node.client() as http:
        steps = [s["action"] for s in http.get(f"/api/v1/incidents/{incident_id}").json()["history"]]
    assert steps[:1] == ["open"] and {"dispatch", "depart", "arrive"} <= set(steps)


def test_a_reader_sees_no_actions_and_the_server_refuses_whatever_the_page_shows(
    open_page: tuple[PageFactory, Any], node: Node
) -> None:
    make, _ = open_page
    with node.client(node.key("operator")) as http:
        made = http.post("/api/v1/incidents", json={"type": "dispute", "origin": "call", "lon": 121.25, "lat": 31.38})
        assert made.status_code == 201, made.text
        incident_id = made.json()["incident"]["id"]
    page = make("reader")
    page.click("button[data-tab='incidents']")
    page.locator(f"li[data-incident='{incident_id}']").click()
    panel = page.locator(".detail-panel")
    panel.locator("table.ranked").wait_for(timeout=15_000)
    assert panel.locator("button.act-dispatch, button.act-dispatch-best, .actions button").count() == 0
    page.click("button[data-tab='alerts']")
    first_alert = page.locator("li[data-alert] .row").first
    first_alert.wait_for(timeout=20_000)
    first_alert.click()
    assert page.locator("li[data-alert] .actions button").count() == 0
    screenshot(page, "reader")
    # The page hides the buttons; the server is what refuses, with a problem+json body.
    with node.client(node.key("reader")) as http:
        refused = http.post(f"/api/v1/incidents/{incident_id}/dispatch")
        assert refused.status_code == 403
        assert refused.headers["content-type"].startswith("application/problem+json")
        alert_id = first_alert.locator("xpath=..").get_attribute("data-alert")
        assert http.post(f"/api/v1/alerts/{alert_id}/acknowledge").status_code == 403
        assert http.post(f"/api/v1/alerts/{alert_id}/incident").status_code == 403


def test_a_refused_action_is_shown_not_swallowed(open_page: tuple[PageFactory, Any], node: Node) -> None:
    make, guard = open_page
    guard.allow(r"status of 409")  # the browser's own line for the refusal this test provokes
    page = make("operator")
    _, alert_id = _smoke_alarm(node)
    row = page.locator(f"li[data-alert='{alert_id}']")
    row.wait_for(timeout=15_000)
    # Opening the row fetches the alert afresh: let that answer land before another operator acknowledges it.
    with page.expect_response(lambda r: r.url.endswith(f"/api/v1/alerts/{alert_id}"), timeout=15_000):
        row.locator(".row").click()
    row.locator("button.act-ack").wait_for()
    # Pause live updates so the page still offers "acknowledge" after another operator has acknowledged it.
    page.evaluate("window.safecity.live.stop()")
    with node.client() as http:
        assert http.post(f"/api/v1/alerts/{alert_id}/acknowledge").status_code == 200
    row.locator("button.act-ack").click()
    error = page.locator(".toast.error")
    error.wait_for(timeout=10_000)
    assert "409" in error.inner_text() or "冲突" in error.inner_text()
    screenshot(page, "refused")
    page.evaluate("window.safecity.live.start()")
    row.locator(".badge.state-acknowledged").wait_for(timeout=10_000)


def _visible_ui_text(page: Any) -> list[str]:
    """Every visible text node that is UI text (not server data: names, ids, free text are marked `.data`)."""
    texts: list[str] = page.evaluate(
        """() => {
        const out = [];
        const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
        for (let n = walker.nextNode(); n; n = walker.nextNode()) {
          const text = n.textContent.trim();
          const el = n.parentElement;
          if (!text || !el || el.closest('.data, [lang]:not(html), .maplibregl-map canvas')) continue;
          if (!el.checkVisibility()) continue;
          out.push(text);
        }
        return out;
      }"""
    )
    return texts


def test_the_language_switch_changes_every_visible_string_and_is_remembered(
    open_page: tuple[PageFactory, Any], node: Node
) -> None:
    make, _ = open_page
    page = make("dispatcher")
    tabs = ["alerts", "incidents", "responders", "kpis"]
    zh_texts: set[str] = set()
    for tab in tabs:
        page.click(f"button[data-tab='{tab}']")
        page.wait_for_timeout(700)
        zh_texts |= set(_visible_ui_text(page))
    assert any(CJK.search(t) for t in zh_texts), "zh-CN is the default"
    page.click("button[data-lang='en']")
    for tab in tabs:
        page.click(f"button[data-tab='{tab}']")
        page.wait_for_timeout(700)
        if tab == "kpis":
            page.locator(".kpis .tiles").wait_for(timeout=15_000)
            screenshot(page, "kpis")
        if tab == "responders":
            screenshot(page, "responders-en")
        leftover = [t for t in _visible_ui_text(page) if CJK.search(t)]
        assert leftover == [], f"Chinese UI text left on the {tab} tab in English: {leftover}"
    assert page.evaluate("document.documentElement.lang") == "en"
    page.reload()
    page.wait_for_selector("body[data-ready='true']")
    assert page.locator("button[data-tab='alerts']").inner_text() == "Alerts"  # remembered (localStorage)
    page.click("button[data-lang='zh-CN']")
    assert page.locator("button[data-tab='alerts']").inner_text() == "预警"
    en_only = set(page.evaluate("Object.values(window.safecity.catalogues.en)")) - set(
        page.evaluate("Object.values(window.safecity.catalogues['zh-CN'])")
    )
    for tab in tabs:
        page.click(f"button[data-tab='{tab}']")
        page.wait_for_timeout(500)
        assert [t for t in _visible_ui_text(page) if t in en_only] == []


def test_a_reconnect_loses_no_update(open_page: tuple[PageFactory, Any], node: Node) -> None:
    make, _ = open_page
    page = make("operator")
    page.wait_for_function("window.safecity.live.seq !== null && window.safecity.live.socket !== null")
    resyncs = page.evaluate("window.safecity.live.resyncs")
    # Offline: the socket is closed while incidents open and units move on the server.
    page.evaluate("window.safecity.live.stop()")
    missed_from = page.evaluate("window.safecity.live.seq")
    opened = []
    with node.client(node.key("operator")) as http:
        for n in range(5):
            made = http.post(
                "/api/v1/incidents",
                json={"type": "dispute", "origin": "call", "lon": 121.24 + n / 100, "lat": 31.37, "summary": f"r{n}"},
            )
            assert made.status_code == 201, made.text
            opened.append(made.json()["incident"]["id"])
    time.sleep(1.5)
    page.evaluate("window.safecity.live.start()")
    page.wait_for_function(
        "ids => ids.every((id) => window.safecity.state.incidents.has(id))", arg=opened, timeout=15_000
    )
    # Resumed from its last sequence number: every message since was replayed in order, none reloaded or skipped.
    assert page.evaluate("window.safecity.live.resyncs") == resyncs
    applied = page.evaluate(f"window.safecity.live.applied.filter((s) => s > {missed_from})")
    assert applied == list(range(missed_from + 1, missed_from + 1 + len(applied)))
    assert page.evaluate("window.safecity.live.gaps") == 0
    # A client whose position the server no longer holds (another epoch: a restarted node) reloads its state.
    page.evaluate("window.safecity.live.epoch = 'ffff'; window.safecity.live.drop()")
    page.wait_for_function(f"window.safecity.live.resyncs > {resyncs}", timeout=15_000)
    page.wait_for_function("window.safecity.live.reloading === null")
    assert all(page.evaluate(f"window.safecity.state.incidents.has({i!r})") for i in opened)


def test_first_render_and_main_view(open_page: tuple[PageFactory, Any], node: Node) -> None:
    make, _ = open_page
    started = time.monotonic()
    page = make("dispatcher", wait=False)
    page.wait_for_function("window.safecity && window.safecity.firstRenderMs", timeout=30_000)
    ready_s = time.monotonic() - started
    first_render_ms = page.evaluate("window.safecity.firstRenderMs")
    print(f"first map render {first_render_ms:.0f} ms after navigation start; ready in {ready_s:.1f} s")
    assert page.locator(".maplibregl-canvas").is_visible()
    page.wait_for_timeout(1500)
    screenshot(page, "map")
    # A station's coverage: the 5-minute areas of its units, from the server's road network.
    page.click("button[data-tab='responders']")
    page.locator("button[data-station='ps-1']").click()
    page.wait_for_function("window.safecity.state.isochroneAreas > 0", timeout=20_000)
    assert "ps-1" in page.locator(".iso-note").inner_text()
    screenshot(page, "coverage")
