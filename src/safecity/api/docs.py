"""API documentation pages (Swagger UI at /docs, ReDoc at /redoc) with their assets served by us, never a CDN.

The Swagger UI and ReDoc bundles come from the `fastapi-offline` wheel (MIT), installed by the package manager;
nothing is vendored in this repository.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

DOCS_PATH = "/docs"
OAUTH2_REDIRECT_PATH = "/docs/oauth2-redirect"
REDOC_PATH = "/redoc"
ASSETS_PATH = "/docs/assets"

# validatorUrl None: Swagger UI would otherwise send the spec to validator.swagger.io for its badge.
SWAGGER_UI_PARAMETERS = {"validatorUrl": None, "persistAuthorization": True}

router = APIRouter(include_in_schema=False)


def assets_dir() -> Path:
    """The folder of the installed Swagger UI / ReDoc bundles (swagger-ui-bundle.js, swagger-ui.css, ...)."""
    return Path(str(files("fastapi_offline") / "static"))


def _root(request: Request) -> str:
    # Behind a reverse proxy that mounts us under a prefix, links must carry that prefix.
    return str(request.scope.get("root_path", "")).rstrip("/")


def _openapi_url(request: Request) -> str:
    return _root(request) + (request.app.openapi_url or "/openapi.json")


@router.get(DOCS_PATH)
async def swagger_ui(request: Request) -> HTMLResponse:
    """Swagger UI for this node's OpenAPI document."""
    root = _root(request)
    return get_swagger_ui_html(
        openapi_url=_openapi_url(request),
        title=f"{request.app.title} - Swagger UI",
        oauth2_redirect_url=root + OAUTH2_REDIRECT_PATH,
        swagger_js_url=f"{root}{ASSETS_PATH}/swagger-ui-bundle.js",
        swagger_css_url=f"{root}{ASSETS_PATH}/swagger-ui.css",
        swagger_favicon_url=f"{root}{ASSETS_PATH}/favicon.png",
        swagger_ui_parameters=SWAGGER_UI_PARAMETERS,
    )


@router.get(OAUTH2_REDIRECT_PATH)
async def swagger_ui_redirect() -> HTMLResponse:
    """The page Swagger UI's OAuth2 flow returns to."""
    return get_swagger_ui_oauth2_redirect_html()


@router.get(REDOC_PATH)
async def redoc(request: Request) -> HTMLResponse:
    """ReDoc for this node's OpenAPI document."""
    root = _root(request)
    return get_redoc_html(
        openapi_url=_openapi_url(request),
        title=f"{request.app.title} - ReDoc",
        redoc_js_url=f"{root}{ASSETS_PATH}/redoc.standalone.js",
        redoc_favicon_url=f"{root}{ASSETS_PATH}/favicon.png",
        with_google_fonts=False,
    )


def install_docs(app: FastAPI) -> None:
    """Add /docs, /docs/oauth2-redirect, /redoc and the static assets they load (create the app with docs_url=None)."""
    app.include_router(router)
    app.mount(ASSETS_PATH, StaticFiles(directory=assets_dir()), name="docs-assets")
