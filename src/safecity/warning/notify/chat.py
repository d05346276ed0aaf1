"""Delivery through apprise for the `chat` and `email` channels (WeCom bot, DingTalk, Feishu, e-mail), zh-CN or en."""

from __future__ import annotations

import asyncio
import warnings
from typing import Any
from urllib.parse import urlsplit

import apprise
from apprise.manager_plugins import NotificationManager

from safecity.kernel.errors import InvalidInput
from safecity.warning.notify import tasks
from safecity.warning.notify.delivery import Delivery, DeliveryError
from safecity.warning.notify.subscriptions import Locale, Subscription
from safecity.warning.notify.webhook import HostPolicy

# Apprise loads its plugins lazily on first use; one of them imports the deprecated `imghdr` module (Python 3.11),
# which is only a DeprecationWarning, but it would surface wherever the first notification happens. Load them now.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    NotificationManager().load_modules()  # type: ignore[no-untyped-call]

# The schemes each channel accepts live in its module (channels/chat.py, channels/email.py). These post to any host,
# so they pass the webhook allow-list too.
GENERIC_HTTP_SCHEMES = frozenset({"json", "jsons"})

SEVERITY_TEXT = {
    "Extreme": ("特别严重", "Extreme"),
    "Severe": ("严重", "Severe"),
    "Moderate": ("中等", "Moderate"),
    "Minor": ("轻微", "Minor"),
    "Unknown": ("未知", "Unknown"),
}
KIND_PREFIX = {"new": ("", ""), "update": ("【更新】", "[Update] "), "escalation": ("【升级】", "[Escalated] ")}


class InvalidChatTarget(InvalidInput):
    """An apprise URL that apprise does not accept, or of the wrong kind for the channel."""

    code = "notify.invalid_target"
    message_en = "The {channel} target is not a supported notification URL ({schemes})."
    message_zh = "{channel} 目标不是受支持的通知地址（{schemes}）。"


def check_target(channel: str, schemes: frozenset[str], url: str, policy: HostPolicy) -> None:
    """Raise unless `url` is an apprise URL of one of `schemes` (the channel's) that apprise can parse."""
    scheme = urlsplit(url).scheme.lower()
    if scheme not in schemes or not apprise.Apprise().add(url):
        raise InvalidChatTarget(channel=str(channel), schemes=", ".join(sorted(schemes)))
    if scheme in GENERIC_HTTP_SCHEMES:
        parts = urlsplit(url)
        policy.check(f"{'https' if scheme.endswith('s') else 'http'}://{parts.hostname}")


def render(body: dict[str, Any], locale: Locale | str) -> tuple[str, str]:
    """Return (title, text) of a message in the subscription's language."""
    zh = str(locale).lower().startswith("zh")
    if tasks.is_task(body):
        return tasks.render(body, zh=zh)
    lang = "zh" if zh else "en"
    alert = body.get("alert") or {}
    prefix = KIND_PREFIX.get(str(body.get("type")), ("", ""))[0 if zh else 1]
    headline = (alert.get("headline") or {}).get(lang, "")
    description = (alert.get("description") or {}).get(lang, "")
    severity = SEVERITY_TEXT.get(str(alert.get("severity")), ("未知", "Unknown"))[0 if zh else 1]
    tags = alert.get("tags") or {}
    place = " / ".join(p for p in (tags.get("town"), tags.get("community"), tags.get("building")) if p) or "-"
    when = str(alert.get("last_at") or alert.get("first_at") or "")
    count = alert.get("count", 1)
    if zh:
        lines = [description, f"级别：{severity}", f"地点：{place}", f"时间：{when}", f"次数：{count}"]
        lines.append(f"告警编号：{alert.get('alert_id', '')}")
    else:
        lines = [description, f"Severity: {severity}", f"Place: {place}", f"Time: {when}", f"Count: {count}"]
        lines.append(f"Alert id: {alert.get('alert_id', '')}")
    return f"{prefix}{headline}", "\n".join(line for line in lines if line)


class AppriseSender:
    """Deliver through apprise (its plugins block, so each call runs in a worker thread)."""

    async def send(self, sub: Subscription, delivery: Delivery) -> None:
        """Send the localized message; apprise's False (any failure) is retried by the outbox."""
        title, text = render(delivery.body, sub.locale)
        notifier = apprise.Apprise()
        if not notifier.add(sub.target):
            raise DeliveryError("apprise cannot parse the target URL", permanent=True)
        ok = await asyncio.to_thread(notifier.notify, body=text, title=title)
        if not ok:
            raise DeliveryError("apprise reported a failed notification")
