"""Task messages share the alert channels: a tasks-only subscription gets no alerts, chat and e-mail text is localized
and carries the link, MQTT puts a task on its responder's topic, and a task body is not stamped as an alert."""

from __future__ import annotations

from datetime import UTC, datetime

from tests.integration.warning.notify_helpers import make_alert

from safecity.warning.notify.chat import render
from safecity.warning.notify.delivery import stamp_delivered
from safecity.warning.notify.mqtt import topic_for
from safecity.warning.notify.subscriptions import Locale, SubscriptionFilter, matches
from safecity.warning.notify.tasks import TaskMessage

TASK = TaskMessage(
    id="01JTASK0000000000000000000",
    subscription_id="01JSUB00000000000000000000",
    incident_id="01JINC00000000000000000000",
    responder_id="guard/1",
    incident_type="medical",
    priority=2,
    summary="elderly fall",
    address="Building 3",
    lon=121.25,
    lat=31.37,
    tags={"town": "安亭镇", "community": "c-7", "building": None},
    link="https://sc.example.test/task#abc.def",
    actions=("accept", "arrive", "report"),
    expires_at=datetime(2026, 12, 7, tzinfo=UTC),
    sent_by="dispatcher:desk-1",
)


def test_a_tasks_only_subscription_receives_no_alert() -> None:
    alert = make_alert()
    assert matches(SubscriptionFilter(), alert)
    assert not matches(SubscriptionFilter(tasks_only=True), alert)


def test_task_text_is_localized_and_carries_the_link() -> None:
    title_zh, text_zh = render(TASK.body(), Locale.ZH)
    title_en, text_en = render(TASK.body(), Locale.EN)
    assert title_zh == "【任务】medical（2 级）" and title_en == "[Task] medical (priority 2)"
    assert "请点击链接接单、到场、反馈结果：https://sc.example.test/task#abc.def" in text_zh
    assert "Open the link to accept, arrive, report the outcome: https://sc.example.test/task#abc.def" in text_en
    assert "地点：安亭镇 / c-7" in text_zh and "elderly fall" in text_en


def test_a_task_goes_to_its_responders_topic_and_is_not_stamped_as_an_alert() -> None:
    body = TASK.body()
    assert topic_for("safecity/notify/", body) == "safecity/notify/task/guard_1"
    assert stamp_delivered(body) == body and "alert" not in stamp_delivered(body)
    assert "alert" in stamp_delivered({"type": "new", "alert": {"alert_id": "x"}})
