"""Escalation (pure): an alert not acknowledged within a subscription's deadline goes to its `escalate_to`.

Escalations are outbox rows of kind `alert.escalated` addressed to the next subscription and due at the deadline,
so they survive restarts like any other delivery; an acknowledgement cancels the pending ones.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from safecity.warning.model import AlertState
from safecity.warning.notify.subscriptions import Subscription

ESCALATED = "alert.escalated"
# Any move past `new` means a person has taken the alert: stop escalating.
ACKNOWLEDGING = frozenset({AlertState.ACKNOWLEDGED, AlertState.ASSIGNED, AlertState.RESOLVED, AlertState.CANCELLED})


def acknowledges(state: AlertState) -> bool:
    """Return whether a lifecycle state ends escalation."""
    return state in ACKNOWLEDGING


def escalation_due(sub: Subscription, since: datetime) -> datetime | None:
    """When an alert sent to `sub` at `since` escalates, or None when `sub` does not escalate."""
    if sub.escalate_after_s is None or not sub.escalate_to:
        return None
    return since + timedelta(seconds=sub.escalate_after_s)
