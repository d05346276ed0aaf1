"""The incident lifecycle table: guards, refusals, reachability, and the generated diagram in docs/dispatch.md."""

from __future__ import annotations

import re
from collections import deque
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from safecity.dispatch.lifecycle import (
    OPEN_STAGES,
    TRANSITIONS,
    Action,
    InvalidTransition,
    Stage,
    Step,
    StepIncomplete,
    advance,
    allowed,
    mermaid,
    table_markdown,
)

DOCS = Path(__file__).resolve().parents[3] / "docs" / "dispatch.md"
FULL = Step(
    actor="op-1",
    unit_id="car-7",
    reason="test",
    disposition="fire out",
    feedback="reporter confirmed",
    service_code="water.leak",
    merged_into="INC-2",
    incident_id="INC-1",
)


def test_the_happy_path_walks_every_stage_of_the_loop() -> None:
    stage = Stage.NEW
    path = [Action.TRIAGE, Action.DISPATCH, Action.DEPART, Action.ARRIVE, Action.DISPOSE, Action.CLOSE]
    seen = [stage]
    for action in path:
        stage = advance(stage, action, FULL)
        seen.append(stage)
    assert seen == [
        Stage.NEW,
        Stage.TRIAGED,
        Stage.DISPATCHED,
        Stage.EN_ROUTE,
        Stage.ON_SCENE,
        Stage.DISPOSED,
        Stage.CLOSED,
    ]


def test_a_refused_action_names_what_is_allowed_now() -> None:
    with pytest.raises(InvalidTransition) as caught:
        advance(Stage.NEW, Action.ARRIVE, FULL)
    err = caught.value
    assert err.status == 409
    assert err.code == "dispatch.invalid_transition"
    assert err.extensions["allowed"] == ["triage", "dispatch", "divert", "merge", "cancel"]
    assert "triage" in err.render("en") and "triage" in err.render("zh-CN")


@pytest.mark.parametrize(
    ("stage", "action", "step", "why"),
    [
        (Stage.NEW, Action.DISPATCH, Step(actor="a"), "unit_id required"),
        (Stage.DISPATCHED, Action.REASSIGN, Step(actor="a", unit_id="u"), "reason required"),
        (Stage.ON_SCENE, Action.DISPOSE, Step(actor="a", disposition="  "), "disposition required"),
        (Stage.DISPOSED, Action.CLOSE, Step(actor="a"), "feedback required"),
        (Stage.NEW, Action.DIVERT, Step(actor="a"), "service_code required"),
        (Stage.NEW, Action.MERGE, Step(actor="a", incident_id="X", merged_into="X"), "merged into itself"),
        (Stage.CLOSED, Action.REOPEN, Step(actor="a"), "reason required"),
    ],
)
def test_guards_refuse_a_step_that_lacks_what_the_action_needs(
    stage: Stage, action: Action, step: Step, why: str
) -> None:
    with pytest.raises(StepIncomplete) as caught:
        advance(stage, action, step)
    assert caught.value.status == 422
    assert why in caught.value.extensions["why"]


def test_every_stage_is_reachable_from_new_and_only_merged_is_final() -> None:
    reachable = {Stage.NEW}
    queue = deque([Stage.NEW])
    while queue:
        stage = queue.popleft()
        for action in allowed(stage):
            target = advance(stage, action, FULL)
            if target not in reachable:
                reachable.add(target)
                queue.append(target)
    assert reachable == set(Stage)
    assert [s for s in Stage if not allowed(s)] == [Stage.MERGED]
    # Open stages are those from which the loop can still end in closed or cancelled.
    assert all(Action.CANCEL in allowed(s) or Action.DISPOSE in allowed(s) for s in OPEN_STAGES)


@given(st.lists(st.sampled_from(list(Action)), max_size=40))
def test_any_action_sequence_follows_the_table(actions: list[Action]) -> None:
    stage = Stage.NEW
    for action in actions:
        rows = [t for t in TRANSITIONS if t.action is action]
        assert len(rows) == 1
        if stage in rows[0].sources:
            stage_after = advance(stage, action, FULL)
            assert stage_after is rows[0].target
            stage = stage_after
        else:
            with pytest.raises(InvalidTransition):
                advance(stage, action, FULL)


def test_the_diagram_has_one_edge_per_source_and_action() -> None:
    edges = re.findall(r"^ {4}(\w+) --> (\w+): (\w+)$", mermaid(), flags=re.M)
    expected = {(s.value, t.target.value, t.action.value) for t in TRANSITIONS for s in t.sources}
    assert set(edges) == expected
    assert len(edges) == len(expected)


def test_docs_dispatch_md_shows_the_generated_diagram_and_table() -> None:
    text = DOCS.read_text(encoding="utf-8")
    block = re.search(r"<!-- generated:lifecycle -->\n(.*)\n<!-- /generated:lifecycle -->", text, flags=re.S)
    assert block is not None, "docs/dispatch.md lacks the generated lifecycle block"
    expected = "```mermaid\n" + mermaid() + "\n```\n\n" + table_markdown()
    assert block.group(1) == expected, "regenerate: python -m safecity.dispatch.lifecycle"
