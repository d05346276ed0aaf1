"""The dispatch slice's use cases: open incidents (calls, reports, alerts), move them through the lifecycle with their
side effects (assignments, responder status, diversion to a department), rank responders, take positions, run SLA
timers and report stage KPIs.

Every change is one transaction: the incident row moves only from the version it was read at, and a responder's one
active assignment is decided by the database (see `store.incidents.IncidentRepo.assign`), so two dispatchers sending
one unit at once get exactly one success and one `409 dispatch.responder_busy` naming the unit's current assignment.
Bus messages (`incident.changed`, `incident.unit_assigned`, `responder.*`) are published after the commit.
"""

from __future__ import annotations

import asyncio
import builtins
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from safecity.dispatch import links
from safecity.dispatch.dedupe import Facts, merge_proposals
from safecity.dispatch.incident import (
    BadPosition,
    EvidenceRef,
    Incident,
    IncidentDraft,
    IncidentMoved,
    IncidentNotFound,
    MergeTargetClosed,
    Opened,
    Responder,
    ResponderBusy,
    ResponderNoContact,
    ResponderNotFound,
    ResponderUnavailable,
    StepIn,
    StepRecord,
    TaskSent,
    TasksUnavailable,
    TaskView,
)
from safecity.dispatch.kpi import StageTimes, Summary, stage_kpis
from safecity.dispatch.lifecycle import OPEN_STAGES, Action, InvalidTransition, Stage, advance, allowed
from safecity.dispatch.model import (
    INCIDENT_CHANGED,
    RECOMMENDATION_CHANGED,
    RESPONDER_MOVED,
    RESPONDER_STATUS_CHANGED,
    UNIT_ASSIGNED,
    IncidentChanged,
    IncidentState,
    RankedUnit,
    RecommendationChanged,
    ResponderMoved,
    ResponderStatusChanged,
    UnitAssigned,
)
from safecity.dispatch.recommend import (
    Candidate,
    Ranked,
    ResponderKind,
    ResponderStatus,
    Travel,
    Travels,
    plainly_eligible,
    rank,
    shortlist,
)
from safecity.dispatch.replay import Call
from safecity.dispatch.responders import ResponderIn, ShiftSpan, on_duty
from safecity.dispatch.sla import Timer, start_windows, timers
from safecity.dispatch.travel import TravelSource
from safecity.dispatch.triage import triage
from safecity.geo.places import EMPTY_TAGS, PlaceTags
from safecity.geo.road.graph import box_around_m
from safecity.kernel import clock, ids
from safecity.kernel.bus import Bus, Subscription
from safecity.kernel.dispatch_settings import DispatchSettings, Route, incident_type_of
from safecity.kernel.envelope import Envelope, EventKey, Payload, make_envelope
from safecity.kernel.errors import InvalidInput, SafeCityError
from safecity.kernel.keys import subscribe
from safecity.kernel.supervisor import Supervisor
from safecity.kernel.tabular import ImportIssue, ImportMode, ImportReport
from safecity.sensing.model import EventKind, SensorEvent, Tags, event_key
from safecity.store import incidents as store
from safecity.store.engine import write_transaction
from safecity.store.incidents import IncidentRepo
from safecity.warning.model import ALERT_RAISED, AlertRaised
from safecity.warning.notify.tasks import TaskMessage

log = structlog.get_logger(__name__)

SYSTEM = "system"
_WAITING = (Stage.NEW, Stage.TRIAGED, Stage.REOPENED)  # open and waiting for a responder
SLA_LOOP = "dispatch-sla"
RERANK_LOOP = "dispatch-rerank"
# An SLA check also looks at incidents changed this long before the last check (writes in flight then).
SLA_CHECK_MARGIN = timedelta(seconds=10)
# Incidents with reported SLA breaches remembered before those no longer open are dropped.
BREACHED_PRUNE_AT = 10_000
# The stage time each action stamps (the first time only: a reassignment keeps the first dispatch time).
_STAMPS: dict[Action, str] = {
    Action.TRIAGE: "triaged_at",
    Action.DISPATCH: "dispatched_at",
    Action.DEPART: "en_route_at",
    Action.ARRIVE: "on_scene_at",
    Action.DISPOSE: "disposed_at",
    Action.CLOSE: "closed_at",
}
# What the assigned responder's status becomes.
_UNIT_STATUS: dict[Action, ResponderStatus] = {
    Action.DISPATCH: ResponderStatus.DISPATCHED,
    Action.REASSIGN: ResponderStatus.DISPATCHED,
    Action.DEPART: ResponderStatus.EN_ROUTE,
    Action.ARRIVE: ResponderStatus.ON_SCENE,
}
# Actions that end the incident's active assignments (the responders are free again), with the outcome recorded.
_RELEASES: dict[Action, str] = {
    Action.DISPOSE: "disposed",
    Action.CLOSE: "closed",
    Action.CANCEL: "cancelled",
    Action.MERGE: "merged",
    Action.RECALL: "recalled",
    Action.REASSIGN: "reassigned",
}
_ENDS = frozenset({Stage.CLOSED, Stage.MERGED, Stage.CANCELLED})
FUTURE_TOLERANCE = timedelta(seconds=30)


@dataclass(slots=True)
class _Outbox:
    """What one transaction changed, applied once it has committed: bus messages, and responders' new status."""

    items: list[tuple[EventKey[Any], Payload]]
    units: dict[str, tuple[ResponderStatus, str | None]] = field(default_factory=dict)

    def add(self, key: EventKey[Any], payload: Payload) -> None:
        self.items.append((key, payload))


@dataclass(slots=True)
class _Live:
    """What the recommender reads about a responder, kept in memory and changed after each commit here."""

    kind: ResponderKind
    status: ResponderStatus
    capabilities: frozenset[str]
    shift: list[ShiftSpan] | None
    incident_id: str | None
    point: tuple[float, float] | None
    fix_at: datetime | None

    @classmethod
    def of(cls, row: dict[str, Any]) -> _Live:
        return cls(
            kind=ResponderKind(row["kind"]),
            status=ResponderStatus(row["status"]),
            capabilities=frozenset(row["capabilities"]),
            shift=[ShiftSpan(**s) for s in row["shift"]] if row["shift"] else None,
            incident_id=row["incident_id"],
            point=(row["lon"], row["lat"]) if row["lon"] is not None and row["lat"] is not None else None,
            fix_at=row["fix_at"],
        )


