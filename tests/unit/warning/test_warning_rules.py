"""Rule packs: validation with line numbers, CLI check, shipped packs, docs cover every kind."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from safecity.sensing.pseudonym import Pseudonymizer
from safecity.warning.commands import rules_app
from safecity.warning.rules import (
    RuleError,
    builtin_pack_path,
    kind_keys,
    load_builtin,
    parse_duration,
    parse_pack,
)

RULE_KINDS = kind_keys()
DOCS = Path(__file__).resolve().parents[3] / "docs" / "rules.md"
KEY = Pseudonymizer(b"unit-test-pseudonym-key!")


def issues(text: str) -> list[tuple[int | None, str]]:
    with pytest.raises(RuleError) as info:
        parse_pack(text, "rules.yaml", pseudonymize=KEY)
    return info.value.issues


GOOD = """rules:
  - id: ok
    kind: threshold
    title: {zh: 好, en: ok}
    events: [smoke]
"""


def test_a_good_pack_loads() -> None:
    assert [r.id for r in parse_pack(GOOD).rules] == ["ok"]


def test_yaml_syntax_error_has_its_line() -> None:
    (found,) = issues(GOOD + "  - id: [oops\n")
    assert found[0] == 7 and "YAML syntax error" in found[1]


def test_unknown_field_has_its_line() -> None:
    text = GOOD + "    severty: Severe\n"
    (found,) = issues(text)
    assert found == (6, "severty: unknown field 'severty'")


def test_unbounded_window_is_refused_with_its_line() -> None:
    text = """rules:
  - id: pair
    kind: correlation
    title: {zh: 对, en: pair}
    require: [{events: [smoke]}]
    within: 48h
"""
    (found,) = issues(text)
    assert found[0] == 6 and "windows must be bounded" in found[1]
    missing = text.replace("    within: 48h\n", "")
    (found,) = issues(missing)
    assert found[0] == 2 and "within" in found[1]
    repeat = GOOD + "    count: 3\n"
    (found,) = issues(repeat)
    assert "windows must be bounded" in found[1]


def test_cel_errors_unknown_kind_and_references() -> None:
    (found,) = issues(GOOD + "    when: value >\n")
    assert found[0] == 6 and "CEL syntax error" in found[1]
    (found,) = issues(GOOD + "    when: temperature > 1.0\n")
    assert "unknown names ['temperature']" in found[1]
    (found,) = issues(GOOD.replace("threshold", "magic"))
    assert found[0] == 3 and "unknown rule kind" in found[1]
    (found,) = issues(GOOD + "    suppressed_by: [nope]\n")
    assert found[0] == 6 and "unknown rule 'nope'" in found[1]
    (found,) = issues(GOOD + GOOD.removeprefix("rules:\n"))
    assert found[0] == 6 and "duplicate rule id" in found[1]


def test_durations() -> None:
    assert parse_duration("60s") == 60 and parse_duration("5m") == 300 and parse_duration("500ms") == 0.5
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration("5 minutes")


def test_cli_check_prints_line_numbered_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(GOOD + "    within: forever\n", encoding="utf-8")
    result = CliRunner().invoke(rules_app, ["check", str(bad)])
    assert result.exit_code == 1
    assert f"{bad}:6: within: invalid duration" in result.output
    good = tmp_path / "good.yaml"
    good.write_text(GOOD, encoding="utf-8")
    result = CliRunner().invoke(rules_app, ["check", str(good)])
    assert result.exit_code == 0 and "ok, 1 rules" in result.output


@pytest.mark.parametrize("name", ["default", "nodered_peer"])
def test_shipped_packs_load(name: str) -> None:
    pack = load_builtin(name, pseudonymize=KEY)
    assert len(pack.rules) >= 2
    result = CliRunner().invoke(rules_app, ["check", str(builtin_pack_path(name))])
    assert result.exit_code == 0, result.output


def test_default_pack_covers_the_demo_scenarios() -> None:
    ids = {r.id for r in load_builtin("default", pseudonymize=KEY).rules}
    assert {
        "fire.smoke_pair",
        "security.night_intrusion",
        "traffic.fire_lane_parking",
        "security.hotlist_vehicle",
        "safety.crowd_surge",
        "infra.device_offline",
    } <= ids


def test_docs_list_every_kind_and_every_example_passes_check() -> None:
    text = DOCS.read_text(encoding="utf-8")
    for kind in RULE_KINDS:
        assert f"### {kind}" in text, f"docs/rules.md does not document rule kind {kind!r}"
    examples = re.findall(r"```yaml\n(.*?)```", text, flags=re.S)
    assert len(examples) >= len(RULE_KINDS)
    documented: set[str] = set()
    for example in examples:
        pack = parse_pack(example, "docs/rules.md", pseudonymize=KEY)
        documented |= {r.kind for r in pack.rules}
    assert documented == set(RULE_KINDS)


HOTLIST = """watchlists:
  stolen: {field: plate, values: [沪A12345]}
