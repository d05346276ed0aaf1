"""RFC 9457 problem+json: every error the API returns, localized (zh-CN default, en) by Accept-Language.

`install_problem_handlers(app)` maps SafeCityError, request validation errors and HTTP errors (404, 405, ...) to
problems; `ProblemMiddleware` caps request bodies (413) and turns anything unhandled into a 500 problem that shows
no internals.
"""

from __future__ import annotations

import http
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Literal

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import HTTPConnection

from safecity.kernel.errors import PayloadTooLarge, SafeCityError
from safecity.kernel.messages import field_message

log = structlog.get_logger(__name__)

PROBLEM_BASE = "https://safecity.dev/problems/"
PROBLEM_MEDIA_TYPE = "application/problem+json"
Locale = Literal["zh-CN", "en"]
DEFAULT_LOCALE: Locale = "zh-CN"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# Titles for HTTP errors that do not come from a SafeCityError (routing, method, framework).
_HTTP_ZH = {
    400: "请求无效",
    401: "未认证",
    403: "无权访问",
    404: "未找到",
    405: "不支持该请求方法",
    406: "无法提供所需格式",
    409: "冲突",
    413: "数据过大",
    415: "不支持的数据格式",
    422: "输入无效",
    429: "请求过多",
    500: "内部错误",
    503: "服务不可用",
}
_HTTP_DETAIL = {
    404: ("The requested resource does not exist.", "请求的资源不存在。"),
    405: ("This method is not allowed on this resource.", "该资源不支持此请求方法。"),
    500: ("Something went wrong.", "系统出现错误。"),
}


class Problem(BaseModel):
    """An RFC 9457 problem document."""

    type: str = Field(description="URI of the problem type: https://safecity.dev/problems/<code>.")
    title: str
    status: int
    detail: str
    code: str = Field(description="Stable machine-readable error code.")
    instance: str = Field(description="Path of the request that failed.")
    errors: list[dict[str, Any]] | None = Field(None, description="Field errors, for validation problems.")


# For routers' `responses=`: documents the problem shape in OpenAPI.
PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": Problem, "content": {PROBLEM_MEDIA_TYPE: {}}, "description": http.HTTPStatus(status).phrase}
    for status in (401, 403, 404, 409, 413, 415, 422)
}


class UnsupportedMediaType(SafeCityError):
    """The request body's content type is not accepted here."""

    code = "http.unsupported_media_type"
    status = 415
    title_en = "Unsupported media type"
    title_zh = "不支持的数据格式"
    message_en = "Content type {got} is not accepted; send one of: {accepted}."
    message_zh = "不接受内容类型 {got}；请使用：{accepted}。"


def negotiate_locale(accept_language: str | None, default: Locale = DEFAULT_LOCALE) -> Locale:
    """Pick zh-CN or en from an Accept-Language header (q-values respected); `default` when neither is asked."""
    if not accept_language:
        return default
    ranked: list[tuple[float, int, str]] = []
    for position, part in enumerate(accept_language.split(",")):
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        params = params.strip()
        if params.startswith("q="):
            try:
                quality = float(params[2:])
            except ValueError:
                quality = 0.0
        if quality > 0:
            ranked.append((-quality, position, tag.strip().lower()))
    for _, _, tag in sorted(ranked):
        if tag.startswith("zh"):
            return "zh-CN"
        if tag.startswith("en"):
            return "en"
        if tag == "*":
            return default
    return default


def request_locale(conn: HTTPConnection) -> Locale:
    """The locale for this request: Accept-Language, else the node's configured locale."""
    default: Locale = DEFAULT_LOCALE
    # An app built without services (a router mounted alone in a test) answers in the default locale.
    services = getattr(conn.app.state, "services", None) if "app" in conn.scope else None
    configured = getattr(getattr(services, "settings", None), "locale", None)
    if configured in ("zh-CN", "en"):
        default = configured
    return negotiate_locale(conn.headers.get("accept-language"), default)


