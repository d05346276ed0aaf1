"""What comes into and goes out of the dispatch slice: a new incident (call, report, alert), a step, an incident's
record, and the coded errors of its use cases (validation only; no I/O)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from safecity.dispatch.dedupe import MergeProposal
from safecity.dispatch.lifecycle import Action, Stage, Step, allowed
from safecity.dispatch.recommend import ResponderKind, ResponderStatus
from safecity.kernel.dispatch_settings import Route
from safecity.kernel.errors import Conflict, InvalidInput, NotFound, ServiceUnavailable

TYPE_PATTERN = r"^[a-z][a-z0-9_]{0,63}$"
TEXT_PATTERN = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f]*$"  # printable (tabs and newlines allowed)
_PHONE = re.compile(r"^\+?[0-9][0-9 -]{2,30}$")

Origin = Literal["call", "report", "alert", "replay"]


class EvidenceRef(BaseModel):
    """Something a step points at: an event, an alert, a media file, another incident, a note, or a message sent
    through a delivery channel (its outbox row)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["event", "alert", "media", "incident", "note", "delivery"]
    ref: str = Field(min_length=1, max_length=512, pattern=TEXT_PATTERN)


class IncidentDraft(BaseModel):
    """A new incident from an operator (a call), a patrol or community report, or an alert.

    The caller's number is pseudonymized on the way in (a keyed HMAC, like plates); the clear number is never kept.
    """

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    type: str = Field(pattern=TYPE_PATTERN, description="Incident type (docs/dispatch.md, triage table).")
    origin: Origin = "call"
    priority: int | None = Field(None, ge=1, le=9, description="1 = most urgent; none: the triage table's.")
    summary: str = Field("", max_length=2000, pattern=TEXT_PATTERN, description="Free text.")
    lon: float | None = Field(None, ge=-180, le=180)
    lat: float | None = Field(None, ge=-90, le=90)
    address: str | None = Field(None, min_length=1, max_length=256, pattern=TEXT_PATTERN)
    community: str | None = Field(None, max_length=64, description="Reporting community (when no point).")
    building: str | None = Field(None, max_length=64, description="Building, when the report names it.")
    caller: str | None = Field(None, max_length=32, description="Caller's number; kept only as a pseudonym.")
    alert_id: str | None = Field(None, max_length=26)
    perceived_at: datetime | None = None
    warned_at: datetime | None = None
    evidence: list[EvidenceRef] = Field(default_factory=list, max_length=100)

    @model_validator(mode="after")
    def _checks(self) -> IncidentDraft:
        if (self.lon is None) != (self.lat is None):
            raise ValueError("lon and lat must be given together")
        if self.lon is None and not self.address and not self.community:
            raise ValueError("an incident needs a point (lon, lat), an address or a community")
        if self.caller is not None and not _PHONE.match(self.caller):
            raise ValueError("caller must be a phone number (digits, spaces, dashes, optional leading +)")
        return self


class Position(BaseModel):
    """A responder's position fix."""

    model_config = ConfigDict(extra="forbid")

    lon: float = Field(ge=-180, le=180)
    lat: float = Field(ge=-90, le=90)
    heading: float | None = Field(None, ge=0, lt=360)
    fix_at: datetime | None = Field(None, description="When the fix was taken (default: now).")


class StepIn(BaseModel):
    """One action on an incident, as an operator, a unit or a department sends it."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    action: Action
    unit_id: str | None = Field(None, max_length=64)
    reason: str | None = Field(None, max_length=500, pattern=TEXT_PATTERN)
    disposition: str | None = Field(None, max_length=500, pattern=TEXT_PATTERN)
    feedback: str | None = Field(None, max_length=2000, pattern=TEXT_PATTERN)
    service_code: str | None = Field(None, max_length=64)
    merged_into: str | None = Field(None, max_length=26)
    note: str | None = Field(None, max_length=2000, pattern=TEXT_PATTERN)
    evidence: list[EvidenceRef] = Field(default_factory=list, max_length=100)
    preempt: bool = Field(False, description="Take the unit from the less urgent incident it is committed to.")
    expected_version: int | None = Field(None, ge=0, description="Refuse (409) when the incident moved meanwhile.")

    def step(self, actor: str, incident_id: str) -> Step:
        """The lifecycle's view of this action."""
        return Step(
            actor=actor,
            unit_id=self.unit_id,
            reason=self.reason,
            disposition=self.disposition,
            feedback=self.feedback,
            service_code=self.service_code,
            merged_into=self.merged_into,
            incident_id=incident_id,
        )


