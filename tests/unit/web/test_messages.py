"""The command centre's message catalogues: one per language, the same keys in both, every key the code uses
present, and a message for every value of the enums the page shows (stages, actions, states, roles...)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from safecity.dispatch.lifecycle import Action, Stage
from safecity.dispatch.recommend import ResponderKind, ResponderStatus
from safecity.kernel.dispatch_settings import INTERVALS, DispatchSettings
from safecity.sharing.principal import Role
from safecity.warning.model import AlertState, Severity
from safecity.web.build import FRONTEND

SRC = FRONTEND / "src"
CATALOGUES = {p.stem: json.loads(p.read_text(encoding="utf-8")) for p in (SRC / "messages").glob("*.json")}
CJK = re.compile(r"[\u3400-\u9fff]")


def _code() -> str:
    return "\n".join(p.read_text(encoding="utf-8") for p in SRC.rglob("*.js"))


def test_there_are_two_catalogues_with_the_same_keys() -> None:
    assert set(CATALOGUES) == {"zh-CN", "en"}
    zh, en = CATALOGUES["zh-CN"], CATALOGUES["en"]
    assert sorted(set(zh) - set(en)) == [], "keys missing in en.json"
    assert sorted(set(en) - set(zh)) == [], "keys missing in zh-CN.json"


@pytest.mark.parametrize("lang", ["zh-CN", "en"])
def test_every_message_is_filled_and_keeps_its_placeholders(lang: str) -> None:
    other = CATALOGUES["en" if lang == "zh-CN" else "zh-CN"]
    for key, text in CATALOGUES[lang].items():
        assert text.strip(), f"{lang}:{key} is empty"
        assert set(re.findall(r"\{(\w+)\}", text)) == set(re.findall(r"\{(\w+)\}", other[key])), key


def test_english_has_no_chinese_text() -> None:
    assert [k for k, v in CATALOGUES["en"].items() if CJK.search(v)] == []


def test_every_literal_key_used_in_the_code_exists() -> None:
    used = set(re.findall(r"""\bt\(\s*["']([\w./-]+)["']""", _code()))
    assert used, "no t('...') calls found: has the code changed shape?"
    assert sorted(used - set(CATALOGUES["en"])) == []


def test_every_dynamic_key_prefix_is_covered_for_the_values_the_server_sends() -> None:
    prefixes = set(re.findall(r"""\bt\(\s*`([\w.]+)\.\$\{""", _code()))
    values: dict[str, list[str]] = {
        "stage": [s.value for s in Stage],
        "action": [a.value for a in Action] + ["open"],
        "alert_state": [s.value for s in AlertState],
        "severity": [s.value for s in Severity],
        "responder_status": [s.value for s in ResponderStatus],
        "responder_kind": [k.value for k in ResponderKind],
        "role": [r.value for r in Role],
        "interval": list(INTERVALS),
        "type": list(DispatchSettings().triage.types),
        "origin": ["call", "report", "alert", "replay"],
        "open311": ["open", "closed"],
        "live": ["connecting", "live", "reconnecting"],
        "tab": ["alerts", "incidents", "responders", "kpis"],
        "layers": ["incidents", "alerts", "responders", "devices", "conditions", "heat", "isochrone"],
        "timeline": [
            "perceived_at",
            "warned_at",
            "opened_at",
            "triaged_at",
            "dispatched_at",
            "en_route_at",
            "on_scene_at",
            "disposed_at",
            "closed_at",
        ],
    }
    # Prefixes whose values are looked up with a fallback in the code (zone names, HTTP statuses, alert actions).
    with_fallback = {"zone", "error", "alerts"}
    assert prefixes - with_fallback <= set(values), f"prefix without a value list here: {prefixes - set(values)}"
    missing = [f"{p}.{v}" for p in prefixes - with_fallback for v in values[p] if f"{p}.{v}" not in CATALOGUES["en"]]
    assert missing == []


def test_the_page_takes_no_text_from_outside_the_catalogues() -> None:
    # Chinese text in code would bypass the English catalogue (language names in their own script are the exception).
    for path in SRC.rglob("*.js"):
        lines = [
            line
            for line in path.read_text(encoding="utf-8").splitlines()
            if CJK.search(line) and "中文" not in line and "localIdeographFontFamily" not in line
        ]
        assert lines == [], f"{Path(path).name}: {lines}"
