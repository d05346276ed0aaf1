"""The incident lifecycle: one explicit transition table with guards (pure; no I/O).

    new -> triaged -> dispatched -> en_route -> on_scene -> disposed -> closed (with feedback)

plus diverted (to a department), merged (into another incident), cancelled and reopened. Every change of stage goes
through `advance()`, which checks the table and the step's guard and names the allowed actions when it refuses. The
state diagram in docs/dispatch.md is generated from `TRANSITIONS` (`python -m safecity.dispatch.lifecycle`), and a
test checks that the page and the table agree.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum

from safecity.kernel.errors import SafeCityError


class Stage(StrEnum):
    """Where an incident is in its life."""

    NEW = "new"
    TRIAGED = "triaged"
    DISPATCHED = "dispatched"
    EN_ROUTE = "en_route"
    ON_SCENE = "on_scene"
    DISPOSED = "disposed"
    CLOSED = "closed"
    DIVERTED = "diverted"
    MERGED = "merged"
    CANCELLED = "cancelled"
    REOPENED = "reopened"


class Action(StrEnum):
    """What an actor (operator, dispatcher, unit, department, the system) does to an incident."""

    TRIAGE = "triage"
    DISPATCH = "dispatch"
    REASSIGN = "reassign"
    RECALL = "recall"
    DEPART = "depart"
    ARRIVE = "arrive"
    DISPOSE = "dispose"
    CLOSE = "close"
    DIVERT = "divert"
    MERGE = "merge"
    CANCEL = "cancel"
    REOPEN = "reopen"


# Stages in which the incident is still being handled (a duplicate may be merged into it, timers run).
OPEN_STAGES = frozenset(
    {Stage.NEW, Stage.TRIAGED, Stage.DISPATCHED, Stage.EN_ROUTE, Stage.ON_SCENE, Stage.REOPENED, Stage.DIVERTED}
)
# Stages a responder is committed in (the unit is not available for another incident).
ASSIGNED_STAGES = frozenset({Stage.DISPATCHED, Stage.EN_ROUTE, Stage.ON_SCENE})


@dataclass(frozen=True, slots=True)
class Step:
    """What comes with an action: who, and the facts its guard needs (all optional; the guard says which)."""

    actor: str
    unit_id: str | None = None
    reason: str | None = None
    disposition: str | None = None
    feedback: str | None = None
    service_code: str | None = None
    merged_into: str | None = None
    incident_id: str | None = None


Guard = Callable[[Step], str | None]


def _needs(*fields: str) -> Guard:
    """A guard that refuses a step lacking any of `fields` (None or blank)."""

    def guard(step: Step) -> str | None:
        missing = [f for f in fields if not (getattr(step, f) or "").strip()]
        return f"{' and '.join(missing)} required" if missing else None

    guard.__doc__ = f"needs {', '.join(fields)}"
    return guard


def _merge_target(step: Step) -> str | None:
    missing = _needs("merged_into")(step)
    if missing:
        return missing
    if step.merged_into == step.incident_id:
        return "an incident cannot be merged into itself"
    return None


_merge_target.__doc__ = "needs merged_into, another incident"


@dataclass(frozen=True, slots=True)
class Transition:
    """One row of the table: `action` moves an incident from any of `sources` to `target` when `guard` passes."""

    action: Action
    sources: frozenset[Stage]
    target: Stage
    guard: Guard | None
    summary: str

    def refusal(self, step: Step) -> str | None:
        """Why this step may not take this transition, or None."""
        return self.guard(step) if self.guard is not None else None


def _row(action: Action, sources: Iterable[Stage], target: Stage, guard: Guard | None, summary: str) -> Transition:
    return Transition(action, frozenset(sources), target, guard, summary)


_S = Stage
_PRE_DISPATCH = (_S.NEW, _S.TRIAGED, _S.REOPENED)
_UNDER_WAY = (_S.DISPATCHED, _S.EN_ROUTE)

TRANSITIONS: tuple[Transition, ...] = (
    _row(Action.TRIAGE, (_S.NEW, _S.REOPENED), _S.TRIAGED, None, "type and priority confirmed"),
    _row(Action.DISPATCH, _PRE_DISPATCH, _S.DISPATCHED, _needs("unit_id"), "a responder is assigned"),
    _row(Action.REASSIGN, (*_UNDER_WAY, _S.ON_SCENE), _S.DISPATCHED, _needs("unit_id", "reason"), "another responder"),
    _row(Action.RECALL, _UNDER_WAY, _S.TRIAGED, _needs("reason"), "its responder was taken for a more urgent one"),
    _row(Action.DEPART, (_S.DISPATCHED,), _S.EN_ROUTE, None, "the responder is on the way"),
    _row(Action.ARRIVE, _UNDER_WAY, _S.ON_SCENE, None, "the responder is on scene"),
    _row(Action.DISPOSE, (_S.ON_SCENE,), _S.DISPOSED, _needs("disposition"), "handled on scene"),
    _row(Action.CLOSE, (_S.DISPOSED, _S.DIVERTED), _S.CLOSED, _needs("feedback"), "feedback recorded"),
    _row(Action.DIVERT, _PRE_DISPATCH, _S.DIVERTED, _needs("service_code"), "sent to the owning department"),
    _row(Action.MERGE, (*_PRE_DISPATCH, *_UNDER_WAY), _S.MERGED, _merge_target, "a duplicate of another incident"),
    _row(Action.CANCEL, (*_PRE_DISPATCH, *_UNDER_WAY, _S.DIVERTED), _S.CANCELLED, _needs("reason"), "not needed"),
    _row(Action.REOPEN, (_S.DISPOSED, _S.CLOSED, _S.CANCELLED), _S.REOPENED, _needs("reason"), "handled again"),
)

_BY_ACTION: dict[Action, Transition] = {t.action: t for t in TRANSITIONS}


class InvalidTransition(SafeCityError):
    """The action is not allowed from the incident's current stage."""

    code = "dispatch.invalid_transition"
    status = 409
    title_en = "Action not allowed now"
    title_zh = "当前状态不允许此操作"
    message_en = "An incident in stage {stage} cannot {action}; allowed now: {allowed}."
    message_zh = "处于 {stage} 状态的事件不能执行 {action}；当前可执行：{allowed}。"

    def __init__(self, *, stage: Stage, action: Action) -> None:
        allowed_now = [a.value for a in allowed(stage)]
        super().__init__(stage=stage.value, action=action.value, allowed=", ".join(allowed_now) or "none")
        self.extensions = {"stage": stage.value, "action": action.value, "allowed": allowed_now}


