"""Serve the built command centre: the page at `/`, its assets and glyphs under `/ui/` (no CDN, no internet).

app = create_app(runtime.api_services())
install_ui(app)               # after `safecity.web.build.ensure_built()`
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

from safecity.web.build import DIST

UI_PREFIX = "/ui"
# The page itself is small and names hashed assets: never cache it, so a rebuild shows at once.
NO_CACHE = {"Cache-Control": "no-cache"}


class UiNotBuilt(RuntimeError):
    """The UI's build folder has no page: build it first (`safecity.web.build.ensure_built`)."""


def ui_built(dist: Path = DIST) -> bool:
    """True when the build folder holds a page (it may still be stale: `safecity.web.build.is_built` checks that)."""
    return (dist / "index.html").is_file()


def install_ui(app: FastAPI, dist: Path = DIST) -> None:
    """Mount the built UI on `app`: `/` and `/ui/` answer the page, `/ui/assets/*` and `/ui/glyphs/*` the files."""
    index = dist / "index.html"
    if not index.is_file():
        raise UiNotBuilt(f"{index} is missing: run `safecity serve` or `safecity demo`, which build the UI")

    async def page() -> FileResponse:
        return FileResponse(index, media_type="text/html; charset=utf-8", headers=NO_CACHE)

    async def to_page() -> RedirectResponse:
        return RedirectResponse("/")

    app.add_api_route("/", page, methods=["GET"], include_in_schema=False, summary="Command centre")
    app.add_api_route(UI_PREFIX, to_page, methods=["GET"], include_in_schema=False)
    app.mount(UI_PREFIX, StaticFiles(directory=dist, html=False), name="ui")
