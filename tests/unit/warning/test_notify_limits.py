"""Attempt time limits: doubled per attempt and per timeout of an endpoint, capped, shrunk again by quick answers."""

from __future__ import annotations

from safecity.warning.notify.outbox import AttemptLimits, OutboxDispatcher


def test_the_limit_doubles_per_attempt_up_to_the_cap() -> None:
    limits = AttemptLimits(10.0, 120.0)
    assert [limits.limit_s("a", n) for n in range(1, 9)] == [10, 20, 40, 80, 120, 120, 120, 120]
    assert AttemptLimits(10.0, 5.0).limit_s("a", 3) == 10.0  # a cap below the first limit means no growth


def test_an_endpoint_that_timed_out_gets_longer_first_attempts_until_it_answers_quickly() -> None:
    limits = AttemptLimits(10.0, 120.0)
    limits.timed_out("slow", 10.0)
    assert limits.limit_s("slow", 1) == 20.0  # its next rows do not each pay a timeout at 10 s
    assert limits.limit_s("other", 1) == 10.0
    limits.timed_out("slow", 80.0)
    limits.timed_out("slow", 120.0)
    assert limits.limit_s("slow", 1) == 120.0
    limits.answered("slow", 30.0)
    assert limits.limit_s("slow", 1) == 60.0
    limits.answered("slow", 50.0)  # slower than before: the limit does not shrink
    assert limits.limit_s("slow", 1) == 60.0
    limits.answered("slow", 0.1)
    assert limits.limit_s("slow", 1) == 10.0


def test_a_lease_covers_one_attempt_at_the_cap() -> None:
    dispatcher = OutboxDispatcher(None, {}, None, attempt_timeout_s=1.0, attempt_timeout_max_s=300.0, lane_batch=20)  # type: ignore[arg-type]
    assert dispatcher.lease_s() >= 300.0