rules:
  - id: hot
    kind: hotlist
    title: {zh: 布控, en: hotlist}
    watchlist: stolen
"""


@pytest.mark.parametrize(
    ("kind", "body"),
    [
        ("threshold", "    events: [smoke]\n"),
        (
            "geofence",
            "    events: [parking]\n    trigger: enter\n    zone: {name: z, polygon: [[0, 0], [1, 0], [1, 1]]}\n",
        ),
        ("hotlist", "    watchlist: stolen\n"),
        ("trend", "    events: [crowd]\n    rise_pct: 50\n    over: 10m\n"),
    ],
)
def test_every_rule_kind_checks_its_condition(kind: str, body: str) -> None:
    text = (
        "watchlists: {stolen: {values: [沪A12345]}}\nrules:\n  - id: r\n    title: {zh: r, en: r}\n"
        f"    kind: {kind}\n{body}    when: bogus_name > 1.0 &&\n"
    )
    (found,) = issues(text)
    assert found == (text.count("\n"), "when: CEL syntax error at column 20: the condition ends too early")
    (found,) = issues(text.replace(" &&", ""))
    assert "unknown names ['bogus_name']" in found[1]


def test_unknown_event_names_are_refused_with_a_suggestion() -> None:
    (found,) = issues(GOOD.replace("[smoke]", "[dor]"))
    assert found[0] == 5 and "unknown event 'dor' (did you mean 'door'?)" in found[1]
    nested = """rules:
  - id: gone
    kind: absence
    title: {zh: 缺, en: gone}
    within: 5m
    expect: {events: [heartbeat, device.ofline]}
"""
    (found,) = issues(nested)
    assert found[0] == 6 and "expect.events: unknown event 'device.ofline'" in found[1]
    assert parse_pack(nested.replace("device.ofline", "device.offline")).rules


def test_watch_list_problems_are_refused() -> None:
    assert parse_pack(HOTLIST, pseudonymize=KEY).rules
    (found,) = issues(HOTLIST.replace("watchlist: stolen", "watchlist: stolen_cars"))
    assert found[0] == 7 and "unknown watch list 'stolen_cars' (stolen)" in found[1]
    (found,) = issues(HOTLIST + "    field: vin\n")
    assert found[0] == 8 and "holds 'plate' pseudonyms: it could never match" in found[1]
    (found,) = issues(HOTLIST.replace("{field: plate, values: [沪A12345]}", "{field: plate}"))
    assert found[0] == 2 and "watch list 'stolen' is empty" in found[1]


@pytest.mark.parametrize(
    ("schedule", "message"),
    [
        ('{from: "22:00", to: "6:00"}', "schedule.to: '6:00' is not a time of day: write \"HH:MM\""),
        ('{from: "22:00", to: 6:00}', 'schedule.to: 360 is not a time of day: quote it, e.g. "06:00"'),
        ('{from: "22:00", to: "06:00+08:00"}', "schedule.to: '06:00+08:00' is not a time of day"),
        ('{from: "24:00"}', "schedule.from: '24:00' is not a time of day"),
        ('{from: "07:00", to: "07:00"}', "schedule: `from` and `to` are the same time"),
        ("{days: []}", "schedule.days: an empty list matches nothing"),
    ],
)
def test_schedule_times_get_a_clear_message(schedule: str, message: str) -> None:
    (found,) = issues(GOOD + f"    schedule: {schedule}\n")
    assert found[0] == 6 and found[1].startswith(message), found


def test_zones_and_scopes_that_match_nothing_are_refused() -> None:
    zone = """rules:
  - id: lane
    kind: geofence
    title: {zh: 道, en: lane}
    events: [parking]
    trigger: enter
    zone:
      name: bow tie
      polygon: [[121.24, 31.37], [121.25, 31.38], [121.25, 31.37], [121.24, 31.38]]
"""
    (found,) = issues(zone)
    assert found[0] == 9 and "the zone is not a simple polygon (Self-intersection" in found[1]
    (found,) = issues(GOOD + "    scope: {towns: []}\n")
    assert found[0] == 6 and "scope.towns: an empty list matches nothing" in found[1]
    (found,) = issues(GOOD + "    suppressed_by: [ok]\n")
    assert "suppressed_by names the rule itself" in found[1]
