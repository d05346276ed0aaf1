"""What each router needs from the slices, as typed ports, and the `ApiServices` container that holds them.

A router names a port (through `safecity.api.deps`), never a service class, the store or the runtime: the slices'
services satisfy these protocols structurally, and a test can mount a router with a fake. The runtime builds one
`ApiServices` (`Runtime.api_services()`) and `create_app` takes it.

Every type named here comes from the kernel, geo, or a slice's store-free modules (models, read models, pure logic),
so `safecity.api` has no import path to `safecity.store` (checked by import-linter and tests/unit/test_api_layering).
"""

from __future__ import annotations

import asyncio
import builtins
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, TypeVar

import numpy as np
import numpy.typing as npt

from safecity.dispatch.incident import (
    Incident,
    IncidentDraft,
    Opened,
    Responder,
    StepIn,
    StepRecord,
    TaskSent,
    TaskView,
)
from safecity.dispatch.kpi import Summary
from safecity.dispatch.lifecycle import Stage
from safecity.dispatch.model import ResponderMoved
from safecity.dispatch.open311 import Service, ServiceDefinition, ServiceRequest
from safecity.dispatch.recommend import Ranked, ResponderStatus
from safecity.dispatch.responders import ResponderIn
from safecity.dispatch.sla import Timer
from safecity.geo.places import PlaceTags, PlaceTree
from safecity.geo.road.network import Ranking, RoadNetwork, Route, UnitEta
from safecity.geo.road.search import Coverage, Isochrone
from safecity.geo.road.service import ConditionsSummary
from safecity.geo.road.snap import Point, Snap
from safecity.kernel.readiness import Readiness
from safecity.kernel.settings import Settings
from safecity.kernel.tabular import ImportIssue, ImportMode, ImportReport
from safecity.sensing.devices import Device, DeviceIn, DevicePage, DevicePatch
from safecity.sensing.model import DeviceKind, DeviceStatus
from safecity.sensing.pipeline import IngestResult
from safecity.sharing.principal import ApiKeyInfo, CreatedKey, Principal, Role
from safecity.warning import cap
from safecity.warning.alert_views import Alert, AlertPage, FeedPage
from safecity.warning.model import AlertState, Category, Severity
from safecity.warning.notify.subscriptions import (
    Subscription,
    SubscriptionCreate,
    SubscriptionFilter,
    SubscriptionPatch,
)
from safecity.warning.rules import RulePack

Row = dict[str, Any]

# --- node ------------------------------------------------------------------------------------------------------


class Lifecycle(Protocol):
    """What the app's lifespan starts and stops (the node behind the API)."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


ReadinessProbe = Callable[[], Awaitable[Readiness]]
"""`/readyz`: the node's one readiness function."""

MetricsText = Callable[[], bytes]
"""`/metrics`: the Prometheus text exposition, read at scrape time."""


# --- sharing: keys and the principal ---------------------------------------------------------------------------


class Keys(Protocol):
    """API keys: verify a caller's key; create, list, read and revoke keys (admin)."""

    async def verify(self, key: str) -> Principal | None: ...

    async def create(self, name: str, role: Role) -> CreatedKey: ...

    async def list(self) -> list[ApiKeyInfo]: ...

    async def get(self, key_id: str) -> ApiKeyInfo: ...

    async def revoke(self, key_id: str) -> ApiKeyInfo: ...


# --- sensing ---------------------------------------------------------------------------------------------------


class EventQueries(Protocol):
    """Stored events (rows of `events`): filtered pages newest first, one by id, counts by kind."""

    async def list(
        self,
        *,
        kind: str | None = ...,
        device_id: str | None = ...,
        district: str | None = ...,
        town: str | None = ...,
        community: str | None = ...,
        building: str | None = ...,
        since: datetime | None = ...,
        until: datetime | None = ...,
        limit: int = ...,
        after_id: str | None = ...,
    ) -> list[Row]: ...

    async def get(self, event_id: str) -> Row | None: ...

    async def count_by_kind(self) -> dict[str, int]: ...


class DeadLetterQueries(Protocol):
    """Refused inputs (rows of `dead_letters`): pages newest first, one by id, counts by reason."""

    async def list(
        self,
        *,
        reason: str | None = ...,
        since: datetime | None = ...,
        limit: int = ...,
        after_id: str | None = ...,
    ) -> list[Row]: ...

    async def get(self, dead_letter_id: str) -> Row | None: ...

    async def count_by_reason(self) -> dict[str, int]: ...


class Intake(Protocol):
    """HTTP batch ingest: back-pressure first, then each line through the ingest pipeline, then durability."""

    def pressure(self) -> str | None: ...

    def refused(self, cause: str) -> None: ...

    async def ingest(self, raw: bytes, *, fmt: str, source: str) -> IngestResult: ...

    async def settle(self, results: Iterable[IngestResult]) -> None: ...


