"""The Open311 GeoReport v2 server's use cases: the services departments handle (from the triage table), service
definitions, new requests (each one an incident diverted to its department), request lookups, and the department's
status updates flowing back into the incident.

A request's `service_request_id` is its incident's id. Departments read their requests with GET requests and report
their outcome with our extension `POST requests/{id}.json` (`status`, `status_notes`; GeoReport v2 defines no update
call); a `closed` status closes the incident with the department's notes as its feedback.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError

from safecity.dispatch.incident import IncidentDraft
from safecity.dispatch.open311 import (
    NewRequest,
    Open311Error,
    RequestStatus,
    Service,
    ServiceDefinition,
    ServiceRequest,
    definition_of,
    parse_post,
)
from safecity.dispatch.service import DispatchService
from safecity.kernel import clock
from safecity.kernel.dispatch_settings import Route
from safecity.store.engine import write_transaction
from safecity.store.incidents import IncidentRepo

DEFAULT_WINDOW = timedelta(days=90)  # the spec's default for GET requests without dates
MAX_REQUESTS = 1000


class Open311Service:
    """GeoReport v2 over the dispatch slice."""

    def __init__(self, dispatch: DispatchService) -> None:
        self.dispatch = dispatch
        self._types: dict[str, str] = {}
        self._services: dict[str, Service] = {}
        for incident_type, rule in dispatch.settings.triage.types.items():
            if rule.route is Route.DEPARTMENT and rule.service_code and rule.service_code not in self._services:
                self._types[rule.service_code] = incident_type
                self._services[rule.service_code] = Service(
                    service_code=rule.service_code,
                    service_name=incident_type.replace("_", " "),
                    description=f"{incident_type.replace('_', ' ')} ({rule.department})",
                    group=rule.department or "",
                    keywords=incident_type,
                )

    def services(self) -> list[Service]:
        """Every service, by code."""
        return [self._services[code] for code in sorted(self._services)]

    def definition(self, service_code: str) -> ServiceDefinition:
        """GET services/{code}; 404 in the spec's error format when there is no such service."""
        service = self._services.get(service_code)
        if service is None:
            raise Open311Error([(404, f"service_code {service_code[:64]!r} is not a service here")], status=404)
        return definition_of(service)

    async def create(self, form: Mapping[str, Sequence[str]], *, actor: str) -> list[dict[str, Any]]:
        """POST requests: validate, open the incident (diverted to its department at once), return its id."""
        new = parse_post(form, self._services)
        phone = new.personal.get("phone")
        try:
            draft = self._draft(new, phone)
        except ValidationError as err:
            raise Open311Error([(400, f"{'.'.join(map(str, e['loc']))}: {e['msg']}") for e in err.errors()]) from None
        opened = await self.dispatch.open(draft, actor=actor)
        incident_id = opened.incident.id
        async with write_transaction(self.dispatch.engine) as conn:
            await IncidentRepo(conn).update_request(
                incident_id, {"attributes": new.attributes, "media_url": new.media_url}
            )
        return [{"service_request_id": incident_id, "service_notice": None, "account_id": None}]

    def _draft(self, new: NewRequest, phone: str | None) -> IncidentDraft:
        return IncidentDraft(
            type=self._types[new.service_code],
            origin="report",
            summary=(new.description or "")[:2000],
            lon=new.long,
            lat=new.lat,
            address=new.address_string or new.address_id,
            caller=phone if phone and phone.replace(" ", "").lstrip("+").replace("-", "").isdigit() else None,
        )

    def _document(self, row: dict[str, Any]) -> ServiceRequest:
        service = self._services.get(row["service_code"])
        return ServiceRequest(
            service_request_id=row["id"],
            status=RequestStatus(row["status"]),
            status_notes=row["status_notes"],
            service_name=service.service_name if service is not None else row["service_code"],
            service_code=row["service_code"],
            description=row["description"],
            agency_responsible=row["agency_responsible"],
            service_notice=row["service_notice"],
            requested_datetime=row["requested_at"],
            updated_datetime=row["updated_at"],
            expected_datetime=row["expected_at"],
            address=row["address"],
            lat=row["lat"],
            long=row["lon"],
            media_url=row["media_url"],
        )

    async def request(self, request_id: str) -> ServiceRequest:
        """GET requests/{id}; 404 in the spec's format when unknown."""
        async with self.dispatch.engine.connect() as conn:
            row = await IncidentRepo(conn).request(request_id)
        if row is None:
            raise Open311Error([(404, f"service_request_id {request_id[:64]!r} not found")], status=404)
        return self._document(row)

    async def requests(
        self,
        *,
        ids: Sequence[str] = (),
        service_codes: Sequence[str] = (),
        start: datetime | None = None,
        end: datetime | None = None,
        statuses: Sequence[str] = (),
    ) -> list[ServiceRequest]:
        """GET requests: by ids (then every other filter is ignored, as the spec says), or by service codes, status
        and dates (default: the last 90 days), newest first, at most 1,000."""
        bad = [s for s in statuses if s not in ("open", "closed")]
        if bad:
            raise Open311Error([(400, f"status must be open or closed, not {bad[0][:20]!r}")])
        async with self.dispatch.engine.connect() as conn:
            repo = IncidentRepo(conn)
            if ids:
                rows = [r for i in ids[:MAX_REQUESTS] if (r := await repo.request(i)) is not None]
            else:
                end = end or clock.now()
                start = start or end - DEFAULT_WINDOW
                if start > end:
                    raise Open311Error([(400, "start_date is after end_date")])
                rows = await repo.requests(
                    service_codes=list(service_codes) or None,
                    status=statuses[0] if len(statuses) == 1 else None,
                    since=start,
                    until=end,
                    limit=MAX_REQUESTS,
                )
        return [self._document(r) for r in rows]

    async def update(self, request_id: str, *, status: str, notes: str | None, agency: str) -> ServiceRequest:
        """The department's outcome (our extension): the status and notes; `closed` closes the incident."""
        if status not in ("open", "closed"):
            raise Open311Error([(400, f"status must be open or closed, not {status[:20]!r}")])
        if notes is not None and len(notes) > 4000:
            raise Open311Error([(400, "status_notes is longer than 4000 characters")])
        await self.request(request_id)  # 404 in the spec's format
        await self.dispatch.department_update(request_id, status=status, notes=notes, agency=agency)
        return await self.request(request_id)
