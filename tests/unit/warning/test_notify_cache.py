"""The subscription cache: a database read never undoes a change made after it began."""

from __future__ import annotations

from safecity.kernel import clock, ids
from safecity.warning.notify.cache import SubscriptionCache
from safecity.warning.notify.subscriptions import Channel, Subscription, SubscriptionFilter


def _sub(name: str = "s", sub_id: str | None = None) -> Subscription:
    return Subscription(
        id=sub_id or ids.new_id(),
        name=name,
        channel=Channel.MQTT,
        target="safecity/alerts",
        filter=SubscriptionFilter(),
        created_at=clock.now(),
    )


def test_a_full_read_keeps_changes_made_while_it_ran() -> None:
    cache = SubscriptionCache()
    kept, renamed, deleted = _sub(), _sub("old"), _sub()
    for sub in (kept, renamed, deleted):
        cache.put(sub)
    token = cache.begin_read()
    snapshot = [kept, renamed, deleted]  # what the database held when the read began
    created = _sub()
    cache.put(created)
    cache.put(renamed.model_copy(update={"name": "new"}))
    cache.remove(deleted.id)
    cache.apply_all(token, snapshot)
    assert {s.id for s in cache.values()} == {kept.id, renamed.id, created.id}
    now = cache.get(renamed.id)
    assert now is not None and now.name == "new"


def test_a_full_read_replaces_what_did_not_change_here() -> None:
    cache = SubscriptionCache()
    gone, stays = _sub(), _sub()
    cache.put(gone)
    cache.put(stays)
    elsewhere = _sub()  # created on another node
    cache.apply_all(cache.begin_read(), [stays, elsewhere])
    assert {s.id for s in cache.values()} == {stays.id, elsewhere.id}


def test_a_single_read_loses_to_a_later_local_change_and_wins_over_an_older_full_read() -> None:
    cache = SubscriptionCache()
    sub = _sub()
    token = cache.begin_read()
    cache.remove(sub.id)  # deleted here after the row was read
    assert cache.apply_one(token, sub.id, sub) is None
    full = cache.begin_read()
    one = cache.begin_read()
    found = _sub(sub_id=sub.id)
    assert cache.apply_one(one, sub.id, found) == found
    cache.apply_all(full, [])  # began before the single read: its older snapshot must not drop what that found
    assert cache.get(sub.id) == found


def test_a_cancelled_read_changes_nothing() -> None:
    cache = SubscriptionCache()
    sub = _sub()
    cache.put(sub)
    cache.cancel_read(cache.begin_read())
    assert cache.values() == [sub]
    assert len(cache) == 1