def _state(row: dict[str, Any]) -> IncidentState:
    tags = Tags(town=row["town"], community=row["community"], building=row["building"], district=row["district"])
    return IncidentState(
        id=row["id"],
        type=row["type"],
        priority=row["priority"],
        stage=Stage(row["stage"]),
        tags=tags,
        lon=row["lon"],
        lat=row["lat"],
        unit_id=row["unit_id"],
        version=row["version"],
        opened_at=row["opened_at"],
        updated_at=row["updated_at"],
    )


def _times(row: dict[str, Any]) -> StageTimes:
    return StageTimes(**{name: row.get(name) for name in StageTimes.__dataclass_fields__})


def _point(row: dict[str, Any]) -> tuple[float, float] | None:
    return (row["lon"], row["lat"]) if row.get("lon") is not None and row.get("lat") is not None else None


class DispatchService:
    """Incidents, responders, recommendations, positions, SLA timers and KPIs of one node."""

    def __init__(
        self,
        engine: AsyncEngine,
        bus: Bus,
        settings: DispatchSettings,
        *,
        pseudonymize: Callable[[str, str], str],
        link_key: bytes,
        tagger: Callable[[float, float], PlaceTags] | None = None,
        travel: TravelSource | None = None,
        zone: ZoneInfo | None = None,
        source: str = "dispatch",
        tier: str = "district",
        tasks: Supervisor | None = None,
        resolve_alert: Callable[[str, str, str], Awaitable[object]] | None = None,
        send_task: Callable[[TaskMessage], Awaitable[str]] | None = None,
    ) -> None:
        self.engine = engine
        # Queues a task message for a responder's contact subscription through the warning slice's delivery
        # channels (returns the outbox row id); None on a node without delivery.
        self.send_task = send_task
        # Called as (alert id, actor, feedback) when an incident an alert opened is closed: the warning slice resolves
        # the alert, which issues its CAP Update (AllClear referencing the original).
        self.resolve_alert = resolve_alert
        self.bus = bus
        self.settings = settings
        self.pseudonymize = pseudonymize
        self.link_key = link_key
        self.tagger = tagger
        self.travel = travel
        self.zone = zone or ZoneInfo("Asia/Shanghai")
        self.source = source
        self.tier = tier
        # The SLA breaches reported: incident id -> intervals. Pruned to the open incidents when it outgrows
        # `_breached_limit`, so it does not grow for the node's life.
        self._breached: dict[str, set[str]] = {}
        self._breached_limit = BREACHED_PRUNE_AT
        self._sla_checked_at: datetime | None = None  # the `now` of the last SLA check (None: look at every incident)
        self._tasks = tasks if tasks is not None else Supervisor()
        self._rerank = asyncio.Event()
        # What the next re-rank covers: the incidents opened since the last one, or all (None) once responders or
        # an incident's stage changed. Opening an incident changes no other incident's ranking.
        self._rerank_only: set[str] | None = set()
        self._rankings: dict[str, tuple[str, ...]] = {}  # open incident -> its first eligible responders
        self._alerts: Subscription | None = None
        # Responders as the recommender reads them; None until first used or after an import. A node is the only
        # writer of its tier's responders, so changes made here keep it true (see docs/dispatch.md).
        self._live: dict[str, _Live] | None = None
        # What the recommender reads of an incident (type, priority, place) never changes once it is opened: kept
        # when this node opens or first reads one, so a recommendation needs no database read.
        self._fixed: dict[str, tuple[str, int, tuple[float, float] | None]] = {}

    # --- lifecycle ------------------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Open incidents from alerts, run the SLA timers and keep open incidents' rankings current."""
        self._alerts = await subscribe(self.bus, ALERT_RAISED, self._on_alert, durable="dispatch-alerts")
        self._tasks.spawn(SLA_LOOP, self.sla_loop)
        self._tasks.spawn(RERANK_LOOP, self.rerank_loop)

    async def stop(self) -> None:
        """Stop taking alerts, then the loops."""
        if self._alerts is not None:
            await self._alerts.stop()
            self._alerts = None
        await self._tasks.cancel(RERANK_LOOP)
        await self._tasks.cancel(SLA_LOOP)

    async def _on_alert(self, envelope: Envelope, alert: AlertRaised) -> None:
        await self.on_alert(envelope)

    async def rerank_loop(self, debounce_s: float = 1.0) -> None:
        """After any change of responders or incidents (at most once a `debounce_s`), re-rank the open incidents
        waiting for a responder and publish `incident.recommendation_changed` for each whose first eligible
        responders changed; runs until cancelled."""
        while True:
            await self._rerank.wait()
            await asyncio.sleep(debounce_s)
            self._rerank.clear()
            only, self._rerank_only = self._rerank_only, set()
            try:
                await self.rerank(only=only)
            except BaseException:  # asked again, so a restarted loop ranks them (none is left unranked)
                pending = self._rerank_only
                self._rerank_only = None if only is None or pending is None else pending | only
                self._rerank.set()
                raise

    def _rerank_soon(self, opened: str | None = None) -> None:
        """Ask the re-rank loop for the incident just `opened`, or for every waiting incident (None)."""
        if opened is None:
            self._rerank_only = None
        elif self._rerank_only is not None:
            self._rerank_only.add(opened)
        self._rerank.set()

    async def rerank(self, *, now: datetime | None = None, only: set[str] | None = None) -> int:
        """Re-rank every open incident waiting for a responder (or those of them in `only`); returns how many
        rankings changed."""
        now = now or clock.now()
        if only is None:
            waiting, _ = await self.list(stages=_WAITING, limit=1000)
        else:  # read just those: listing every waiting incident cost more than ranking the new ones
            waiting = [i for i in [await self._find(incident_id) for incident_id in only] if i and i.stage in _WAITING]
        changed = 0
        for incident in waiting:
            if incident.route is Route.DEPARTMENT:
                continue
            ranked = [r for r in await self.recommend(incident.id, now=now, routes=0) if r.eligible][:3]
            top = tuple(r.id for r in ranked)
            if self._rankings.get(incident.id) == top:
                continue
            self._rankings[incident.id] = top
            changed += 1
            payload = RecommendationChanged(
                incident_id=incident.id,
                top=[RankedUnit(responder_id=r.id, eta_s=r.eta_s, score_s=r.score_s) for r in ranked],
                at=now,
            )
            await self.bus.publish(
                make_envelope(RECOMMENDATION_CHANGED, payload, source=self.source, tier=self.tier, occurred_at=now)
            )
        if only is None:  # forget the rankings of incidents no longer waiting
            for gone in set(self._rankings) - {incident.id for incident in waiting}:
                del self._rankings[gone]
        return changed

    # --- publishing ----------------------------------------------------------------------------------------------

    async def _live_units(self) -> dict[str, _Live]:
        if self._live is None:
            async with self.engine.connect() as conn:
                self._live = {r["id"]: _Live.of(r) for r in await IncidentRepo(conn).responders()}
        return self._live

    async def _flush(self, outbox: _Outbox, at: datetime) -> None:
        if self._live is not None:
            for responder_id, (status, incident_id) in outbox.units.items():
                if (live := self._live.get(responder_id)) is not None:
                    live.status, live.incident_id = status, incident_id
        for key, payload in outbox.items:
            await self.bus.publish(make_envelope(key, payload, source=self.source, tier=self.tier, occurred_at=at))

    # --- reading -------------------------------------------------------------------------------------------------

    async def _find(self, incident_id: str) -> Incident | None:
        try:
            return await self.get(incident_id)
        except IncidentNotFound:
            return None

    async def get(self, incident_id: str) -> Incident:
        """One incident (IncidentNotFound when there is none)."""
        async with self.engine.connect() as conn:
            row = await IncidentRepo(conn).get(incident_id)
        if row is None:
            raise IncidentNotFound(incident_id)
        return Incident.of(row)

    async def list(
        self,
        *,
        stages: Iterable[Stage] | None = None,
        town: str | None = None,
        type: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> tuple[builtins.list[Incident], int]:
        """A page of incidents, newest first, and the total."""
        async with self.engine.connect() as conn:
            rows, total = await IncidentRepo(conn).list(
                stages=[s.value for s in stages] if stages is not None else None,
                town=town,
                type=type,
                since=since,
                until=until,
                limit=limit,
                offset=offset,
            )
        return [Incident.of(r) for r in rows], total

    async def history(self, incident_id: str) -> builtins.list[StepRecord]:
        """Every step of an incident, oldest first."""
        async with self.engine.connect() as conn:
            repo = IncidentRepo(conn)
            if await repo.get(incident_id) is None:
                raise IncidentNotFound(incident_id)
            rows = await repo.steps(incident_id)
        return [StepRecord(**r) for r in rows]

    async def assignments(self, incident_id: str) -> builtins.list[dict[str, Any]]:
        """Every assignment of an incident (who was sent, when, until when, with which outcome)."""
        async with self.engine.connect() as conn:
            return await IncidentRepo(conn).assignments(incident_id)

    # --- opening -------------------------------------------------------------------------------------------------

    def _tags(self, draft: IncidentDraft) -> PlaceTags:
        tags = EMPTY_TAGS
        if self.tagger is not None and draft.lon is not None and draft.lat is not None:
            tags = self.tagger(draft.lon, draft.lat)
        if draft.community and not tags.community:
            tags = PlaceTags(district=tags.district, town=tags.town, community=draft.community, building=tags.building)
        if draft.building:
            tags = PlaceTags(district=tags.district, town=tags.town, community=tags.community, building=draft.building)
        return tags

    async def open(self, draft: IncidentDraft, *, actor: str, now: datetime | None = None) -> Opened:
        """Open an incident: tag its place, triage it by type (department matters are diverted at once), and propose
        merging it into an open duplicate (merged at once when its type merges automatically)."""
        now = now or clock.now()
        tags = self._tags(draft)
        verdict = triage(draft.type, self.settings.triage, priority=draft.priority)
        incident_id = ids.new_id()
        row: dict[str, Any] = {
            **dict.fromkeys(store.INCIDENT_TIMES),
            "id": incident_id,
            "type": draft.type,
            "priority": verdict.priority,
            "stage": Stage.NEW.value,
            "route": verdict.route.value,
            "origin": draft.origin,
            "summary": draft.summary,
            "lon": draft.lon,
            "lat": draft.lat,
            "address": draft.address,
            "district": tags.district,
            "town": tags.town,
            "community": tags.community,
            "building": tags.building,
            "caller": self.pseudonymize("caller", draft.caller) if draft.caller else None,
            "department": verdict.department,
            "service_code": None,
            "merged_into": None,
            "alert_id": draft.alert_id,
            "unit_id": None,
            "perceived_at": draft.perceived_at,
            "warned_at": draft.warned_at,
            "opened_at": now,
            "updated_at": now,
            "version": 0,
        }
        evidence = [e.model_dump() for e in draft.evidence]
        if draft.alert_id:
            evidence.append({"kind": "alert", "ref": draft.alert_id})
        outbox = _Outbox([])
        async with write_transaction(self.engine) as conn:
            repo = IncidentRepo(conn)
            if draft.alert_id and (existing := await repo.by_alert(draft.alert_id)) is not None:
                return Opened(Incident.of(existing), [])
            await repo.insert(row)
            await self._add_step(repo, row, None, Stage.NEW, "open", actor, now, evidence=evidence, note=draft.summary)
            outbox.add(INCIDENT_CHANGED, self._changed("new", None, actor, now, None, row))
            dedupe = self.settings.dedupe
            point = _point(row)
            # Only open incidents that can be near it (same building, or inside the distance's box): listing every
            # open incident of the type cost a few ms a new incident on the loop once hundreds were open.
            open_rows = await repo.merge_candidates(
                type=draft.type,
                stages=[s.value for s in OPEN_STAGES],
                since=now - timedelta(seconds=dedupe.window_s),
                building=row["building"] if dedupe.same_building else None,
                box=box_around_m(point[0], point[1], dedupe.distance_m) if point is not None else None,
            )
            proposals = merge_proposals(self._facts(row), [self._facts(r) for r in open_rows], dedupe)
            if proposals and proposals[0].automatic:
                row = await self._apply(
                    repo, row, StepIn(action=Action.MERGE, merged_into=proposals[0].into), SYSTEM, now, outbox
                )
            elif verdict.known_type:
                row = await self._apply(repo, row, StepIn(action=Action.TRIAGE), SYSTEM, now, outbox)
                if verdict.route is Route.DEPARTMENT:
                    divert = StepIn(action=Action.DIVERT, service_code=verdict.service_code)
                    row = await self._apply(repo, row, divert, SYSTEM, now, outbox)
        await self._flush(outbox, now)
        self._keep_fixed(row)
        self._rerank_soon(opened=row["id"])
        return Opened(Incident.of(row), proposals)

    def _keep_fixed(self, row: dict[str, Any]) -> tuple[str, int, tuple[float, float] | None]:
        fixed = (row["type"], row["priority"], _point(row))
        if len(self._fixed) >= 50_000:
            del self._fixed[next(iter(self._fixed))]  # the oldest
        self._fixed[row["id"]] = fixed
        return fixed

    @staticmethod
    def _facts(row: dict[str, Any]) -> Facts:
        return Facts(row["id"], row["type"], row["opened_at"], _point(row), row["building"])

    def _changed(
        self,
        kind: str,
        action: Action | None,
        actor: str,
        at: datetime,
        before: dict[str, Any] | None,
        after: dict[str, Any],
    ) -> IncidentChanged:
        return IncidentChanged(
            type=kind,  # type: ignore[arg-type]
            action=action,
            actor=actor,
            at=at,
            before=_state(before) if before is not None else None,
            after=_state(after),
        )

    async def _add_step(
        self,
        repo: IncidentRepo,
        row: dict[str, Any],
        before: Stage | None,
        after: Stage,
        action: str,
        actor: str,
        at: datetime,
        *,
        unit_id: str | None = None,
        note: str | None = None,
        evidence: Sequence[dict[str, str]] = (),
    ) -> None:
        await repo.add_step(
            {
                "id": ids.new_id(),
                "incident_id": row["id"],
                "action": action,
                "from_stage": before.value if before is not None else None,
                "to_stage": after.value,
                "actor": actor,
                "at": at,
                "unit_id": unit_id,
                "note": note,
                "evidence": list(evidence),
            }
        )

    # --- acting --------------------------------------------------------------------------------------------------

    async def act(
        self, incident_id: str, step: StepIn, *, actor: str, now: datetime | None = None, tell_unit: bool = True
    ) -> Incident:
        """Take one lifecycle action with its side effects, in one transaction. A responder dispatched with a contact
        is sent its task (arrive, report) unless `tell_unit` is False (it accepted through its own link).

        Refusals: 404 unknown incident or unit; 409 `dispatch.invalid_transition` (with the allowed actions),
        `dispatch.responder_busy` (with the unit's current assignment), `dispatch.incident_moved` (someone acted
        first); 422 `dispatch.step_incomplete`.
        """
        now = now or clock.now()
        outbox = _Outbox([])
        async with write_transaction(self.engine) as conn:
            repo = IncidentRepo(conn)
            row = await repo.get(incident_id, for_update=True)
            if row is None:
                raise IncidentNotFound(incident_id)
            if step.expected_version is not None and step.expected_version != row["version"]:
                raise IncidentMoved(incident_id, row["version"], row["stage"])
            row = await self._apply(repo, row, step, actor, now, outbox)
        await self._flush(outbox, now)
        self._rerank_soon()
        if tell_unit and step.action in (Action.DISPATCH, Action.REASSIGN) and self.send_task and step.unit_id:
            await self._tell_assigned(row, step.unit_id, actor, now)
        if step.action is Action.CLOSE and row.get("alert_id") and self.resolve_alert is not None:
            try:
                await self.resolve_alert(row["alert_id"], actor, step.feedback or "incident closed")
            except SafeCityError as err:  # already resolved or cancelled by an operator: nothing to update
                log.info("incident_alert_not_resolved", alert_id=row["alert_id"], code=err.code)
        return Incident.of(row)

    async def _apply(
        self, repo: IncidentRepo, row: dict[str, Any], step: StepIn, actor: str, now: datetime, outbox: _Outbox
    ) -> dict[str, Any]:
        """Check and apply one action on `row` inside the caller's transaction; returns the new row."""
        before = Stage(row["stage"])
        target = advance(before, step.action, step.step(actor, row["id"]))
        values: dict[str, Any] = {"stage": target.value, "updated_at": now}
        stamp = _STAMPS.get(step.action)
        if stamp is not None and row.get(stamp) is None:
            values[stamp] = now
        unit_id = row["unit_id"]
        evidence = [e.model_dump() for e in step.evidence]

        if step.action in _RELEASES:
            await self._release(repo, row["id"], now, _RELEASES[step.action], actor, outbox)
            if step.action is Action.RECALL:
                unit_id = None  # otherwise the incident keeps its last responder (exports, KPIs per unit)
        if step.action in (Action.DISPATCH, Action.REASSIGN):
            assert step.unit_id is not None  # the guard requires it
            eta_s = await self._assign(repo, row, step.unit_id, step.preempt, actor, now, outbox)
            unit_id = step.unit_id
            outbox.add(
                UNIT_ASSIGNED, UnitAssigned(incident_id=row["id"], unit_id=unit_id, eta_s=eta_s, actor=actor, at=now)
            )
        elif step.action in _UNIT_STATUS and unit_id is not None:
            await self._set_status(repo, unit_id, _UNIT_STATUS[step.action], row["id"], actor, now, outbox)
        if step.action is Action.MERGE:
            assert step.merged_into is not None
            into = await repo.get(step.merged_into)
            if into is None:
                raise IncidentNotFound(step.merged_into)
            if Stage(into["stage"]) not in OPEN_STAGES:
                raise MergeTargetClosed(step.merged_into, into["stage"])
            values["merged_into"] = step.merged_into
            evidence.append({"kind": "incident", "ref": step.merged_into})
            # The surviving incident's history names the duplicate too: both histories are kept.
            await self._add_step(
                repo,
                into,
                Stage(into["stage"]),
                Stage(into["stage"]),
                "absorb",
                actor,
                now,
                evidence=[{"kind": "incident", "ref": row["id"]}],
                note=row["summary"] or None,
            )
        if step.action is Action.DIVERT:
            values["service_code"] = step.service_code
            await self._request_department(repo, row, step.service_code or "", now)
        if step.action is Action.CLOSE and row.get("alert_id"):
            evidence.append({"kind": "alert", "ref": row["alert_id"]})
        values["unit_id"] = unit_id
        if not await repo.change(row["id"], version=row["version"], values=values):
            fresh = await repo.get(row["id"]) or row
            raise IncidentMoved(row["id"], fresh["version"], fresh["stage"])
        after = {**row, **values, "version": row["version"] + 1}
        note = step.note or step.reason or step.disposition or step.feedback
        await self._add_step(
            repo, row, before, target, step.action.value, actor, now, unit_id=step.unit_id, note=note, evidence=evidence
        )
        kind = "end" if target in _ENDS else "update"
        outbox.add(INCIDENT_CHANGED, self._changed(kind, step.action, actor, now, row, after))
        return after

    async def _assign(
        self,
        repo: IncidentRepo,
        row: dict[str, Any],
        unit_id: str,
        preempt: bool,
        actor: str,
        now: datetime,
        outbox: _Outbox,
    ) -> float | None:
        unit = await repo.responder(unit_id)
        if unit is None:
            raise ResponderNotFound(unit_id)
        status = ResponderStatus(unit["status"])
        if status is ResponderStatus.OUT_OF_SERVICE:
            raise ResponderUnavailable(unit_id, "out of service")
        shift = [ShiftSpan(**s) for s in unit["shift"]] if unit["shift"] else None
        if not on_duty(shift, now.astimezone(self.zone)):
            raise ResponderUnavailable(unit_id, "off duty")
        current = await repo.active_assignment(unit_id)
        if current is not None and current["incident_id"] != row["id"] and preempt:
            other = await repo.get(current["incident_id"])
            if other is None or status is ResponderStatus.ON_SCENE or other["priority"] <= row["priority"]:
                raise ResponderBusy(unit_id, current)
            recall = StepIn(action=Action.RECALL, reason=f"{unit_id} taken for incident {row['id']}")
            await self._apply(repo, other, recall, actor, now, outbox)
        eta_s = None
        if self.travel is not None and unit["lon"] is not None and _point(row) is not None:
            found = await self.travel.travel(_point(row), {unit_id: (unit["lon"], unit["lat"])}, routes=0)  # type: ignore[arg-type]
            eta_s = found[unit_id].eta_s if unit_id in found else None
        try:
            await repo.assign(
                {
                    "id": ids.new_id(),
                    "incident_id": row["id"],
                    "responder_id": unit_id,
                    "assigned_at": now,
                    "eta_s": eta_s,
                    "actor": actor,
                }
            )
        except store.ResponderBusy:
            raise ResponderBusy(unit_id, await repo.active_assignment(unit_id)) from None
        await self._set_status(repo, unit_id, ResponderStatus.DISPATCHED, row["id"], actor, now, outbox)
        return eta_s

    async def _release(
        self, repo: IncidentRepo, incident_id: str, now: datetime, outcome: str, actor: str, outbox: _Outbox
    ) -> None:
        held = [a["responder_id"] for a in await repo.assignments(incident_id) if a["active"]]
        await repo.release(incident_id=incident_id, at=now, outcome=outcome)
        for responder_id in held:
            await self._set_status(repo, responder_id, ResponderStatus.AVAILABLE, None, actor, now, outbox)

    async def _set_status(
        self,
        repo: IncidentRepo,
        responder_id: str,
        status: ResponderStatus,
        incident_id: str | None,
        actor: str,
        now: datetime,
        outbox: _Outbox,
    ) -> None:
        unit = await repo.responder(responder_id)
        if unit is None:
            raise ResponderNotFound(responder_id)
        await repo.set_responder(responder_id, {"status": status.value, "incident_id": incident_id, "updated_at": now})
        outbox.units[responder_id] = (status, incident_id)
        previous = ResponderStatus(unit["status"])
        if previous is not status:
            outbox.add(
                RESPONDER_STATUS_CHANGED,
                ResponderStatusChanged(
                    responder_id=responder_id,
                    kind=ResponderKind(unit["kind"]),
                    status=status,
                    previous=previous,
                    incident_id=incident_id,
                    actor=actor,
                    at=now,
                ),
            )

    async def _request_department(
        self, repo: IncidentRepo, row: dict[str, Any], service_code: str, now: datetime
    ) -> None:
        """File the GeoReport v2 service request the owning department reads from our Open311 server."""
        await repo.put_request(
            {
                "id": row["id"],
                "incident_id": row["id"],
                "service_code": service_code,
                "status": "open",
                "status_notes": None,
                "agency_responsible": row.get("department"),
                "service_notice": None,
                "description": row["summary"],
                "address": row["address"],
                "lon": row["lon"],
                "lat": row["lat"],
                "media_url": None,
                "attributes": {},
                "requested_at": now,
                "updated_at": now,
                "expected_at": None,
            }
        )

    async def department_update(
        self, request_id: str, *, status: str, notes: str | None, agency: str, now: datetime | None = None
    ) -> Incident:
        """A department's outcome for a diverted incident: the request's status, and when closed the incident is
        closed with the department's notes as its feedback."""
        now = now or clock.now()
        if status not in ("open", "closed"):
            raise InvalidInput(f"status must be open or closed, not {status!r}")
        async with write_transaction(self.engine) as conn:
            repo = IncidentRepo(conn)
            request = await repo.request(request_id)
            if request is None:
                raise IncidentNotFound(request_id)
            await repo.update_request(request_id, {"status": status, "status_notes": notes, "updated_at": now})
        if status == "closed":
            return await self.act(
                request["incident_id"],
                StepIn(action=Action.CLOSE, feedback=notes or "closed by the department"),
                actor=f"department:{agency}",
                now=now,
            )
        return await self.get(request["incident_id"])

    # --- responders ----------------------------------------------------------------------------------------------

    async def responders(self, ids_: Iterable[str] | None = None) -> builtins.list[Responder]:
        """Registered responders with their live state."""
        async with self.engine.connect() as conn:
            return [Responder.of(r) for r in await IncidentRepo(conn).responders(ids=ids_)]

    async def responder(self, responder_id: str) -> Responder:
        """One responder (ResponderNotFound when not registered)."""
        async with self.engine.connect() as conn:
            row = await IncidentRepo(conn).responder(responder_id)
        if row is None:
            raise ResponderNotFound(responder_id)
        return Responder.of(row)

    async def import_responders(
        self,
        rows: Sequence[ResponderIn],
        issues: Iterable[ImportIssue] = (),
        *,
        mode: ImportMode = ImportMode.VALID_ONLY,
    ) -> ImportReport:
        """Create or update many responders in one transaction (their live status and position are kept)."""
        errors = builtins.list(issues)
        if mode is ImportMode.ALL_OR_NOTHING and errors:
            return ImportReport(mode=mode, applied=False, errors=errors)
        now = clock.now()
        created = updated = 0
        async with write_transaction(self.engine) as conn:
            repo = IncidentRepo(conn)
            for item in {r.id: r for r in rows}.values():
                if await repo.put_responder(item.row(now)):
                    created += 1
                else:
                    updated += 1
        self._live = None
        self._rerank_soon()
        return ImportReport(mode=mode, applied=True, created=created, updated=updated, errors=errors)

    async def report_position(
        self,
        responder_id: str,
        lon: float,
        lat: float,
        *,
        fix_at: datetime | None = None,
        heading: float | None = None,
        now: datetime | None = None,
    ) -> ResponderMoved:
        """Take a position fix (MQTT or HTTP): refused when off the map, far off the road network, stale (older
        than the stale setting), from the future, or older than the fix already held."""
        now = now or clock.now()
        fix_at = fix_at or now
        if not (-180 <= lon <= 180 and -90 <= lat <= 90):
            raise BadPosition(responder_id, "off the map (lon within ±180, lat within ±90)")
        if fix_at > now + FUTURE_TOLERANCE:
            raise BadPosition(responder_id, "fix time is in the future; check the unit's clock")
        age = (now - fix_at).total_seconds()
        if age > self.settings.rank.stale_after_s:
            raise BadPosition(
                responder_id, f"stale: the fix is {age:.0f} s old (limit {self.settings.rank.stale_after_s:.0f} s)"
            )
        snap_m: float | None = None
        if self.travel is not None:
            on_network, snap_m = await self.travel.snap((lon, lat))
            if not on_network:
                raise BadPosition(responder_id, "too far from the road network")
        async with write_transaction(self.engine) as conn:
            repo = IncidentRepo(conn)
            unit = await repo.responder(responder_id)
            if unit is None:
                raise ResponderNotFound(responder_id)
            if unit["fix_at"] is not None and fix_at < unit["fix_at"]:
                raise BadPosition(responder_id, "older than the position already held (out of order)")
            await repo.set_responder(
                responder_id, {"lon": lon, "lat": lat, "heading": heading, "fix_at": fix_at, "updated_at": now}
            )
        moved = ResponderMoved(
            responder_id=responder_id,
            kind=ResponderKind(unit["kind"]),
            status=ResponderStatus(unit["status"]),
            lon=lon,
            lat=lat,
            heading=heading,
            fix_at=fix_at,
            snap_m=snap_m,
            incident_id=unit["incident_id"],
        )
        if self._live is not None and (live := self._live.get(responder_id)) is not None:
            live.point, live.fix_at = (lon, lat), fix_at
        await self.bus.publish(
            make_envelope(RESPONDER_MOVED, moved, source=self.source, tier=self.tier, occurred_at=fix_at)
        )
        self._rerank_soon()
        return moved

    async def set_status(
        self, responder_id: str, status: ResponderStatus, *, actor: str, now: datetime | None = None
    ) -> Responder:
        """A responder goes out of service or back to available (statuses tied to an incident move with it)."""
        now = now or clock.now()
        if status not in (ResponderStatus.AVAILABLE, ResponderStatus.OUT_OF_SERVICE):
            raise InvalidInput("a responder sets itself available or out_of_service; incident steps set the rest")
        outbox = _Outbox([])
        async with write_transaction(self.engine) as conn:
            repo = IncidentRepo(conn)
            unit = await repo.responder(responder_id)
            if unit is None:
                raise ResponderNotFound(responder_id)
            if unit["incident_id"] is not None:
                raise ResponderUnavailable(
                    responder_id, f"committed to incident {unit['incident_id']}; reassign it first"
                )
            await self._set_status(repo, responder_id, status, None, actor, now, outbox)
        await self._flush(outbox, now)
        self._rerank_soon()
        return await self.responder(responder_id)

    # --- recommending --------------------------------------------------------------------------------------------

    async def recommend(
        self, incident_id: str, *, now: datetime | None = None, routes: int = 3
    ) -> builtins.list[Ranked]:
        """One ranked list across police units, department crews and community responders for an incident (with
        the road route of the first `routes` eligible ones)."""
        now = now or clock.now()
        units = await self._live_units()
        busy_ids = {u.incident_id for u in units.values() if u.incident_id and u.incident_id != incident_id}
        fixed = self._fixed.get(incident_id)
        busy = {i: f[1] for i in busy_ids if (f := self._fixed.get(i)) is not None}
        if fixed is None or len(busy) < len(busy_ids):
            async with self.engine.connect() as conn:
                repo = IncidentRepo(conn)
                if fixed is None:
                    row = await repo.get(incident_id)
                    if row is None:
                        raise IncidentNotFound(incident_id)
                    fixed = self._keep_fixed(row)
                if len(busy) < len(busy_ids):
                    busy |= await repo.priorities(busy_ids - busy.keys())
        kind, priority, point = fixed
        verdict = triage(kind, self.settings.triage, priority=priority)
        local = now.astimezone(self.zone)
        others = [(uid, u) for uid, u in units.items() if u.incident_id != incident_id]
        travel: Mapping[str, Travel] = {}
        if self.travel is not None and point is not None:
            positions = {uid: u.point for uid, u in others if u.point is not None}
            travel = await self.travel.travel(point, positions, routes=routes)
        # Only the responders the list can show become candidates (a handful of hundreds); the ranking is the same.
        needs = verdict.needs
        etas = travel.etas if isinstance(travel, Travels) else {uid: t.eta_s for uid, t in travel.items()}
        keep = shortlist(
            [uid for uid, _ in others],
            [
                plainly_eligible(u.status, u.capabilities, u.shift is None or on_duty(u.shift, local), needs)
                for _, u in others
            ],
            [u.fix_at for _, u in others],
            etas,
            now=now,
            settings=self.settings.rank,
        )
        candidates = [
            Candidate(
                id=uid,
                kind=u.kind,
                status=u.status,
                capabilities=u.capabilities,
                fix_at=u.fix_at,
                on_duty=on_duty(u.shift, local),
                busy_priority=busy.get(u.incident_id) if u.incident_id else None,
                busy_incident=u.incident_id,
            )
            for uid, u in others
            if uid in keep
        ]
        return rank(candidates, travel, priority=priority, needs=needs, now=now, settings=self.settings.rank)

    async def dispatch_best(self, incident_id: str, *, actor: str, now: datetime | None = None) -> Incident:
        """Dispatch the first eligible responder of the recommendation in one call (409 when there is none)."""
        ranked = [r for r in await self.recommend(incident_id, now=now) if r.eligible]
        if not ranked:
            raise ResponderUnavailable("-", "no eligible responder for this incident")
        best = ranked[0]
        return await self.act(
            incident_id,
            StepIn(action=Action.DISPATCH, unit_id=best.id, preempt=best.preempts is not None),
            actor=actor,
            now=now,
        )

    # --- community task links --------------------------------------------------------------------------------------

    def task_link(self, incident_id: str, responder_id: str, *, now: datetime | None = None) -> str:
        """A signed, expiring token letting a community responder accept, arrive and report the outcome."""
        return links.issue(
            self.link_key,
            incident_id=incident_id,
            responder_id=responder_id,
            actions=("accept", "arrive", "report"),
            now=now or clock.now(),
            ttl=timedelta(seconds=self.settings.task_link_ttl_s),
        )

    async def offer_task(
        self, incident_id: str, responder_id: str, *, actor: str, now: datetime | None = None
    ) -> TaskSent:
        """Send a responder the incident as a task through its contact subscription, with a link to accept (which
        dispatches it), arrive and report the outcome. The offer is a step of the incident's history.

        Refusals: 404 unknown incident or responder; 409 `dispatch.invalid_transition` when the incident can no longer
        be dispatched, `dispatch.responder_no_contact`; 503 when this node delivers no messages.
        """
        now = now or clock.now()
        async with self.engine.connect() as conn:
            repo = IncidentRepo(conn)
            row = await repo.get(incident_id)
            if row is None:
                raise IncidentNotFound(incident_id)
            unit = await repo.responder(responder_id)
        if unit is None:
            raise ResponderNotFound(responder_id)
        stage = Stage(row["stage"])
        if Action.DISPATCH not in allowed(stage):
            raise InvalidTransition(stage=stage, action=Action.DISPATCH)
        return await self._send(row, unit, ("accept", "arrive", "report"), actor, now)

    async def _tell_assigned(self, row: dict[str, Any], responder_id: str, actor: str, now: datetime) -> None:
        """After a dispatch: a responder with a contact gets the task with its arrive / report link (a failure to
        queue it is logged; the dispatch stands)."""
        async with self.engine.connect() as conn:
            unit = await IncidentRepo(conn).responder(responder_id)
        if unit is None or not unit.get("contact"):
            return
        try:
            await self._send(row, unit, ("arrive", "report"), actor, now)
        except SafeCityError as err:
            log.warning("task_not_sent", incident_id=row["id"], responder_id=responder_id, code=err.code)

    async def _send(
        self, row: dict[str, Any], unit: dict[str, Any], actions: tuple[str, ...], actor: str, now: datetime
    ) -> TaskSent:
        if not unit.get("contact"):
            raise ResponderNoContact(unit["id"])
        if self.send_task is None:
            raise TasksUnavailable()
        ttl = timedelta(seconds=self.settings.task_link_ttl_s)
        token = links.issue(
            self.link_key, incident_id=row["id"], responder_id=unit["id"], actions=actions, now=now, ttl=ttl
        )
        task = TaskMessage(
            id=ids.new_id(),
            subscription_id=unit["contact"],
            incident_id=row["id"],
            responder_id=unit["id"],
            incident_type=row["type"],
            priority=row["priority"],
            summary=row["summary"],
            address=row["address"],
            lon=row["lon"],
            lat=row["lat"],
            tags={"town": row["town"], "community": row["community"], "building": row["building"]},
            link=f"{self.settings.task_link_base_url.rstrip('/')}/task#{token}",
            actions=actions,
            expires_at=now + ttl,
            sent_by=actor,
        )
        delivery_id = await self.send_task(task)
        stage = Stage(row["stage"])
        async with write_transaction(self.engine) as conn:
            await self._add_step(
                IncidentRepo(conn),
                row,
                stage,
                stage,
                "task_sent",
                actor,
                now,
                unit_id=unit["id"],
                note=", ".join(actions),
                evidence=[{"kind": "delivery", "ref": delivery_id}],
            )
        return TaskSent(
            incident_id=row["id"],
            responder_id=unit["id"],
            subscription_id=unit["contact"],
            delivery_id=delivery_id,
            actions=actions,
            expires_at=task.expires_at,
        )

    async def task_view(self, token: str, *, now: datetime | None = None) -> TaskView:
        """What a valid task link shows (BadLink when it is forged or expired)."""
        claims = links.verify(self.link_key, token, action=None, now=now or clock.now())
        incident = await self.get(claims.incident_id)
        return TaskView(
            incident_id=incident.id,
            responder_id=claims.responder_id,
            type=incident.type,
            priority=incident.priority,
            stage=incident.stage,
            summary=incident.summary,
            address=incident.address,
            lon=incident.lon,
            lat=incident.lat,
            actions=list(claims.actions),
            expires_at=datetime.fromtimestamp(claims.expires, UTC),
        )

    async def act_by_link(
        self, token: str, action: str, *, outcome: str | None = None, now: datetime | None = None
    ) -> Incident:
        """What a community responder's link does: accept (dispatch it), arrive, or report the outcome (dispose)."""
        now = now or clock.now()
        claims = links.verify(self.link_key, token, action=action, now=now)
        actor = f"responder:{claims.responder_id}"
        if action == "accept":
            step = StepIn(action=Action.DISPATCH, unit_id=claims.responder_id)
        elif action == "arrive":
            step = StepIn(action=Action.ARRIVE)
        else:
            step = StepIn(action=Action.DISPOSE, disposition=outcome or "")
        return await self.act(claims.incident_id, step, actor=actor, now=now, tell_unit=False)

    # --- alerts --------------------------------------------------------------------------------------------------

    async def on_alert(self, envelope: Envelope) -> None:
        """Open an incident for a new alert whose rule says `opens_incident` (once per alert)."""
        alert = envelope.payload
        if not isinstance(alert, AlertRaised) or not alert.opens_incident:
            return
        point = None
        if alert.area is not None and alert.area.circle is not None:
            point = (alert.area.circle.lon, alert.area.circle.lat)
        elif alert.area is not None and alert.area.polygon:
            ring = alert.area.polygon[:-1] or alert.area.polygon
            point = (sum(p[0] for p in ring) / len(ring), sum(p[1] for p in ring) / len(ring))
        draft = IncidentDraft(
            type=incident_type_of(alert.rule_id, self.settings.alert_types),
            origin="alert",
            summary=alert.headline.zh,
            lon=point[0] if point else None,
            lat=point[1] if point else None,
            address=alert.area.description if alert.area is not None else None,
            community=alert.tags.community or "unknown",
            building=alert.tags.building,
            alert_id=alert.alert_id,
            perceived_at=alert.first_at,
            warned_at=alert.hops.get("fired", envelope.occurred_at),
            evidence=[EvidenceRef(kind="event", ref=e) for e in alert.trigger_event_ids[:50]],
        )
        await self.open(draft, actor=f"rule:{alert.rule_id}")

    # --- replay ---------------------------------------------------------------------------------------------------

    async def import_calls(self, calls: Sequence[Call], *, progress: Callable[[int], None] | None = None) -> int:
        """Store replayed calls for service as closed incidents (origin `replay`) with their stage times."""
        imported = 0
        for start in range(0, len(calls), 500):
            async with write_transaction(self.engine) as conn:
                repo = IncidentRepo(conn)
                for call in calls[start : start + 500]:
                    await repo.insert(self._replayed(call))
                    imported += 1
            if progress is not None:
                progress(len(calls[start : start + 500]))
        return imported

    def _replayed(self, call: Call) -> dict[str, Any]:
        times = call.times
        assert times.opened_at is not None  # read_calls refuses a row without its received time
        slug = re.sub(r"[^a-z0-9]+", "_", call.call_type.lower()).strip("_")[:60] or "unknown"
        kind = slug if slug[0].isalpha() else f"t_{slug}"
        priority = int(call.priority) if call.priority and call.priority.isdigit() and call.priority != "0" else None
        verdict = triage(kind, self.settings.triage, priority=min(priority, 9) if priority else None)
        return {
            **dict.fromkeys(store.INCIDENT_TIMES),
            "id": ids.new_id(),
            "type": kind,
            "priority": verdict.priority,
            "stage": Stage.CLOSED.value,
            "route": verdict.route.value,
            "origin": "replay",
            "summary": f"call {call.call_number}: {call.call_type}",
            "lon": call.point[0] if call.point else None,
            "lat": call.point[1] if call.point else None,
            "address": None,
            "district": None,
            "town": call.station,
            "community": None,
            "building": None,
            "caller": None,
            "department": None,
            "service_code": None,
            "merged_into": None,
            "alert_id": None,
            "unit_id": call.units[0] if call.units else None,
            **{name: getattr(times, name) for name in StageTimes.__dataclass_fields__},
            "updated_at": times.closed_at or times.opened_at,
            "version": 0,
        }

    # --- SLA and KPIs --------------------------------------------------------------------------------------------

    def timers(self, incident: Incident) -> builtins.list[Timer]:
        """The SLA timers of an incident (running and ended)."""
        area = self.settings.sla.area_of(incident.town)
        return timers(_times(incident.model_dump()), self.settings.sla.limits_for(incident.priority, area))

    async def check_sla(self, *, now: datetime | None = None) -> builtins.list[tuple[Incident, Timer]]:
        """Open incidents' timers that have just passed their limit (each incident and interval reported once)."""
        now = now or clock.now()
        # After the first check, only incidents a timer of which reached its limit since the last check, or that
        # changed since (a stage time may be recorded late); a margin covers writes committed after the last check
        # but stamped before it.
        since = min(self._sla_checked_at, now) if self._sla_checked_at is not None else None
        started = start_windows((t.limits for t in self.settings.sla.targets), since, now) if since else {}
        async with self.engine.connect() as conn:
            rows = await IncidentRepo(conn).sla_candidates(
                stages=[s.value for s in OPEN_STAGES],
                changed_since=since - SLA_CHECK_MARGIN if since else None,
                started=started,
            )
        self._sla_checked_at = now
        breaches = []
        for incident in map(Incident.of, rows):
            for timer in self.timers(incident):
                reported = self._breached.get(incident.id)
                if timer.breached(now) and (reported is None or timer.interval not in reported):
                    self._breached.setdefault(incident.id, set()).add(timer.interval)
                    breaches.append((incident, timer))
        if len(self._breached) > self._breached_limit:
            async with self.engine.connect() as conn:
                still_open = await IncidentRepo(conn).ids(stages=[s.value for s in OPEN_STAGES])
            self._breached = {i: kept for i, kept in self._breached.items() if i in still_open}
            self._breached_limit = max(BREACHED_PRUNE_AT, 2 * len(self._breached))
        return breaches

    async def publish_sla_breaches(self, *, now: datetime | None = None) -> int:
        """Check the timers and publish each new breach as an `event.sla` event, which the warning engine turns
        into an alert (rule `dispatch.sla_breach` of the default pack); returns how many were published."""
        now = now or clock.now()
        breaches = await self.check_sla(now=now)
        for incident, timer in breaches:
            elapsed = round(timer.elapsed_s(now), 3)
            event = SensorEvent(
                device_id=f"incident:{incident.id}",
                kind=EventKind.SLA,
                tags=Tags(
                    town=incident.town,
                    community=incident.community,
                    building=incident.building,
                    district=incident.district,
                    device_kind="incident",
                ),
                message_id=f"{incident.id}:{timer.interval}",
                lon=incident.lon,
                lat=incident.lat,
                value=elapsed,
                state=timer.interval,
                data={
                    "incident_id": incident.id,
                    "type": incident.type,
                    "priority": incident.priority,
                    "interval": timer.interval,
                    "limit_s": timer.limit_s,
                    "elapsed_s": elapsed,
                },
            )
            await self.bus.publish(
                make_envelope(event_key(EventKind.SLA), event, source=self.source, tier=self.tier, occurred_at=now)
            )
        return len(breaches)

    async def sla_loop(self) -> None:
        """Publish SLA breaches every `dispatch.sla_check_s` seconds; runs until cancelled."""
        while True:
            await asyncio.sleep(self.settings.sla_check_s)
            await self.publish_sla_breaches()

    async def kpis(
        self, *, since: datetime, until: datetime, group: str = "town"
    ) -> dict[str | None, dict[str, Summary]]:
        """Count, median and 90th percentile of every stage per group (town, type, priority, department, unit_id)."""
        if group not in ("town", "station", "type", "priority", "department", "unit_id", "route", "origin"):
            raise InvalidInput(
                f"group must be town, station, type, priority, department, unit_id, route or origin, not {group!r}"
            )
        async with self.engine.connect() as conn:
            rows = await IncidentRepo(conn).stage_times(since=since, until=until, group=group)
        return stage_kpis((r["group"], _times(r)) for r in rows)
