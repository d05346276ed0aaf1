"""Hypothesis strategies for rule packs: valid ones, and ones with one subtle fault (shared by unit and API tests)."""

from __future__ import annotations

from typing import Any

import yaml
from hypothesis import strategies as st

GOOD_WHEN = [
    None,
    "data.alarm == true",
    "has(data.temp) && double(data.temp) > 50.0",
    'state == "open"',
    "value >= 10.0",
    'tags.building != "" || kind == "door"',
    "size(device_id) > 3",
    'state.startsWith("occ")',
    'has(pseudonyms.plate) && source != "x"',
    "value > 1.0 ? true : false",
]
BAD_WHEN = [
    "bogus_name > 1.0 &&",
    "bogus_name > 1.0",
    "value >",
    "",
    "has(value)",
    "data.alarm == true && temperature > 3.0",
]
EVENTS = ["smoke", "door", "parking", "checkpoint", "crowd", "heartbeat", "video", "device.offline"]
SQUARE = [[121.24, 31.37], [121.25, 31.37], [121.25, 31.38], [121.24, 31.38]]


def _when(draw: st.DrawFn) -> dict[str, Any]:
    when = draw(st.sampled_from(GOOD_WHEN))
    return {} if when is None else {"when": when}


def _events(draw: st.DrawFn) -> list[str]:
    return draw(st.lists(st.sampled_from(EVENTS), min_size=1, max_size=3, unique=True))


def _window(draw: st.DrawFn) -> str | int:
    return draw(st.sampled_from(["500ms", "30s", "5m", "2h", "24h", 90]))


@st.composite
def valid_rule(draw: st.DrawFn, rid: str) -> dict[str, Any]:
    """One valid rule of any kind, with a few common fields drawn too."""
    kind = draw(st.sampled_from(["threshold", "correlation", "absence", "sequence", "geofence", "hotlist", "trend"]))
    rule: dict[str, Any] = {"id": rid, "kind": kind, "title": {"zh": "规则", "en": "rule"}}
    if kind == "threshold":
        rule |= {"events": _events(draw), **_when(draw)}
        shape = draw(st.sampled_from(["once", "count", "hold"]))
        if shape == "count":
            rule |= {"count": draw(st.integers(2, 5)), "within": _window(draw)}
        elif shape == "hold":
            rule["hold"] = _window(draw)
    elif kind == "correlation":
        clauses = [{"events": _events(draw), **_when(draw)} for _ in range(draw(st.integers(1, 2)))]
        if draw(st.booleans()):
            clauses[0] |= {"count": 2, "distinct": "device"}
        rule |= {"require": clauses, "within": _window(draw), "group_by": "building"}
    elif kind == "absence":
        rule |= {"expect": {"events": _events(draw), **_when(draw)}, "within": _window(draw)}
        if draw(st.booleans()):
            rule["after"] = {"events": _events(draw), **_when(draw)}
    elif kind == "sequence":
        steps = [{"events": _events(draw), **_when(draw)} for _ in range(draw(st.integers(2, 3)))]
        rule |= {"steps": steps, "within": _window(draw)}
    elif kind == "geofence":
        trigger = draw(st.sampled_from(["enter", "exit", "dwell"]))
        rule |= {"events": _events(draw), **_when(draw), "trigger": trigger}
        rule["zone"] = {"name": "z", "polygon": SQUARE}
        if trigger == "dwell":
            rule["dwell"] = _window(draw)
    elif kind == "hotlist":
        rule |= {"watchlist": "stolen", **_when(draw)}
    else:
        rule |= {"events": _events(draw), **_when(draw), "rise_pct": 50, "over": _window(draw), "min_value": 1}
    if draw(st.booleans()):
        start, end = draw(st.sampled_from([("23:00", "05:00"), ("08:00", "18:30"), ("00:00", "23:59:59")]))
        rule["schedule"] = {"from": start, "to": end, "days": ["mon", "sat"], "calendar": "holidays"}
    if draw(st.booleans()):
        rule["scope"] = {"towns": ["t1"]}
    return rule


def _set_when(rule: dict[str, Any], when: str) -> None:
    for part in ("require", "steps"):
        if part in rule:
            rule[part][0]["when"] = when
            return
    if "expect" in rule:
        rule["expect"]["when"] = when
    else:
        rule["when"] = when


def _set_events(rule: dict[str, Any], events: list[str]) -> None:
    for part in ("require", "steps"):
        if part in rule:
            rule[part][0]["events"] = events
            return
    target = rule.get("expect", rule)
    target["events"] = events


