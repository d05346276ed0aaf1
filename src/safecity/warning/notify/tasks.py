"""Task messages: an incident handed to a responder (a community guard, a volunteer, a police chat group) through the
same delivery channels and durable outbox as alerts (pure).

The dispatch slice builds a `TaskMessage`; `NotifyService.send_task` queues it for the responder's subscription
(`Responder.contact`). Its body is `{"type": "task", "task": {...}}`: webhooks and MQTT get it as JSON, chat groups
and e-mail get the localized text of `render`, which carries the signed, expiring link the responder answers with.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

TASK_KIND = "task"


@dataclass(frozen=True, kw_only=True)
class TaskMessage:
    """One task for one responder: what and where, and the link to accept, arrive and report the outcome."""

    id: str  # unique per message: the outbox row id derives from it (a resend of the same message collides)
    subscription_id: str
    incident_id: str
    responder_id: str
    incident_type: str
    priority: int
    summary: str
    address: str | None
    lon: float | None
    lat: float | None
    tags: dict[str, str | None] = field(default_factory=dict)
    link: str
    actions: tuple[str, ...]
    expires_at: datetime
    sent_by: str

    def body(self) -> dict[str, Any]:
        """The outbox body (JSON-ready)."""
        return {
            "type": TASK_KIND,
            "task": {
                "id": self.id,
                "incident_id": self.incident_id,
                "responder_id": self.responder_id,
                "incident_type": self.incident_type,
                "priority": self.priority,
                "summary": self.summary,
                "address": self.address,
                "point": None if self.lon is None or self.lat is None else [self.lon, self.lat],
                "tags": dict(self.tags),
                "link": self.link,
                "actions": list(self.actions),
                "expires_at": self.expires_at.isoformat(),
                "sent_by": self.sent_by,
            },
        }


def is_task(body: dict[str, Any]) -> bool:
    """Whether an outbox body is a task message (not an alert)."""
    return body.get("type") == TASK_KIND


_ACTION_TEXT = {
    "accept": ("接单", "accept"),
    "arrive": ("到场", "arrive"),
    "report": ("反馈结果", "report the outcome"),
}


def render(body: dict[str, Any], *, zh: bool) -> tuple[str, str]:
    """(title, text) of a task message in Chinese or English."""
    task = body.get("task") or {}
    tags = task.get("tags") or {}
    place = " / ".join(str(p) for p in (tags.get("town"), tags.get("community"), tags.get("building")) if p) or "-"
    actions = ("、" if zh else ", ").join(_ACTION_TEXT.get(a, (a, a))[0 if zh else 1] for a in task.get("actions", ()))
    kind, priority = task.get("incident_type", ""), task.get("priority", "")
    if zh:
        title = f"【任务】{kind}（{priority} 级）"
        lines = [
            str(task.get("summary") or ""),
            f"地址：{task.get('address') or '-'}",
            f"地点：{place}",
            f"请点击链接{actions}：{task.get('link', '')}",
            f"链接有效期至：{task.get('expires_at', '')}",
            f"事件编号：{task.get('incident_id', '')}",
        ]
    else:
        title = f"[Task] {kind} (priority {priority})"
        lines = [
            str(task.get("summary") or ""),
            f"Address: {task.get('address') or '-'}",
            f"Place: {place}",
            f"Open the link to {actions}: {task.get('link', '')}",
            f"The link expires at: {task.get('expires_at', '')}",
            f"Incident id: {task.get('incident_id', '')}",
        ]
    return title, "\n".join(line for line in lines if line)
