"""Signed, expiring task links for community responders (pure): accept / arrive / report an outcome without an
account.

A link carries the incident, the responder and the actions it allows, and expires; it is signed with a keyed HMAC
(SHA-256) so a guard cannot edit it into someone else's task. The token is `<payload>.<signature>`, both base64url.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import datetime, timedelta

import msgspec

from safecity.kernel.errors import SafeCityError


class TaskClaims(msgspec.Struct, frozen=True, kw_only=True):
    """What a link allows: `actions` on `incident_id` by `responder_id` until `expires` (Unix seconds)."""

    incident_id: str
    responder_id: str
    actions: tuple[str, ...]
    expires: int


class BadLink(SafeCityError):
    """A task link is malformed, forged or expired."""

    code = "dispatch.bad_link"
    status = 403
    title_en = "Link not valid"
    title_zh = "链接无效"
    message_en = "This task link is not valid ({why}); ask the command centre for a new one."
    message_zh = "任务链接无效（{why}），请联系指挥中心重新发送。"

    def __init__(self, why: str) -> None:
        super().__init__(why=why)
        self.extensions = {"why": why}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(key: bytes, body: str) -> str:
    return _b64(hmac.new(key, b"safecity.task-link.v1." + body.encode("ascii"), hashlib.sha256).digest())


def sign(key: bytes, claims: TaskClaims) -> str:
    """A token for `claims`."""
    body = _b64(msgspec.json.encode(claims))
    return f"{body}.{_mac(key, body)}"


def issue(
    key: bytes, *, incident_id: str, responder_id: str, actions: tuple[str, ...], now: datetime, ttl: timedelta
) -> str:
    """A token allowing `actions` until `now + ttl`."""
    expires = int((now + ttl).timestamp())
    return sign(key, TaskClaims(incident_id=incident_id, responder_id=responder_id, actions=actions, expires=expires))


def verify(key: bytes, token: str, *, action: str | None, now: datetime) -> TaskClaims:
    """The claims of a valid token that allows `action` now (any action when None); raises BadLink (forged, expired,
    wrong action) else."""
    body, _, signature = token.partition(".")
    if not body or not signature or len(token) > 2048 or not token.isascii():
        raise BadLink("malformed")
    if not hmac.compare_digest(signature, _mac(key, body)):
        raise BadLink("forged")
    try:
        claims = msgspec.json.decode(_unb64(body), type=TaskClaims)
    except (ValueError, msgspec.DecodeError) as err:
        raise BadLink("malformed") from err
    if now.timestamp() >= claims.expires:
        raise BadLink("expired")
    if action is not None and action not in claims.actions:
        raise BadLink("wrong_action")
    return claims
