"""Typed FastAPI dependencies: one `Annotated[Port, Depends(...)]` alias a port, for route parameters.

    async def list_events(events: EventsDep, ...) -> EventPage:
        rows = await events.list(...)

Each provider reads the app's `ApiServices` (set by `create_app`); a test overrides one provider
(`app.dependency_overrides[deps.event_queries] = lambda: fake`) to mount a router with a fake port.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends
from starlette.requests import HTTPConnection

from safecity.api.ports import (
    Alerts,
    ApiServices,
    DeadLetterQueries,
    Devices,
    Dispatch,
    EventQueries,
    Intake,
    Keys,
    MetricsText,
    Notify,
    Open311,
    Places,
    ReadinessProbe,
    Roads,
    RuleEngine,
    RuleParser,
)
from safecity.kernel.settings import Settings

# The providers are `async def` although they only read an attribute: FastAPI runs a plain `def` dependency in its
# thread pool, two thread hops per request for nothing (about a millisecond of a recommendation's p50 on 2 cores).


def services(conn: HTTPConnection) -> ApiServices:
    """The app's services (HTTP requests and WebSockets alike)."""
    found: ApiServices = conn.app.state.services
    return found


async def settings(conn: HTTPConnection) -> Settings:
    """The node's settings."""
    return services(conn).settings


async def readiness_probe(conn: HTTPConnection) -> ReadinessProbe:
    """The node's readiness function."""
    return services(conn).readiness


async def metrics_text(conn: HTTPConnection) -> MetricsText:
    """The node's metrics exposition."""
    return services(conn).metrics


async def keys(conn: HTTPConnection) -> Keys:
    """API keys."""
    return services(conn).keys


async def event_queries(conn: HTTPConnection) -> EventQueries:
    """Stored events."""
    return services(conn).events


async def dead_letter_queries(conn: HTTPConnection) -> DeadLetterQueries:
    """Dead letters."""
    return services(conn).dead_letters


async def intake(conn: HTTPConnection) -> Intake:
    """HTTP batch ingest."""
    return services(conn).intake


async def devices(conn: HTTPConnection) -> Devices:
    """The device registry."""
    return services(conn).devices


async def alerts(conn: HTTPConnection) -> Alerts:
    """Alerts and the CAP feed."""
    return services(conn).alerts


async def rule_engine(conn: HTTPConnection) -> RuleEngine | None:
    """The running rule engine, or None when it is off."""
    return services(conn).rules


async def rule_parser(conn: HTTPConnection) -> RuleParser:
    """Parse a rule pack the way the node loads one."""
    return services(conn).parse_rules


async def notify(conn: HTTPConnection) -> Notify:
    """Subscriptions, deliveries and the live hub."""
    return services(conn).notify


async def places(conn: HTTPConnection) -> Places | None:
    """The place index, or None when the node runs without boundaries."""
    return services(conn).places


async def roads(conn: HTTPConnection) -> Roads:
    """Road-network queries and tiles."""
    return services(conn).roads


async def dispatch(conn: HTTPConnection) -> Dispatch:
    """Incidents, responders and recommendations."""
    return services(conn).dispatch


async def open311(conn: HTTPConnection) -> Open311:
    """The GeoReport v2 server."""
    return services(conn).open311


SettingsDep = Annotated[Settings, Depends(settings)]
ReadinessDep = Annotated[ReadinessProbe, Depends(readiness_probe)]
MetricsDep = Annotated[MetricsText, Depends(metrics_text)]
KeysDep = Annotated[Keys, Depends(keys)]
EventsDep = Annotated[EventQueries, Depends(event_queries)]
DeadLettersDep = Annotated[DeadLetterQueries, Depends(dead_letter_queries)]
IntakeDep = Annotated[Intake, Depends(intake)]
DevicesDep = Annotated[Devices, Depends(devices)]
AlertsDep = Annotated[Alerts, Depends(alerts)]
RuleEngineDep = Annotated[RuleEngine | None, Depends(rule_engine)]
RuleParserDep = Annotated[RuleParser, Depends(rule_parser)]
NotifyDep = Annotated[Notify, Depends(notify)]
PlacesDep = Annotated[Places | None, Depends(places)]
RoadsDep = Annotated[Roads, Depends(roads)]
DispatchDep = Annotated[Dispatch, Depends(dispatch)]
Open311Dep = Annotated[Open311, Depends(open311)]
