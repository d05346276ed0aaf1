"""The UI build hook (rebuild only when a source changed; a clear error without npm) and how the node serves it."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from safecity.web import build
from safecity.web.static import UiNotBuilt, install_ui


def _frontend(root: Path) -> Path:
    (root / "src").mkdir(parents=True)
    (root / "package.json").write_text("{}")
    (root / "package-lock.json").write_text("{}")
    (root / "src" / "main.js").write_text("console.log(1)")
    return root


def test_the_build_is_stale_until_built_from_the_current_sources(tmp_path: Path) -> None:
    root = _frontend(tmp_path / "frontend")
    assert not build.is_built(root)
    (root / "dist").mkdir()
    (root / "dist" / "index.html").write_text("<html></html>")
    (root / "dist" / build.STAMP.name).write_text(build.source_digest(root))
    assert build.is_built(root)
    (root / "src" / "main.js").write_text("console.log(2)")
    assert not build.is_built(root)


def test_without_npm_the_error_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _frontend(tmp_path / "frontend")
    monkeypatch.setattr(build.shutil, "which", lambda name: None)
    with pytest.raises(build.UiBuildError, match=r"npm was not found.*apt-get install nodejs npm"):
        build.ensure_built(root=root)


async def test_the_node_serves_the_page_and_its_assets(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    (dist / "assets").mkdir(parents=True)
    (dist / "index.html").write_text("<!doctype html><title>SafeCity</title>")
    (dist / "assets" / "app.js").write_text("export {}")
    app = FastAPI()
    install_ui(app, dist)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        page = await client.get("/")
        assert page.status_code == 200
        assert page.headers["cache-control"] == "no-cache"
        assert "SafeCity" in page.text
        assert (await client.get("/ui/assets/app.js")).status_code == 200
        assert (await client.get("/ui/assets/missing.js")).status_code == 404
        assert (await client.get("/ui", follow_redirects=False)).status_code in (307, 308)


def test_mounting_an_unbuilt_ui_says_how_to_build_it(tmp_path: Path) -> None:
    with pytest.raises(UiNotBuilt, match="safecity serve"):
        install_ui(FastAPI(), tmp_path / "dist")


def test_without_npm_an_existing_build_is_served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _frontend(tmp_path / "frontend")
    (root / "dist").mkdir()
    (root / "dist" / "index.html").write_text("<html></html>")
    monkeypatch.setattr(build.shutil, "which", lambda name: None)
    assert build.ensure_built(root=root) == root / "dist"
