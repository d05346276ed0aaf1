"""Device registry use cases (create, read, list, update, delete, bulk import) and the hot-path device index."""

from __future__ import annotations

import asyncio
import builtins
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog
from pydantic import ValidationError
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from safecity.kernel import clock
from safecity.kernel.errors import InvalidInput
from safecity.kernel.heap import settle_heap
from safecity.kernel.tabular import ImportIssue, ImportMode, ImportReport, validation_reason
from safecity.sensing.devices import (
    Device,
    DeviceExists,
    DeviceIn,
    DeviceNotFound,
    DevicePage,
    DevicePatch,
    parse_csv,
    parse_geojson,
)
from safecity.sensing.model import DeviceKind, DeviceStatus
from safecity.store.devices import DeviceRepo
from safecity.store.engine import write_transaction

log = structlog.get_logger(__name__)


class DeviceInvalid(InvalidInput):
    """An update would leave the device invalid."""

    code = "device.invalid"
    message_en = "The device would not be valid: {en}"
    message_zh = "设备数据将无效：{zh}"


MAX_PAGE = 1000
LAST_SEEN_CHUNK = 5000  # rows per last-seen transaction (on SQLite one statement, run in the driver's thread)
SETTLE_AFTER_DEVICES = 1000


@dataclass(slots=True)
class DeviceInfo:
    """What the ingest hot path needs about one device (no I/O to get it)."""

    kind: str
    town: str | None
    community: str | None
    building: str | None
    lon: float | None
    lat: float | None
    offline_after_s: float | None
    status: str = DeviceStatus.ACTIVE.value
    last_seen: datetime | None = None


class DeviceIndex:
    """In-memory `{device id: DeviceInfo}`; loaded at start, updated by every registry write."""

    def __init__(self) -> None:
        self._items: dict[str, DeviceInfo] = {}

    def get(self, device_id: str) -> DeviceInfo | None:
        """Return a device's info, or None when it is not registered."""
        return self._items.get(device_id)

    def put(self, device_id: str, info: DeviceInfo) -> None:
        """Add or replace one device."""
        self._items[device_id] = info

    def remove(self, device_id: str) -> None:
        """Forget one device (no error when absent)."""
        self._items.pop(device_id, None)

    def replace(self, items: dict[str, DeviceInfo]) -> None:
        """Swap in a whole new content (one assignment, so readers never see a half-loaded index)."""
        self._items = items

    def ids(self) -> Iterator[str]:
        """Iterate over registered ids (a snapshot: safe while the index changes)."""
        return iter(builtins.list(self._items))

    def items(self) -> Iterator[tuple[str, DeviceInfo]]:
        """Iterate over (id, info) pairs (a snapshot: safe while the index changes)."""
        return iter(builtins.list(self._items.items()))

    def __contains__(self, device_id: object) -> bool:
        return device_id in self._items

    def __len__(self) -> int:
        return len(self._items)


def info_of(values: dict[str, Any] | DeviceIn) -> DeviceInfo:
    """Build the index entry of a device row or model."""
    get = values.get if isinstance(values, dict) else values.__dict__.get
    return DeviceInfo(
        kind=str(get("kind")),
        town=get("town"),
        community=get("community"),
        building=get("building"),
        lon=get("lon"),
        lat=get("lat"),
        offline_after_s=get("offline_after_s"),
        status=str(get("status") or DeviceStatus.ACTIVE.value),
        last_seen=get("last_seen"),
    )


def _columns(device: DeviceIn) -> dict[str, Any]:
    values = device.model_dump(mode="json")
    values["kind"] = str(device.kind)
    values["status"] = str(device.status)
    return values


