"""The subscription cache (pure): local changes are never undone by a database read that started before them.

The delivery service reads subscriptions from the database (at start, every `refresh_s`, and one at a time when a row
names a subscription it does not know) while the API changes them on this node. A read is a snapshot taken at some
moment; a change committed after that moment must survive the read's result being applied. So every change and every
applied read gets a version from one counter, a read remembers the version at which it began, and applying it keeps
every entry changed since then:

    token = cache.begin_read()
    subs = await repo.all()          # other tasks may put/remove meanwhile
    cache.apply_all(token, subs)     # one swap; entries changed after `token` keep their newer value
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from safecity.warning.notify.subscriptions import Subscription


class SubscriptionCache:
    """Subscriptions by id, with versioned reads so a reload never drops a subscription created while it ran."""

    def __init__(self) -> None:
        self._subs: dict[str, Subscription] = {}
        self._version = 0
        # Version of the last change of each id, kept while a read that began before it may still be applied.
        self._changed: dict[str, int] = {}
        self._reads: Counter[int] = Counter()

    def __len__(self) -> int:
        return len(self._subs)

    def get(self, sub_id: str) -> Subscription | None:
        """One subscription, or None."""
        return self._subs.get(sub_id)

    def values(self) -> list[Subscription]:
        """Every cached subscription."""
        return list(self._subs.values())

    def _touch(self, sub_id: str) -> None:
        self._version += 1
        if self._reads:
            self._changed[sub_id] = self._version

    def put(self, sub: Subscription) -> None:
        """Record a subscription created or changed here (call after its commit)."""
        self._subs[sub.id] = sub
        self._touch(sub.id)

    def remove(self, sub_id: str) -> None:
        """Record a subscription deleted here (call after its commit)."""
        self._subs.pop(sub_id, None)
        self._touch(sub_id)

    def begin_read(self) -> int:
        """Start a database read; pass the token to `apply_all`/`apply_one`, or to `cancel_read` if it failed."""
        self._reads[self._version] += 1
        return self._version

    def cancel_read(self, token: int) -> None:
        """Forget a read that will not be applied."""
        self._end(token)

    def apply_all(self, token: int, subs: Iterable[Subscription]) -> None:
        """Replace the cache with a full read, keeping the entries changed since the read began."""
        fresh = {s.id: s for s in subs}
        for sub_id, version in self._changed.items():
            if version > token:
                current = self._subs.get(sub_id)
                if current is None:
                    fresh.pop(sub_id, None)
                else:
                    fresh[sub_id] = current
        self._subs = fresh
        self._end(token)

    def apply_one(self, token: int, sub_id: str, sub: Subscription | None) -> Subscription | None:
        """Apply a read of one subscription unless it changed since the read began; return the cached value."""
        if self._changed.get(sub_id, 0) <= token:
            if sub is None:
                self._subs.pop(sub_id, None)
            else:
                self._subs[sub_id] = sub
            # A full read that began before this one must not overwrite it with its older snapshot.
            self._touch(sub_id)
        self._end(token)
        return self._subs.get(sub_id)

    def _end(self, token: int) -> None:
        self._reads[token] -= 1
        if self._reads[token] <= 0:
            del self._reads[token]
        # Changes older than every read still running can no longer be overwritten: forget them.
        oldest = min(self._reads, default=self._version)
        self._changed = {k: v for k, v in self._changed.items() if v > oldest}
