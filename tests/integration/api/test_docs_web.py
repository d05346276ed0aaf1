"""docs/web.md stays true to the code: every API path it names is a route of the app, and the live channel, the
page and its message catalogues are where it says."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
from fastapi import FastAPI
from tests.conftest import REPO_ROOT

from safecity.api import live, notify
from safecity.web.build import FRONTEND

DOC = (REPO_ROOT / "docs" / "web.md").read_text(encoding="utf-8")


def _templates(app: FastAPI) -> set[str]:
    """Every HTTP path of the OpenAPI document and the WebSocket routes (which OpenAPI does not list)."""
    sockets = {str(getattr(r, "path", "")) for module in (live, notify) for r in module.router.routes}
    return set(app.openapi()["paths"]) | sockets


def _pattern(template: str) -> str:
    return "".join("[^/]+" if part.startswith("{") else re.escape(part) for part in re.split(r"(\{[^}]+\})", template))


def _matches(path: str, templates: set[str]) -> bool:
    return any(re.fullmatch(_pattern(t), path) for t in templates)


async def test_every_api_path_the_doc_names_is_a_route(app_client: tuple[FastAPI, httpx.AsyncClient]) -> None:
    app, _ = app_client
    templates = _templates(app)
    named = {m.split("?")[0] for m in re.findall(r"`(?:[A-Z]+ )?(/(?:api|tiles)/[^`\s]*)`", DOC)}
    assert "/api/v1/live" in named and "/api/v1/events/heat" in named
    missing = sorted(p for p in named if not _matches(p.replace("{z}/{x}/{y}", "1/2/3"), templates))
    assert missing == []


def test_the_files_the_doc_names_exist() -> None:
    for name in re.findall(r"`(src/[\w/.{},-]+)`", DOC):
        if "{" in name:
            continue
        assert (FRONTEND / name).exists(), name
    assert (FRONTEND / "src" / "messages" / "zh-CN.json").is_file()
    assert (FRONTEND / "src" / "messages" / "en.json").is_file()
    assert Path(FRONTEND / "scripts" / "glyphs.mjs").is_file()