class DeviceService:
    """The device registry: every write goes to the database first, then to the in-memory index."""

    def __init__(self, engine: AsyncEngine, index: DeviceIndex | None = None) -> None:
        self.engine = engine
        self.index = index if index is not None else DeviceIndex()

    async def load_index(self) -> int:
        """(Re)load the index from the database; return the number of devices."""
        async with self.engine.connect() as conn:
            rows = await DeviceRepo(conn).all_for_index()
        self.index.replace({row["id"]: info_of(row) for row in rows})
        log.info("device_index_loaded", devices=len(rows))
        return len(rows)

    async def create(self, device: DeviceIn) -> Device:
        """Register a device; DeviceExists when the id is taken."""
        now = clock.now()
        row = {**_columns(device), "last_seen": None, "created_at": now, "updated_at": now}
        try:
            async with write_transaction(self.engine) as conn:
                repo = DeviceRepo(conn)
                if await repo.get(device.id) is not None:
                    raise DeviceExists(what="device", id=device.id)
                await repo.insert([row])
        except IntegrityError as err:
            # A concurrent create won the race between our check and insert.
            raise DeviceExists(what="device", id=device.id) from err
        self.index.put(device.id, info_of(device))
        log.info("device_created", device_id=device.id, kind=str(device.kind))
        return Device.model_validate(row)

    async def get(self, device_id: str) -> Device:
        """Return one device; DeviceNotFound when absent."""
        async with self.engine.connect() as conn:
            row = await DeviceRepo(conn).get(device_id)
        if row is None:
            raise DeviceNotFound(what="device", id=device_id)
        return Device.model_validate(row)

    async def list(
        self,
        *,
        kind: DeviceKind | None = None,
        town: str | None = None,
        community: str | None = None,
        status: DeviceStatus | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> DevicePage:
        """Return one page of devices (ordered by id) matching the filters."""
        limit = max(1, min(limit, MAX_PAGE))
        offset = max(0, offset)
        async with self.engine.connect() as conn:
            rows, total = await DeviceRepo(conn).list(
                kind=str(kind) if kind is not None else None,
                town=town,
                community=community,
                status=str(status) if status is not None else None,
                limit=limit,
                offset=offset,
            )
        return DevicePage(items=[Device.model_validate(r) for r in rows], total=total, limit=limit, offset=offset)

    async def update(self, device_id: str, patch: DevicePatch) -> Device:
        """Apply a partial update; DeviceNotFound when absent, InvalidInput when the result is not valid."""
        changes = patch.changes()
        async with write_transaction(self.engine) as conn:
            repo = DeviceRepo(conn)
            row = await repo.get(device_id)
            if row is None:
                raise DeviceNotFound(what="device", id=device_id)
            merged = {k: v for k, v in {**row, **changes}.items() if k in DeviceIn.model_fields}
            try:
                checked = DeviceIn.model_validate(merged)
            except ValidationError as err:
                raise DeviceInvalid(en=validation_reason(err, "en"), zh=validation_reason(err, "zh-CN")) from err
            values = {**_columns(checked), "updated_at": clock.now()}
            del values["id"]
            await repo.update(device_id, values)
            row.update(values)
        self.index.put(device_id, info_of(row))
        log.info("device_updated", device_id=device_id, fields=sorted(changes))
        return Device.model_validate(row)

    async def delete(self, device_id: str) -> None:
        """Remove a device; DeviceNotFound when absent."""
        async with write_transaction(self.engine) as conn:
            if not await DeviceRepo(conn).delete(device_id):
                raise DeviceNotFound(what="device", id=device_id)
        self.index.remove(device_id)
        log.info("device_deleted", device_id=device_id)

    async def bulk_import(
        self,
        rows: Sequence[DeviceIn],
        errors: Iterable[ImportIssue] = (),
        *,
        mode: ImportMode = ImportMode.VALID_ONLY,
    ) -> ImportReport:
        """Create or update many devices in one transaction.

        `errors` are the parser's refused rows: with ALL_OR_NOTHING any of them means nothing is written.
        """
        issues = builtins.list(errors)
        if mode is ImportMode.ALL_OR_NOTHING and issues:
            return ImportReport(mode=mode, applied=False, errors=issues)
        now = clock.now()
        by_id = {row.id: row for row in rows}  # a repeated id: the last row wins
        async with write_transaction(self.engine) as conn:
            repo = DeviceRepo(conn)
            existing = await repo.existing_ids(by_id)
            new_rows = [
                {**_columns(d), "last_seen": None, "created_at": now, "updated_at": now}
                for i, d in by_id.items()
                if i not in existing
            ]
            await repo.insert(new_rows)
            changed = [{**_columns(by_id[i]), "updated_at": now} for i in existing]
            await repo.update_many(changed)
        for device in by_id.values():
            previous = self.index.get(device.id)
            info = info_of(device)
            if previous is not None:
                info.last_seen = previous.last_seen
            self.index.put(device.id, info)
        report = ImportReport(mode=mode, applied=True, created=len(new_rows), updated=len(changed), errors=issues)
        log.info("devices_imported", created=report.created, updated=report.updated, errors=len(issues))
        if report.created + report.updated >= SETTLE_AFTER_DEVICES:
            settle_heap()  # the new index entries live on: keep them out of full GC passes
        return report

    async def upsert_many(
        self, devices: Iterable[DeviceIn | dict[str, Any]], *, mode: ImportMode = ImportMode.ALL_OR_NOTHING
    ) -> ImportReport:
        """Create or update devices given as models or plain dicts (validated here); bad dicts are reported."""
        rows: builtins.list[DeviceIn] = []
        issues: builtins.list[ImportIssue] = []
        for position, item in enumerate(devices):
            if isinstance(item, DeviceIn):
                rows.append(item)
                continue
            try:
                rows.append(DeviceIn.model_validate(item))
            except ValidationError as err:
                issues.append(ImportIssue(feature=position, id=str(item.get("id")), reason=validation_reason(err)))
        return await self.bulk_import(rows, issues, mode=mode)

    async def mark_seen(self, seen: dict[str, datetime]) -> int:
        """Persist when devices were last heard from (e.g. flushed periodically); return rows updated."""
        known = {d: at for d, at in seen.items() if d in self.index}
        if not known:
            return 0
        items = list(known.items())
        for start in range(0, len(items), LAST_SEEN_CHUNK):
            if start:
                await asyncio.sleep(0)  # tens of thousands of rows in one go held the event loop for half a second
            async with write_transaction(self.engine) as conn:
                await DeviceRepo(conn).set_last_seen(dict(items[start : start + LAST_SEEN_CHUNK]))
        for device_id, at in known.items():
            info = self.index.get(device_id)
            if info is not None:
                info.last_seen = at
        return len(known)

    async def set_online(self, changes: dict[str, bool]) -> int:
        """Write devices' health to the registry: `offline` for True, `active` for False; return rows updated.

        Only devices the registry holds as active or offline change: maintenance and retired stay as set.
        """
        rows: builtins.list[dict[str, Any]] = []
        for device_id, offline in changes.items():
            info = self.index.get(device_id)
            if info is None or info.status not in (DeviceStatus.ACTIVE, DeviceStatus.OFFLINE):
                continue
            status = DeviceStatus.OFFLINE if offline else DeviceStatus.ACTIVE
            if info.status != status:
                rows.append({"id": device_id, "status": status.value, "updated_at": clock.now()})
        if not rows:
            return 0
        async with write_transaction(self.engine) as conn:
            await DeviceRepo(conn).update_many(rows)
        for row in rows:
            info = self.index.get(row["id"])
            if info is not None:
                info.status = row["status"]
        log.info("device_status_changed", offline=sum(r["status"] == "offline" for r in rows), devices=len(rows))
        return len(rows)

    async def import_csv(
        self, text: str, *, mode: ImportMode = ImportMode.VALID_ONLY, locale: str = "en"
    ) -> ImportReport:
        """Parse a device CSV and import it (row reasons in `locale`)."""
        rows, issues = parse_csv(text, locale)
        return await self.bulk_import(rows, issues, mode=mode)

    async def import_geojson(
        self, data: str | bytes | dict[str, Any], *, mode: ImportMode = ImportMode.VALID_ONLY, locale: str = "en"
    ) -> ImportReport:
        """Parse a GeoJSON FeatureCollection of devices and import it (row reasons in `locale`)."""
        rows, issues = parse_geojson(data, locale)
        return await self.bulk_import(rows, issues, mode=mode)
