"""Triage table and signed task links."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from safecity.dispatch.incident import IncidentDraft
from safecity.dispatch.links import BadLink, _mac, issue, verify
from safecity.dispatch.triage import triage
from safecity.kernel.dispatch_settings import Route, TriageSettings, TypeRule, incident_type_of

KEY = b"k" * 32
NOW = datetime(2026, 12, 3, 8, tzinfo=UTC)


def test_the_table_routes_types_and_an_unknown_type_stays_a_police_matter() -> None:
    settings = TriageSettings()
    leak = triage("water_leak", settings)
    assert (leak.route, leak.department, leak.service_code) == (Route.DEPARTMENT, "water", "water.leak")
    fire = triage("fire", settings, priority=2)
    assert fire.route is Route.POLICE and fire.priority == 2 and fire.needs == {"fire"}
    unknown = triage("meteor", settings)
    assert (unknown.route, unknown.priority, unknown.known_type) == (Route.POLICE, 3, False)


def test_a_department_route_without_a_service_code_is_refused() -> None:
    with pytest.raises(ValidationError, match="needs department and service_code"):
        TypeRule(route=Route.DEPARTMENT, department="water")


def test_a_link_allows_its_actions_until_it_expires() -> None:
    token = issue(
        KEY, incident_id="INC-1", responder_id="g-7", actions=("accept", "arrive"), now=NOW, ttl=timedelta(hours=1)
    )
    claims = verify(KEY, token, action="arrive", now=NOW + timedelta(minutes=59))
    assert (claims.incident_id, claims.responder_id) == ("INC-1", "g-7")
    for action, at, why in [
        ("report", NOW, "wrong_action"),
        ("accept", NOW + timedelta(hours=1), "expired"),
    ]:
        with pytest.raises(BadLink) as caught:
            verify(KEY, token, action=action, now=at)
        assert caught.value.extensions["why"] == why and caught.value.status == 403
    with pytest.raises(BadLink, match="forged"):
        verify(b"x" * 32, token, action="accept", now=NOW)


@given(st.integers(0, 200), st.characters(exclude_characters="."))
def test_any_edit_of_a_token_is_refused(position: int, char: str) -> None:
    token = issue(KEY, incident_id="INC-1", responder_id="g-7", actions=("accept",), now=NOW, ttl=timedelta(hours=1))
    i = position % len(token)
    edited = token[:i] + char + token[i + 1 :]
    if edited == token:
        return
    with pytest.raises(BadLink):
        verify(KEY, edited, action="accept", now=NOW)


def test_a_token_signed_with_the_key_but_holding_garbage_is_malformed() -> None:
    body = "bm90IGpzb24"  # base64url of "not json"
    with pytest.raises(BadLink, match="malformed"):
        verify(KEY, f"{body}.{_mac(KEY, body)}", action="accept", now=NOW)


def test_an_alert_opens_the_type_its_rule_maps_to_else_a_valid_type_word() -> None:
    table = {"fire.": "fire", "fire.gas_": "gas_leak", "flood.river": "flood"}
    assert incident_type_of("fire.smoke_alarm", table) == "fire"
    assert incident_type_of("fire.gas_kitchen", table) == "gas_leak"  # the longest prefix
    assert incident_type_of("flood.river", table) == "flood"
    assert incident_type_of("Crowd.Density-High", table) == "crowd_density_high"
    assert incident_type_of("9.水位", table) == "alert"
    for rule_id in ("Crowd.Density-High", "9.水位", "x" * 100):
        # Whatever the rule id, the draft the alert opens is valid (it was a 500 for ids with dots or capitals).
        IncidentDraft(type=incident_type_of(rule_id, table), community="c-1")
