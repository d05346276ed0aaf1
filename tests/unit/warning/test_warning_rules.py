"""Rule packs: validation with line numbers, CLI check, shipped packs, docs cover every kind."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from safecity.sensing.pseudonym import Pseudonymizer
from safecity.warning.commands import rules_app
from safecity.warning.rules import (
    RULE_KINDS,
    RuleError,
    builtin_pack_path,
    load_builtin,
    parse_duration,
    parse_pack,
)

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
