"""/docs and /redoc load Swagger UI and ReDoc from our server: no CDN, every asset answers, no credentials."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

import httpx
import pytest
from fastapi import FastAPI

from safecity.api.app import PUBLIC_PATHS

# Strings in the page that name a URL: attributes, and Swagger UI / ReDoc config in the inline script.
_SCRIPT_URL = re.compile(r"""(?:\burl\s*:\s*|spec-url=|Redoc\.init\()\s*['"]([^'"]+)['"]""")
_ANY_ABSOLUTE = re.compile(r"""(?:https?:)?//[A-Za-z0-9.-]+\.[A-Za-z]{2,}""")


class _Refs(HTMLParser):
    """Collect every src/href attribute of an HTML page."""

    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in {"src", "href", "spec-url"} and value:
                self.refs.append(value)


def _references(html: str) -> list[str]:
    parser = _Refs()
    parser.feed(html)
    return parser.refs + _SCRIPT_URL.findall(html)


def _is_local(ref: str) -> bool:
    parts = urlsplit(ref)
    return not parts.scheme and not parts.netloc


@pytest.mark.parametrize(
    ("page", "expected_assets"),
    [
        ("/docs", {"swagger-ui-bundle.js", "swagger-ui.css", "favicon.png"}),
        ("/redoc", {"redoc.standalone.js", "favicon.png"}),
    ],
)
async def test_docs_pages_reference_only_local_assets_that_answer(
    app_client: tuple[FastAPI, httpx.AsyncClient], page: str, expected_assets: set[str]
) -> None:
    _, client = app_client
    response = await client.get(page)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    html = response.text
    # No absolute URL anywhere in the page (CDN scripts, Google Fonts, the FastAPI favicon, ...).
    assert not _ANY_ABSOLUTE.search(html), _ANY_ABSOLUTE.findall(html)
    refs = _references(html)
    assert refs, "the page references nothing: the parser missed its assets"
    remote = [ref for ref in refs if not _is_local(ref)]
    assert not remote, f"{page} loads remote URLs: {remote}"
    assert "/openapi.json" in refs
    names = {urlsplit(ref).path.rsplit("/", 1)[-1] for ref in refs}
    assert expected_assets <= names
    for ref in refs:
        # Fetched without credentials, as a browser opening the page would.
        asset = await client.get(urljoin(f"http://testserver{page}", ref))
        assert asset.status_code == 200, f"{ref} -> {asset.status_code}"
        assert asset.content, ref
        if ref.endswith(".js"):
            assert "javascript" in asset.headers["content-type"]
        if ref.endswith(".css"):
            assert asset.headers["content-type"].startswith("text/css")


async def test_swagger_ui_is_configured_for_local_use(app_client: tuple[FastAPI, httpx.AsyncClient]) -> None:
    _, client = app_client
    html = (await client.get("/docs")).text
    # The validator badge would post our API description to validator.swagger.io.
    assert '"validatorUrl": null' in html
    assert "'/docs/oauth2-redirect'" in html


async def test_docs_routes_are_public_and_outside_the_api_description(
    app_client: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, client = app_client
    for path in ("/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"):
        assert path in PUBLIC_PATHS
        response = await client.get(path)
        assert response.status_code == 200, path
    redirect = await client.get("/docs/oauth2-redirect")
    assert "oauth2" in redirect.text.lower()
    paths = app.openapi()["paths"]
    assert not [p for p in paths if p.startswith(("/docs", "/redoc"))]


async def test_missing_asset_is_404(app_client: tuple[FastAPI, httpx.AsyncClient]) -> None:
    _, client = app_client
    response = await client.get("/docs/assets/no-such-file.js")
    assert response.status_code == 404
    traversal = await client.get("/docs/assets/..%2F__init__.py")
    assert traversal.status_code == 404