class StepIncomplete(SafeCityError):
    """The action is allowed, but the step lacks what its guard needs."""

    code = "dispatch.step_incomplete"
    status = 422
    title_en = "Step incomplete"
    title_zh = "操作信息不完整"
    message_en = "{action}: {why}."
    message_zh = "{action}：{why}。"

    def __init__(self, *, action: Action, why: str) -> None:
        super().__init__(action=action.value, why=why)
        self.extensions = {"action": action.value, "why": why}


def allowed(stage: Stage) -> list[Action]:
    """Actions the table allows from `stage`, in table order."""
    return [t.action for t in TRANSITIONS if stage in t.sources]


def advance(stage: Stage, action: Action, step: Step) -> Stage:
    """Return the stage `action` leads to from `stage`, or raise why it may not be taken."""
    transition = _BY_ACTION[action]
    if stage not in transition.sources:
        raise InvalidTransition(stage=stage, action=action)
    why = transition.refusal(step)
    if why is not None:
        raise StepIncomplete(action=action, why=why)
    return transition.target


def mermaid() -> str:
    """The lifecycle as a Mermaid state diagram, generated from `TRANSITIONS` (one edge per source and action)."""
    lines = ["stateDiagram-v2", f"    [*] --> {Stage.NEW.value}"]
    for transition in TRANSITIONS:
        for source in sorted(transition.sources, key=list(Stage).index):
            lines.append(f"    {source.value} --> {transition.target.value}: {transition.action.value}")
    lines.append(f"    {Stage.CLOSED.value} --> [*]")
    lines.append(f"    {Stage.MERGED.value} --> [*]")
    lines.append(f"    {Stage.CANCELLED.value} --> [*]")
    return "\n".join(lines)


def table_markdown() -> str:
    """The transition table as Markdown (action, from, to, guard, meaning), generated from `TRANSITIONS`."""
    rows = ["| action | from | to | needs | meaning |", "|---|---|---|---|---|"]
    for t in TRANSITIONS:
        sources = ", ".join(s.value for s in sorted(t.sources, key=list(Stage).index))
        needs = (t.guard.__doc__ or "").removeprefix("needs ") if t.guard is not None else ""
        rows.append(f"| `{t.action.value}` | {sources} | {t.target.value} | {needs} | {t.summary} |")
    return "\n".join(rows)


if __name__ == "__main__":  # pragma: no cover - prints the generated part of docs/dispatch.md
    sys.stdout.write("```mermaid\n" + mermaid() + "\n```\n\n" + table_markdown() + "\n")