def problem_response(
    conn: HTTPConnection,
    *,
    status: int,
    code: str,
    title: str,
    detail: str,
    extensions: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """Build a problem+json response."""
    body: dict[str, Any] = {
        "type": PROBLEM_BASE + code,
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
        "instance": conn.url.path,
    }
    if extensions:
        body.update(extensions)
    if status == 401:
        # RFC 9110 §15.5.2: a 401 carries a challenge.
        headers = {"WWW-Authenticate": 'Bearer realm="safecity"', **(headers or {})}
    return JSONResponse(body, status_code=status, media_type=PROBLEM_MEDIA_TYPE, headers=headers)


def error_response(conn: HTTPConnection, exc: SafeCityError) -> JSONResponse:
    """Render a SafeCityError as a localized problem."""
    locale = request_locale(conn)
    extensions = getattr(exc, "extensions", None)
    return problem_response(
        conn,
        status=exc.status,
        code=exc.code,
        title=exc.title(locale),
        detail=exc.render(locale),
        extensions=extensions if isinstance(extensions, dict) else None,
        headers=getattr(exc, "headers", None),
    )


def _http_code(status: int) -> str:
    try:
        phrase = http.HTTPStatus(status).phrase
    except ValueError:
        return "http.error"
    return "http." + phrase.lower().replace(" ", "_").replace("-", "_").replace("'", "")


def http_problem(conn: HTTPConnection, status: int, detail: str | None = None) -> JSONResponse:
    """A problem for a plain HTTP status (routing errors, framework errors)."""
    locale = request_locale(conn)
    zh = locale == "zh-CN"
    try:
        title_en = http.HTTPStatus(status).phrase
    except ValueError:
        title_en = "Error"
    title = _HTTP_ZH.get(status, title_en) if zh else title_en
    known = _HTTP_DETAIL.get(status)
    if known is not None and (detail is None or detail == title_en):
        text = known[1] if zh else known[0]
    else:
        text = detail or title
    return problem_response(conn, status=status, code=_http_code(status), title=title, detail=text)


async def _safecity_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, SafeCityError)
    if exc.status >= 500:
        log.warning("request_failed", code=exc.code, path=request.url.path)
    return error_response(request, exc)


async def _validation_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    locale = request_locale(request)
    errors = [
        {"loc": [str(p) for p in e.get("loc", ())], "msg": field_message(e, locale), "type": str(e.get("type", ""))}
        for e in exc.errors()
    ]
    zh = locale == "zh-CN"
    return problem_response(
        request,
        status=422,
        code="invalid_input",
        title="输入无效" if zh else "Invalid input",
        detail=(f"请求有 {len(errors)} 处输入无效。" if zh else f"The request has {len(errors)} invalid field(s)."),
        extensions={"errors": errors},
    )


async def _http_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    response = http_problem(request, exc.status_code, exc.detail if isinstance(exc.detail, str) else None)
    for name, value in (exc.headers or {}).items():
        response.headers[name] = value
    return response


def install_problem_handlers(app: FastAPI) -> None:
    """Register the problem+json exception handlers on an app."""
    app.add_exception_handler(SafeCityError, _safecity_handler)
    app.add_exception_handler(RequestValidationError, _validation_handler)
    app.add_exception_handler(StarletteHTTPException, _http_handler)


class ProblemMiddleware:
    """Caps request bodies (413 problem) and answers unhandled exceptions with a bare 500 problem.

    The body is read up front (it is capped anyway) so a chunked upload without Content-Length is capped too.
    """

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run one ASGI request."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        conn = HTTPConnection(scope)
        limit = self.max_body_bytes
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await self._too_large(conn, int(declared), scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await self._too_large(conn, size, scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, replay, tracking_send)
        except Exception:
            log.exception("unhandled_error", method=scope.get("method"), path=scope.get("path"))
            if started:
                raise
            await http_problem(conn, 500)(scope, replay, send)

    async def _too_large(self, conn: HTTPConnection, size: int, scope: Scope, receive: Receive, send: Send) -> None:
        response = error_response(conn, PayloadTooLarge(size=size, limit=self.max_body_bytes))
        # The rest of the body is not read; tell the client the connection will not be reused.
        response.headers["Connection"] = "close"
        await response(scope, receive, send)
