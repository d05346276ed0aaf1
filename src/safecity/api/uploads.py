"""Registry file uploads shared by the bulk-import routes (devices, responders): the raw body or the `file` part of a
multipart form, typed by its Content-Type or, for `application/octet-stream` parts, by its file name."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import PurePosixPath
from typing import Any

from fastapi import Request
from starlette.datastructures import UploadFile as StarletteUploadFile

from safecity.kernel.errors import InvalidInput
from safecity.kernel.tabular import ImportReport

CSV_TYPES = ("text/csv", "application/csv")
GEOJSON_TYPES = ("application/geo+json", "application/json")
MULTIPART = "multipart/form-data"
_BY_SUFFIX = {".csv": "text/csv", ".geojson": "application/geo+json", ".json": "application/json"}


class ImportRejected(InvalidInput):
    """An all-or-nothing import had bad rows, so nothing was written (each registry sets its own `code`)."""

    code = "import.rejected"
    title_en = "Import rejected"
    title_zh = "导入被拒绝"
    message_en = "{count} row(s) are invalid; nothing was imported."
    message_zh = "有 {count} 行无效，未导入任何数据。"

    def __init__(self, report: ImportReport) -> None:
        super().__init__(count=len(report.errors))
        self.extensions = {"errors": [issue.model_dump() for issue in report.errors]}


def media_type(header: str | None) -> tuple[str, str | None]:
    """A Content-Type header's media type (lower case) and charset parameter."""
    media, *params = (header or "").split(";")
    charset = None
    for param in params:
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset" and value.strip():
            charset = value.strip()
    return media.strip().lower(), charset


async def upload(request: Request, missing: type[InvalidInput]) -> tuple[str, str | None, bytes]:
    """The uploaded file as (media type, charset, bytes): the raw body, or the file part of a multipart form
    (`missing` is raised when the form has no file).

    A form part typed `application/octet-stream` (what `curl -F file=@devices.csv` sends) is typed by its file name.
    """
    content_type, charset = media_type(request.headers.get("content-type"))
    if content_type != MULTIPART:
        return content_type, charset, await request.body()
    async with request.form(max_files=1, max_fields=20) as form:  # closing the form removes its temporary files
        part = form.get("file")
        if not isinstance(part, StarletteUploadFile):
            part = next((v for v in form.values() if isinstance(v, StarletteUploadFile)), None)
        if part is None:
            raise missing
        part_type, part_charset = media_type(part.content_type)
        if part_type not in CSV_TYPES + GEOJSON_TYPES:
            suffix = PurePosixPath(part.filename or "").suffix.lower()
            part_type = _BY_SUFFIX.get(suffix, part_type or "(none)")
        return part_type, part_charset, await part.read()


def import_body(columns: Sequence[str], what: str, *, attributes: bool = True) -> dict[str, Any]:
    """The OpenAPI request body of a bulk import of `what`s with these CSV columns."""
    others = "others become attributes" if attributes else "others are refused"
    return {
        "requestBody": {
            "required": True,
            "description": (
                f"CSV with a header row (columns: {', '.join(columns)}; {others}), "
                f"or a GeoJSON FeatureCollection of Point features whose properties hold the {what} fields; "
                "either as the body or as the `file` field of a multipart/form-data upload."
            ),
            "content": {
                "text/csv": {"schema": {"type": "string"}},
                "application/geo+json": {"schema": {"type": "object"}},
                "application/json": {"schema": {"type": "object"}},
                MULTIPART: {
                    "schema": {
                        "type": "object",
                        "properties": {"file": {"type": "string", "format": "binary"}},
                        "required": ["file"],
                    }
                },
            },
        }
    }