class Devices(Protocol):
    """The device registry."""

    async def list(
        self,
        *,
        kind: DeviceKind | None = ...,
        town: str | None = ...,
        community: str | None = ...,
        status: DeviceStatus | None = ...,
        limit: int = ...,
        offset: int = ...,
    ) -> DevicePage: ...

    async def create(self, device: DeviceIn) -> Device: ...

    async def get(self, device_id: str) -> Device: ...

    async def update(self, device_id: str, patch: DevicePatch) -> Device: ...

    async def delete(self, device_id: str) -> None: ...

    async def import_csv(self, text: str, *, mode: ImportMode = ..., locale: str = ...) -> ImportReport: ...

    async def import_geojson(
        self, data: str | bytes | dict[str, Any], *, mode: ImportMode = ..., locale: str = ...
    ) -> ImportReport: ...


# --- warning: alerts, rules, notify ----------------------------------------------------------------------------


class Alerts(Protocol):
    """Alert reads, the lifecycle steps people take, CAP per alert and the public CAP feed."""

    @property
    def sender(self) -> str: ...

    async def list(
        self,
        *,
        state: AlertState | None = ...,
        severity: Severity | None = ...,
        category: Category | None = ...,
        town: str | None = ...,
        community: str | None = ...,
        since: datetime | None = ...,
        limit: int = ...,
        offset: int = ...,
    ) -> AlertPage: ...

    async def get(self, alert_id: str) -> Alert: ...

    async def acknowledge(self, alert_id: str, actor: str, feedback: str | None = ...) -> Alert: ...

    async def assign(self, alert_id: str, actor: str, assignee: str, feedback: str | None = ...) -> Alert: ...

    async def resolve(self, alert_id: str, actor: str, feedback: str) -> Alert: ...

    async def cancel(self, alert_id: str, actor: str, reason: str) -> Alert: ...

    async def cap_of(self, alert_id: str) -> cap.CapAlert: ...

    async def public_cap_of(self, alert_id: str, *, id_of: Callable[[str], str]) -> cap.CapAlert: ...

    async def feed(
        self,
        *,
        id_of: Callable[[str], str] = ...,
        before: tuple[datetime, str] | None = ...,
        after: tuple[datetime, str] | None = ...,
        limit: int = ...,
    ) -> FeedPage: ...


class RunningPack(Protocol):
    """The rule engine's running pack."""

    @property
    def pack(self) -> RulePack: ...


class RuleEngine(Protocol):
    """The running rule engine: read its pack, swap in a new one (open windows of unchanged rules carry over)."""

    @property
    def engine(self) -> RunningPack: ...

    def reload(self, pack: RulePack, /) -> None: ...


RuleParser = Callable[[str, str], RulePack]
"""Parse a rule pack's YAML text (`text, source`) the way the node loads packs; raises `RuleError`."""


class LiveClient(Protocol):
    """One live-alert connection: messages to send wait in its queue."""

    @property
    def id(self) -> str: ...

    @property
    def queue(self) -> asyncio.Queue[dict[str, Any]]: ...


C = TypeVar("C", bound=LiveClient)


class LiveHub(Protocol[C]):
    """Where live connections join and leave."""

    def connect(self, flt: SubscriptionFilter, *, subscription_id: str | None = ..., actor: str = ...) -> C: ...

    def disconnect(self, client: C) -> None: ...


class Waker(Protocol):
    """Something to nudge (the outbox dispatcher: a client of a stored subscription is back)."""

    def wake(self) -> None: ...


class Notify(Protocol):
    """Subscriptions, their outbox deliveries, and the live-alert hub."""

    @property
    def hub(self) -> LiveHub[Any]: ...

    @property
    def dispatcher(self) -> Waker: ...

    async def create(self, data: SubscriptionCreate) -> tuple[Subscription, str | None]: ...

    def subscriptions(self) -> list[Subscription]: ...

    def get(self, sub_id: str) -> Subscription: ...

    async def update(self, sub_id: str, patch: SubscriptionPatch) -> Subscription: ...

    async def delete(self, sub_id: str) -> Subscription: ...

    async def deliveries(
        self,
        *,
        subscription_id: str | None = ...,
        alert_id: str | None = ...,
        state: str | None = ...,
        limit: int = ...,
    ) -> list[dict[str, Any]]: ...


# --- geo: places and roads -------------------------------------------------------------------------------------


class Places(Protocol):
    """The place hierarchy and the point tagger over it."""

    @property
    def tree(self) -> PlaceTree: ...

    def tag(self, lon: float, lat: float) -> PlaceTags: ...