class Incident(BaseModel):
    """An incident's record as the API shows it (stage times, place tags, the responder on it now)."""

    model_config = ConfigDict(frozen=True)

    id: str
    type: str
    priority: int
    stage: Stage
    route: Route
    origin: str
    summary: str
    lon: float | None
    lat: float | None
    address: str | None
    district: str | None
    town: str | None
    community: str | None
    building: str | None
    caller: str | None = Field(description="The caller's pseudonym (keyed HMAC), never the number.")
    department: str | None
    service_code: str | None
    merged_into: str | None
    alert_id: str | None
    unit_id: str | None = Field(description="The responder assigned last (none before dispatch or after a recall).")
    perceived_at: datetime | None
    warned_at: datetime | None
    opened_at: datetime
    triaged_at: datetime | None
    dispatched_at: datetime | None
    en_route_at: datetime | None
    on_scene_at: datetime | None
    disposed_at: datetime | None
    closed_at: datetime | None
    updated_at: datetime
    version: int
    allowed: list[Action] = Field(default_factory=list, description="Actions the lifecycle allows now.")

    @classmethod
    def of(cls, row: dict[str, Any]) -> Incident:
        """From a store row."""
        return cls(**{k: v for k, v in row.items() if k in cls.model_fields}, allowed=allowed(Stage(row["stage"])))


class StepRecord(BaseModel):
    """One step of an incident's history."""

    model_config = ConfigDict(frozen=True)

    id: str
    action: str
    from_stage: Stage | None
    to_stage: Stage
    actor: str
    at: datetime
    unit_id: str | None
    note: str | None
    evidence: list[EvidenceRef]


@dataclass(frozen=True, slots=True)
class Opened:
    """A new incident and the open incidents it may duplicate (merged already when its type merges automatically)."""

    incident: Incident
    proposals: list[MergeProposal]


@dataclass(frozen=True, slots=True)
class Responder:
    """A responder's registry row and live state."""

    id: str
    kind: ResponderKind
    name: str
    unit_type: str
    station: str | None
    department: str | None
    service_codes: list[str]
    capabilities: list[str]
    town: str | None
    community: str | None
    shift: list[dict[str, Any]] | None
    status: ResponderStatus
    incident_id: str | None
    lon: float | None
    lat: float | None
    heading: float | None
    fix_at: datetime | None
    updated_at: datetime
    contact: str | None = None  # notify subscription receiving its task messages

    @classmethod
    def of(cls, row: dict[str, Any]) -> Responder:
        """From a store row."""
        fields = {k: row[k] for k in cls.__dataclass_fields__}
        return cls(**{**fields, "kind": ResponderKind(row["kind"]), "status": ResponderStatus(row["status"])})


class IncidentNotFound(NotFound):
    """No incident with that id."""

    code = "dispatch.incident_not_found"

    def __init__(self, incident_id: str) -> None:
        super().__init__(what="incident", id=incident_id)


class ResponderNotFound(NotFound):
    """No responder with that id."""

    code = "dispatch.responder_not_found"
    message_en = "Responder {id} is not registered; import it first (POST /api/v1/responders/import)."
    message_zh = "未登记处置力量 {id}，请先导入（POST /api/v1/responders/import）。"

    def __init__(self, responder_id: str) -> None:
        super().__init__(id=responder_id)


class ResponderExists(Conflict):
    """A responder with that id is already registered."""

    code = "dispatch.responder_exists"

    def __init__(self, responder_id: str) -> None:
        super().__init__(what="responder", id=responder_id)


