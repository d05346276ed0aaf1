"""Errors that carry a stable code, an HTTP status and a localized message (zh-CN, en)."""

from __future__ import annotations

from typing import Any, ClassVar

# Every error code is one of the kernel's generic codes or starts with one of these prefixes, one spelling each
# (singular: `road.`, not `roads.`). tests/unit/test_error_codes.py imports every module and checks both, and that no
# two errors share a code; a new slice adds its prefix here.
GENERIC_ERROR_CODES: tuple[str, ...] = ("not_found", "conflict", "invalid_input")
ERROR_CODE_PREFIXES: tuple[str, ...] = (
    "alert.",
    "api_key.",
    "auth.",
    "bus.",
    "cap.",
    "device.",
    "dispatch.",
    "geo.",
    "http.",
    "import.",
    "notify.",
    "payload.",
    "road.",
    "rules.",
    "sensing.",
    "service.",
    "store.",
    "subscription.",
    "warning.",
)


class SafeCityError(Exception):
    """Base of every error the platform raises on purpose."""

    code: ClassVar[str] = "safecity.error"
    status: ClassVar[int] = 500
    title_en: ClassVar[str] = "Internal error"
    title_zh: ClassVar[str] = "内部错误"
    message_en: ClassVar[str] = "Something went wrong."
    message_zh: ClassVar[str] = "系统出现错误。"

    def __init__(self, detail: str | None = None, **params: Any) -> None:
        self.params = params
        self.detail = detail
        super().__init__(detail or self.render("en"))

    def render(self, locale: str = "zh-CN") -> str:
        """Return the message in the given locale with parameters filled in."""
        template = self.message_zh if locale.lower().startswith("zh") else self.message_en
        try:
            text = template.format(**self.params)
        except (KeyError, IndexError):
            text = template
        return f"{text} {self.detail}" if self.detail else text

    def title(self, locale: str = "zh-CN") -> str:
        """Return the short title in the given locale."""
        return self.title_zh if locale.lower().startswith("zh") else self.title_en


class NotFound(SafeCityError):
    """A requested thing does not exist."""

    code = "not_found"
    status = 404
    title_en = "Not found"
    title_zh = "未找到"
    message_en = "{what} {id} was not found."
    message_zh = "未找到{what} {id}。"


class Conflict(SafeCityError):
    """The request conflicts with the current state."""

    code = "conflict"
    status = 409
    title_en = "Conflict"
    title_zh = "冲突"
    message_en = "{what} {id} already exists."
    message_zh = "{what} {id} 已存在。"


class InvalidInput(SafeCityError):
    """Input from outside failed validation."""

    code = "invalid_input"
    status = 422
    title_en = "Invalid input"
    title_zh = "输入无效"
    message_en = "The input is not valid."
    message_zh = "输入内容无效。"


class Unauthorized(SafeCityError):
    """No valid credentials were given."""

    code = "auth.unauthorized"
    status = 401
    title_en = "Unauthorized"
    title_zh = "未认证"
    message_en = "Send a valid API key (X-API-Key) or bearer token."
    message_zh = "请提供有效的 API 密钥（X-API-Key）或 Bearer 令牌。"


class Forbidden(SafeCityError):
    """The caller's role does not allow this."""

    code = "auth.forbidden"
    status = 403
    title_en = "Forbidden"
    title_zh = "无权访问"
    message_en = "This requires one of the roles: {roles}."
    message_zh = "此操作需要以下角色之一：{roles}。"


class PayloadTooLarge(SafeCityError):
    """A request or message is larger than allowed."""

    code = "payload.too_large"
    status = 413
    title_en = "Payload too large"
    title_zh = "数据过大"
    message_en = "The payload has {size} bytes; the limit is {limit}."
    message_zh = "数据大小 {size} 字节，超过上限 {limit} 字节。"


class ServiceUnavailable(SafeCityError):
    """A dependency (database, bus, broker) is not reachable."""

    code = "service.unavailable"
    status = 503
    title_en = "Service unavailable"
    title_zh = "服务不可用"
    message_en = "{service} is not available."
    message_zh = "{service} 当前不可用。"


class Overloaded(ServiceUnavailable):
    """The node is slowing its intake (back-pressure): the client should retry after `retry_after` seconds."""

    code = "service.overloaded"
    title_en = "Busy, retry later"
    title_zh = "系统繁忙，请稍后重试"
    message_en = "The node is catching up ({cause}); nothing of this request was accepted. Retry after {retry_after} s."
    message_zh = "系统正在处理积压（{cause}），本次请求未被接收，请在 {retry_after} 秒后重试。"

    def __init__(self, *, cause: str, retry_after: int) -> None:
        super().__init__(cause=cause, retry_after=retry_after)
        self.headers = {"Retry-After": str(retry_after)}
        self.extensions = {"cause": cause, "retry_after_s": retry_after}
