"""Data versions for read caches that must never serve what a commit has replaced.

A writer calls `bump_on_commit(name)` in the transaction that changes the data: once the transaction
has committed, the version counter `name` in Redis goes up. A reader reads the versions first and
then the data: what it read is at least as new as every commit whose bump it saw, so it may keep the
result under those versions, and a later commit moves the counter on and retires the entry.
A counter that is not there (Redis flushed, nothing written yet) means "do not cache": a cache never
outlives the loss of its versions.
"""

from collections.abc import Callable
from threading import Lock
from typing import Generic, TypeVar

from django.db import transaction

from kernel.redis import key, mget, sync_client

T = TypeVar("T")


def _key(name: str) -> str:
    return key("version", name)


def bump_on_commit(name: str) -> None:
    """Move the counter `name` on once the current transaction commits (at once outside one)."""
    transaction.on_commit(lambda: sync_client().incr(_key(name)), robust=True)


def read(names: tuple[str, ...]) -> tuple[int, ...] | None:
    """The counters, or None when any is missing."""
    raw = mget([_key(n) for n in names])
    if any(r is None for r in raw):
        return None
    return tuple(int(r) for r in raw if r is not None)


class VersionedCache(Generic[T]):
    """One value per process, computed again when any of `names` has moved on (or is missing)."""

    def __init__(self, names: tuple[str, ...], compute: Callable[[], T]) -> None:
        self.names = names
        self.compute = compute
        self._entry: tuple[tuple[int, ...], T] | None = None
        self._lock = Lock()

    def get(self) -> T:
        versions = read(self.names)
        entry = self._entry
        if versions is not None and entry is not None and entry[0] == versions:
            return entry[1]
        with self._lock:  # one computation per version, however many threads ask at once
            entry = self._entry
            if versions is not None and entry is not None and entry[0] == versions:
                return entry[1]
            value = self.compute()
            if versions is not None:
                self._entry = (versions, value)
            return value