class Roads(Protocol):
    """Road-network queries (travel times, nearest units, matrix, isochrones, coverage), conditions and tiles."""

    @property
    def network(self) -> RoadNetwork: ...

    async def info(self) -> dict[str, Any]: ...

    async def snap(self, point: Point) -> Snap: ...

    async def travel_time(self, a: Point, b: Point, *, with_path: bool = ...) -> Route: ...

    async def nearest_units(
        self, point: Point, units: Mapping[str, Point], k: int = ..., *, with_path: bool = ...
    ) -> list[UnitEta]: ...

    async def rank_units(
        self, units: Mapping[str, Point], target: Point, *, k: int | None = ..., with_path: bool = ...
    ) -> Ranking: ...

    async def matrix(self, origins: Sequence[Point], targets: Sequence[Point]) -> npt.NDArray[np.float64]: ...

    async def isochrones(
        self, point: Point, minutes: Iterable[float] = ..., *, polygon: bool = ...
    ) -> list[Isochrone]: ...

    async def coverage(self, units: Mapping[str, Point]) -> Coverage: ...

    async def road_edges(self, edge_id: int) -> list[int]: ...

    async def conditions(self) -> ConditionsSummary: ...

    async def set_speed_factor(self, edge_ids: Iterable[int], factor: float) -> ConditionsSummary: ...

    async def close_edges(self, edge_ids: Iterable[int]) -> ConditionsSummary: ...

    async def reopen_edges(self, edge_ids: Iterable[int]) -> ConditionsSummary: ...

    async def clear_conditions(self) -> ConditionsSummary: ...

    async def edges_geojson(self, bbox: tuple[float, float, float, float], limit: int = ...) -> dict[str, Any]: ...

    async def tile(self, z: int, x: int, y: int) -> bytes | None: ...

    async def tile_metadata(self) -> dict[str, str]: ...


# --- dispatch --------------------------------------------------------------------------------------------------


class Dispatch(Protocol):
    """Incidents, their lifecycle, responders, positions, recommendations, SLA timers, KPIs and task links."""

    async def open(self, draft: IncidentDraft, *, actor: str, now: datetime | None = ...) -> Opened: ...

    async def get(self, incident_id: str) -> Incident: ...

    async def list(
        self,
        *,
        stages: Iterable[Stage] | None = ...,
        town: str | None = ...,
        type: str | None = ...,
        since: datetime | None = ...,
        until: datetime | None = ...,
        limit: int = ...,
        offset: int = ...,
    ) -> tuple[builtins.list[Incident], int]: ...

    async def history(self, incident_id: str) -> builtins.list[StepRecord]: ...

    async def assignments(self, incident_id: str) -> builtins.list[Row]: ...

    async def act(self, incident_id: str, step: StepIn, *, actor: str, now: datetime | None = ...) -> Incident: ...

    async def recommend(
        self, incident_id: str, *, now: datetime | None = ..., routes: int = ...
    ) -> builtins.list[Ranked]: ...

    async def dispatch_best(self, incident_id: str, *, actor: str, now: datetime | None = ...) -> Incident: ...

    def timers(self, incident: Incident) -> builtins.list[Timer]: ...

    async def kpis(
        self, *, since: datetime, until: datetime, group: str = ...
    ) -> dict[str | None, dict[str, Summary]]: ...

    async def responders(self, ids_: Iterable[str] | None = ...) -> builtins.list[Responder]: ...

    async def responder(self, responder_id: str) -> Responder: ...

    async def import_responders(
        self, rows: Sequence[ResponderIn], issues: Iterable[ImportIssue] = ..., *, mode: ImportMode = ...
    ) -> ImportReport: ...

    async def report_position(
        self,
        responder_id: str,
        lon: float,
        lat: float,
        *,
        fix_at: datetime | None = ...,
        heading: float | None = ...,
        now: datetime | None = ...,
    ) -> ResponderMoved: ...

    async def set_status(
        self, responder_id: str, status: ResponderStatus, *, actor: str, now: datetime | None = ...
    ) -> Responder: ...

    def task_link(self, incident_id: str, responder_id: str, *, now: datetime | None = ...) -> str: ...

    async def offer_task(
        self, incident_id: str, responder_id: str, *, actor: str, now: datetime | None = ...
    ) -> TaskSent: ...

    async def task_view(self, token: str, *, now: datetime | None = ...) -> TaskView: ...

    async def act_by_link(
        self, token: str, action: str, *, outcome: str | None = ..., now: datetime | None = ...
    ) -> Incident: ...


class Open311(Protocol):
    """The GeoReport v2 server: services, definitions, requests and the department's status updates."""

    def services(self) -> list[Service]: ...

    def definition(self, service_code: str) -> ServiceDefinition: ...

    async def create(self, form: Mapping[str, Sequence[str]], *, actor: str) -> list[dict[str, Any]]: ...

    async def request(self, request_id: str) -> ServiceRequest: ...

    async def requests(
        self,
        *,
        ids: Sequence[str] = ...,
        service_codes: Sequence[str] = ...,
        start: datetime | None = ...,
        end: datetime | None = ...,
        statuses: Sequence[str] = ...,
    ) -> list[ServiceRequest]: ...

    async def update(self, request_id: str, *, status: str, notes: str | None, agency: str) -> ServiceRequest: ...


# --- the container ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ApiServices:
    """Everything the HTTP API uses, one port a need. `rules` is None when the rule engine is off; `places` is None
    when the node runs without place boundaries."""

    settings: Settings
    lifecycle: Lifecycle
    readiness: ReadinessProbe
    metrics: MetricsText
    keys: Keys
    events: EventQueries
    dead_letters: DeadLetterQueries
    intake: Intake
    devices: Devices
    alerts: Alerts
    notify: Notify
    rules: RuleEngine | None
    parse_rules: RuleParser
    places: Places | None
    roads: Roads
    dispatch: Dispatch
    open311: Open311
