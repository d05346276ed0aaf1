"""Localized (zh-CN) texts of field-level validation errors; English keeps pydantic's own messages."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# zh-CN texts of pydantic's error types; `{...}` are filled from the error's ctx. English uses pydantic's own msg.
_FIELD_ZH = {
    "missing": "缺少必填字段",
    "extra_forbidden": "不允许的字段",
    "string_type": "应为字符串",
    "string_pattern_mismatch": "格式不符合要求（{pattern}）",
    "string_too_short": "至少 {min_length} 个字符",
    "string_too_long": "最多 {max_length} 个字符",
    "too_short": "至少 {min_length} 项",
    "too_long": "最多 {max_length} 项",
    "greater_than": "应大于 {gt}",
    "greater_than_equal": "应大于或等于 {ge}",
    "less_than": "应小于 {lt}",
    "less_than_equal": "应小于或等于 {le}",
    "multiple_of": "应为 {multiple_of} 的倍数",
    "finite_number": "应为有限数值",
    "enum": "应为以下之一：{expected}",
    "literal_error": "应为以下之一：{expected}",
    "int_type": "应为整数",
    "int_parsing": "应为整数",
    "int_from_float": "应为整数（不能有小数部分）",
    "float_type": "应为数字",
    "float_parsing": "应为数字",
    "bool_type": "应为布尔值（true 或 false）",
    "bool_parsing": "应为布尔值（true 或 false）",
    "dict_type": "应为对象",
    "model_type": "应为对象",
    "model_attributes_type": "应为对象",
    "list_type": "应为数组",
    "json_invalid": "不是有效的 JSON",
    "json_type": "应为 JSON 字符串",
    "datetime_type": "应为日期时间",
    "datetime_parsing": "应为 RFC 3339 日期时间",
    "datetime_from_date_parsing": "应为 RFC 3339 日期时间",
    "timezone_aware": "时间须带时区偏移",
    "url_parsing": "应为有效的 URL",
    "url_type": "应为有效的 URL",
    "url_scheme": "URL 协议应为：{expected_schemes}",
    "uuid_parsing": "应为有效的 UUID",
    "union_tag_invalid": "{discriminator} 应为以下之一：{expected_tags}",
    "union_tag_not_found": "缺少区分字段 {discriminator}",
}
# zh-CN texts of the ValueErrors our own validators raise (pydantic prefixes them "Value error, ").
_VALUE_ERROR_ZH = {
    "lon and lat must be given together": "lon 与 lat 须同时给出",
    "integer outside the 64-bit range": "整数超出 64 位范围",
    "naive datetime: a time zone is required": "时间须带时区",
    "unit ids must be unique": "单位 id 不能重复",
    "give either edges or point": "请给出 edges 或 point 之一",
    "give exactly one of polygon or circle": "请只给出 polygon 或 circle 之一",
    "polygon ring must be closed (first point == last point)": "多边形须闭合（首点等于末点）",
    "polygon is not valid (self-intersecting?)": "多边形无效（是否自相交？）",
}


def _ctx_text(value: Any) -> str:
    """A ctx value as text: 180.0 reads 180, as pydantic's English does."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def field_message(error: Mapping[str, Any], locale: str) -> str:
    """One field error's message in the locale: pydantic's English, or its zh-CN text by error type."""
    msg = str(error.get("msg", ""))
    if not locale.lower().startswith("zh"):
        return msg
    kind = str(error.get("type", ""))
    if kind in ("value_error", "assertion_error"):
        text = msg.removeprefix("Value error, ").removeprefix("Assertion failed, ")
        return "取值无效：" + _VALUE_ERROR_ZH.get(text, text)
    template = _FIELD_ZH.get(kind)
    if template is None:
        return "输入无效：" + msg
    ctx = error.get("ctx") or {}
    try:
        return template.format(**{k: _ctx_text(v) for k, v in ctx.items()})
    except (KeyError, IndexError):
        return template.split("：")[0].split("（")[0]