# One subtle fault each: (name, how it changes the pack document). Every one must be refused by `rules check`.
def _faults(draw: st.DrawFn, doc: dict[str, Any]) -> str:
    rule = draw(st.sampled_from(doc["rules"]))
    fault = draw(
        st.sampled_from(
            [
                "when",
                "events",
                "clock",
                "clock_int",
                "clock_tz",
                "same_times",
                "no_days",
                "tz",
                "window",
                "watchlist_missing",
                "watchlist_field",
                "watchlist_empty",
                "polygon",
                "suppressed_by",
                "suppressed_self",
                "scope_empty",
                "duplicate",
                "unknown_field",
                "kind",
                "calendar",
            ]
        )
    )
    if fault == "when":
        _set_when(rule, draw(st.sampled_from(BAD_WHEN)))
    elif fault == "events":
        _set_events(rule, draw(st.sampled_from([["dor"], ["smoke", "Smoke"], [], ["event.smoke"]])))
    elif fault in ("clock", "clock_int", "clock_tz", "same_times", "no_days", "tz"):
        schedule = rule.setdefault("schedule", {"from": "22:00", "to": "06:00"})
        if fault == "clock":
            schedule[draw(st.sampled_from(["from", "to"]))] = draw(st.sampled_from(["6:00", "24:00", "0600", "6pm"]))
        elif fault == "clock_int":
            schedule["to"] = 360  # what YAML makes of an unquoted 6:00
        elif fault == "clock_tz":
            schedule["to"] = "06:00+08:00"
        elif fault == "same_times":
            schedule["from"] = schedule["to"] = "07:00"
        elif fault == "no_days":
            schedule["days"] = []
        else:
            schedule["tz"] = "Mars/Olympus_Mons"
    elif fault == "window":
        window = draw(st.sampled_from(["25h", "forever", "-1s", "0s"]))
        key = {"threshold": "within", "geofence": "dwell", "trend": "over"}.get(rule["kind"], "within")
        if rule["kind"] == "threshold":
            rule["count"] = 2
        if rule["kind"] == "geofence":
            rule["trigger"] = "dwell"
        if rule["kind"] == "hotlist":
            key = "cooldown" if window in ("forever", "-1s") else "group_window"
        rule[key] = window
    elif fault.startswith("watchlist"):
        if rule["kind"] != "hotlist":
            rule.clear()
            rule |= {"id": "hot", "kind": "hotlist", "title": {"zh": "布控", "en": "hotlist"}, "watchlist": "stolen"}
        if fault == "watchlist_missing":
            rule["watchlist"] = "stolen_cars"
        elif fault == "watchlist_field":
            rule["field"] = "vin"
        else:
            doc["watchlists"]["stolen"] = {"field": "plate"}
    elif fault == "polygon":
        if rule["kind"] != "geofence":
            rule.clear()
            rule |= {"id": "zone", "kind": "geofence", "title": {"zh": "区", "en": "zone"}, "events": ["parking"]}
            rule["trigger"] = "enter"
        polygon = draw(
            st.sampled_from(
                [
                    [[121.24, 31.37], [121.25, 31.38], [121.25, 31.37], [121.24, 31.38]],  # a bow tie
                    [[121.24, 31.37], [121.245, 31.37], [121.25, 31.37]],  # no area
                    [[31.37, 121.24], [31.37, 121.25], [31.38, 121.25]],  # (lat, lon)
                ]
            )
        )
        rule["zone"] = {"name": "z", "polygon": polygon}
    elif fault == "suppressed_by":
        rule["suppressed_by"] = ["no.such.rule"]
    elif fault == "suppressed_self":
        rule["suppressed_by"] = [rule["id"]]
    elif fault == "scope_empty":
        rule["scope"] = {draw(st.sampled_from(["towns", "communities", "buildings"])): []}
    elif fault == "duplicate":
        doc["rules"].append(dict(rule))
    elif fault == "unknown_field":
        rule[draw(st.sampled_from(["colour", "severty", "when_"]))] = "x"
    elif fault == "kind":
        rule["kind"] = draw(st.sampled_from(["thresold", "magic", ""]))
    else:
        rule.setdefault("schedule", {})["calendar"] = "no_such_calendar"
    return fault


@st.composite
def rule_packs(draw: st.DrawFn) -> tuple[str, str | None]:
    """(YAML text, the fault it holds or None): valid packs and packs with one subtle fault, about half each."""
    n = draw(st.integers(1, 4))
    doc: dict[str, Any] = {
        "version": 1,
        "watchlists": {"stolen": {"field": "plate", "values": ["沪A12345"]}},
        "calendars": {"holidays": ["2026-10-01"]},
        "rules": [draw(valid_rule(f"r{i}")) for i in range(n)],
    }
    fault = _faults(draw, doc) if draw(st.booleans()) else None
    return yaml.safe_dump(doc, allow_unicode=True, sort_keys=False), fault
