"""Device registry routes: list, create, read, update, delete, and CSV / GeoJSON bulk import."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response

from safecity.api.auth import Role, require
from safecity.api.deps import DevicesDep
from safecity.api.problems import PROBLEM_RESPONSES, UnsupportedMediaType, request_locale
from safecity.api.uploads import CSV_TYPES, GEOJSON_TYPES, MULTIPART, ImportRejected, import_body, upload
from safecity.kernel.errors import InvalidInput
from safecity.kernel.tabular import ImportMode, ImportReport
from safecity.sensing.devices import (
    CSV_COLUMNS,
    DEVICE_ID_PATTERN,
    Device,
    DeviceIn,
    DevicePage,
    DevicePatch,
    decode_csv,
)
from safecity.sensing.model import DeviceKind, DeviceStatus

READ = require(Role.OPERATOR, Role.DISPATCHER, Role.RESPONDER, Role.READER)
WRITE = require(Role.OPERATOR)

_FILTER = r"^[^\x00-\x1f\x7f]*$"

router = APIRouter(prefix="/api/v1/devices", tags=["devices"], responses=PROBLEM_RESPONSES)


class DeviceImportRejected(ImportRejected):
    """An all-or-nothing import had bad rows, so nothing was written."""

    code = "device.import_rejected"


class DeviceUploadMissing(InvalidInput):
    """A multipart import carried no file."""

    code = "device.upload_missing"
    title_en = "No file uploaded"
    title_zh = "未上传文件"
    message_en = "The form has no file: send it as the field `file` (curl -F file=@devices.csv)."
    message_zh = "表单中没有文件：请以字段 `file` 上传（curl -F file=@devices.csv）。"


DeviceId = Annotated[str, Path(pattern=DEVICE_ID_PATTERN, description="Device id.")]


@router.get("", response_model=DevicePage, dependencies=[READ], summary="List devices")
async def list_devices(
    devices: DevicesDep,
    kind: DeviceKind | None = None,
    town: str | None = Query(None, max_length=64, pattern=_FILTER),
    community: str | None = Query(None, max_length=64, pattern=_FILTER),
    status: DeviceStatus | None = None,
    limit: int = Query(100, ge=1, le=1000),
    offset: int = Query(0, ge=0, le=100_000_000),
) -> DevicePage:
    """Return one page of devices, ordered by id, with the total that match."""
    return await devices.list(kind=kind, town=town, community=community, status=status, limit=limit, offset=offset)


@router.post("", response_model=Device, status_code=201, dependencies=[WRITE], summary="Register a device")
async def create_device(body: DeviceIn, devices: DevicesDep, response: Response) -> Device:
    """Register one device; 409 when the id is taken."""
    device = await devices.create(body)
    response.headers["Location"] = f"{router.prefix}/{device.id}"
    return device


@router.post(
    "/import",
    response_model=ImportReport,
    dependencies=[WRITE],
    openapi_extra=import_body(CSV_COLUMNS, "device"),
    summary="Bulk import devices (CSV or GeoJSON)",
)
async def import_devices(
    request: Request, devices: DevicesDep, mode: ImportMode = ImportMode.VALID_ONLY
) -> ImportReport:
    """Create or update many devices; `all_or_nothing` writes nothing (422) when any row is bad."""
    content_type, charset, body = await upload(request, DeviceUploadMissing)
    if content_type in CSV_TYPES:
        report = await devices.import_csv(decode_csv(body, charset), mode=mode, locale=request_locale(request))
    elif content_type in GEOJSON_TYPES:
        report = await devices.import_geojson(body, mode=mode, locale=request_locale(request))
    else:
        raise UnsupportedMediaType(
            got=content_type or "(none)", accepted=", ".join((*CSV_TYPES, *GEOJSON_TYPES, MULTIPART))
        )
    if not report.applied:
        raise DeviceImportRejected(report)
    return report


@router.get("/{device_id}", response_model=Device, dependencies=[READ], summary="Get a device")
async def get_device(devices: DevicesDep, device_id: DeviceId) -> Device:
    """Return one device."""
    return await devices.get(device_id)


@router.patch("/{device_id}", response_model=Device, dependencies=[WRITE], summary="Update a device")
async def update_device(body: DevicePatch, devices: DevicesDep, device_id: DeviceId) -> Device:
    """Change some fields of a device (null clears an optional field)."""
    return await devices.update(device_id, body)


@router.delete("/{device_id}", status_code=204, dependencies=[WRITE], summary="Delete a device")
async def delete_device(devices: DevicesDep, device_id: DeviceId) -> Response:
    """Remove a device from the registry."""
    await devices.delete(device_id)
    return Response(status_code=204)
