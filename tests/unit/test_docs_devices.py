"""docs/devices.md stays true to the code: the batch URL, import content types, CSV columns and limits it states."""

from __future__ import annotations

import re
from pathlib import Path

from safecity.api import devices, events, ingest
from safecity.api.uploads import CSV_TYPES, GEOJSON_TYPES, MULTIPART
from safecity.kernel.settings import Settings
from safecity.sensing.devices import CSV_ALIASES, CSV_COLUMNS
from safecity.sensing.model import DeviceKind
from safecity.sensing.normalize import registry

TEXT = (Path(__file__).resolve().parents[2] / "docs" / "devices.md").read_text(encoding="utf-8")


def _routes() -> set[str]:
    return {
        getattr(route, "path", "")
        for router in (devices.router, events.router, ingest.router)
        for route in router.routes
    }


def test_urls_exist() -> None:
    routes = _routes()
    for url in set(re.findall(r"`(?:POST|GET) (/api/v1/[a-z/-]+)", TEXT)):
        assert url in routes, url
    assert "`POST /api/v1/ingest/batch" in TEXT and "`POST /api/v1/devices/import`" in TEXT


def test_import_types_and_csv_columns() -> None:
    for media_type in (*CSV_TYPES, *GEOJSON_TYPES, MULTIPART):
        assert f"`{media_type}`" in TEXT, media_type
    table = dict(re.findall(r"^\| `([a-z_`, ]+)` \| (.*) \|$", TEXT, re.MULTILINE))
    documented = {c.strip(" `") for key in table for c in key.split(",")}
    assert set(CSV_COLUMNS) <= documented
    for old in CSV_ALIASES:
        assert f"`{old}`" in TEXT
    kinds_row = next(text for key, text in table.items() if key == "kind")
    assert set(re.findall(r"`([a-z]+)`", kinds_row)) == {k.value for k in DeviceKind}


def test_limits_match_the_settings() -> None:
    settings = Settings()
    ingest = settings.ingest
    assert f"`ingest.max_past_s` before the time of receipt (default {ingest.max_past_s:.0f} s" in TEXT
    assert f"`ingest.max_future_s` after\n  it (default {ingest.max_future_s:.0f} s" in TEXT
    assert f"`ingest.max_payload_bytes` (default {ingest.max_payload_bytes} bytes)" in TEXT
    assert f"`http.max_body_bytes` (default {settings.http.max_body_bytes // 2**20} MiB)" in TEXT
    assert f"`ingest.heartbeat_timeout_s`,\n{ingest.heartbeat_timeout_s:.0f} s)" in TEXT


def test_batch_formats_are_the_registered_ones() -> None:
    """The formats the batch URL lists are the registered normalizers, and the refusal of others is named."""
    listed = re.search(r"\(`format`: (.*?);", TEXT, re.DOTALL)
    assert listed is not None
    assert set(re.findall(r"`([a-z_]+)`", listed.group(1))) == {spec.key for spec in registry.specs()}
    assert "`sensing.unknown_format`" in TEXT