class ResponderBusy(Conflict):
    """The responder is committed to another incident (another dispatcher was first)."""

    code = "dispatch.responder_busy"
    title_en = "Responder already assigned"
    title_zh = "处置力量已被派出"
    message_en = "{id} is already assigned to incident {incident_id} (since {since}); choose another responder."
    message_zh = "{id} 已被派往事件 {incident_id}（自 {since}），请选择其他处置力量。"

    def __init__(self, responder_id: str, assignment: dict[str, Any] | None) -> None:
        incident_id = assignment["incident_id"] if assignment else "?"
        since = assignment["assigned_at"].isoformat() if assignment else "?"
        super().__init__(id=responder_id, incident_id=incident_id, since=since)
        self.extensions = {
            "responder_id": responder_id,
            "assignment": {
                "incident_id": incident_id,
                "assigned_at": since,
                "actor": assignment["actor"] if assignment else None,
                "eta_s": assignment["eta_s"] if assignment else None,
            },
        }


class ResponderUnavailable(Conflict):
    """The responder cannot take this incident (out of service, off duty, or on scene elsewhere)."""

    code = "dispatch.responder_unavailable"
    title_en = "Responder not available"
    title_zh = "处置力量不可用"
    message_en = "{id} cannot be sent now: {why}."
    message_zh = "{id} 当前无法派出：{why}。"

    def __init__(self, responder_id: str, why: str) -> None:
        super().__init__(id=responder_id, why=why)
        self.extensions = {"responder_id": responder_id, "why": why}


class ResponderNoContact(Conflict):
    """The responder has no subscription to receive task messages on."""

    code = "dispatch.responder_no_contact"
    title_en = "Responder cannot be reached"
    title_zh = "无法联系处置力量"
    message_en = (
        "{id} has no contact: register a notify subscription (webhook, chat group or e-mail) and set it as the "
        "responder's `contact`."
    )
    message_zh = "{id} 未设置联系方式：请先创建通知订阅（webhook、群聊或邮件），并将其设为该处置力量的 contact。"

    def __init__(self, responder_id: str) -> None:
        super().__init__(id=responder_id)
        self.extensions = {"responder_id": responder_id}


class TaskView(BaseModel):
    """What a responder's task link shows: the incident as far as the task needs, and what the link allows."""

    model_config = ConfigDict(frozen=True)

    incident_id: str
    responder_id: str
    type: str
    priority: int
    stage: Stage
    summary: str
    address: str | None
    lon: float | None
    lat: float | None
    actions: list[str] = Field(description="What the link allows: accept, arrive, report.")
    expires_at: datetime


class TasksUnavailable(ServiceUnavailable):
    """This node delivers no messages, so it cannot send tasks."""

    code = "dispatch.tasks_unavailable"
    message_en = "This node sends no task messages (its delivery service is not running)."
    message_zh = "本节点未运行消息投递服务，无法发送任务。"


@dataclass(frozen=True, slots=True)
class TaskSent:
    """A task message queued for a responder: through which subscription, as which delivery, valid until when."""

    incident_id: str
    responder_id: str
    subscription_id: str
    delivery_id: str
    actions: tuple[str, ...]
    expires_at: datetime


class IncidentMoved(Conflict):
    """The incident changed after the caller read it (another operator acted first)."""

    code = "dispatch.incident_moved"
    title_en = "Incident changed meanwhile"
    title_zh = "事件已被他人更新"
    message_en = "Incident {id} is now at version {version} (stage {stage}); reload it and try again."
    message_zh = "事件 {id} 已更新到版本 {version}（状态 {stage}），请刷新后重试。"

    def __init__(self, incident_id: str, version: int, stage: str) -> None:
        super().__init__(id=incident_id, version=version, stage=stage)
        self.extensions = {"version": version, "stage": stage}


class MergeTargetClosed(Conflict):
    """The incident to merge into is not open."""

    code = "dispatch.merge_target_closed"
    message_en = "Incident {id} is {stage}: only an open incident can take a duplicate."
    message_zh = "事件 {id} 处于 {stage} 状态，只能合并到未结束的事件。"

    def __init__(self, incident_id: str, stage: str) -> None:
        super().__init__(id=incident_id, stage=stage)


class BadPosition(InvalidInput):
    """A position report that cannot be used: off the map, far off the road network, stale or out of order."""

    code = "dispatch.bad_position"
    title_en = "Position not usable"
    title_zh = "位置无效"
    message_en = "Position of {id} not accepted: {why}."
    message_zh = "{id} 的位置未被接受：{why}。"

    def __init__(self, responder_id: str, why: str) -> None:
        super().__init__(id=responder_id, why=why)
        self.extensions = {"responder_id": responder_id, "why": why}
