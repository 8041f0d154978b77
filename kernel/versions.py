"""Data versions for read caches that must never serve what a commit has replaced.

A writer calls `bump_on_commit(name)` in the transaction that changes the data: once the transaction
has committed, the version `name` in Redis takes a new random value. A reader reads the versions
first and then the data: what it read is at least as new as every commit whose bump it saw, so it
may keep the result under those versions, and a later commit replaces the version and retires the
entry. A version is never reused (a counter would start again at 1 after Redis lost its keys and
could match an entry kept from before), and one that is not there (Redis flushed, nothing written
yet) means "do not cache".
"""

from collections.abc import Callable, Hashable, Iterator, Sequence
from contextlib import contextmanager
from threading import Lock, local
from typing import Generic, TypeVar, cast
from uuid import uuid4

from django.db import transaction

from kernel.redis import key, mget, sync_client

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")


def _key(name: str) -> str:
    return key("version", name)


def bump_on_commit(name: str) -> None:
    """Give `name` a new version once the current transaction commits (at once outside one)."""
    transaction.on_commit(lambda: sync_client().set(_key(name), uuid4().hex), robust=True)


_pins = local()
# The versions of the seeded caches (data read on every order): a pinned block reads them all with its
# first read of a version, in one round trip.
_hot: set[str] = set()


@contextmanager
def pinned(*, ahead: bool = False) -> Iterator[None]:
    """Within the block this thread reads each version once (the seeded caches' ones together, with
    the block's first read, or in a round trip the caller makes anyway: `unread_hot`; with `ahead`,
    at once): the work done in it may use data as of that read, as though all of it had been done
    then (a dealer's orders, which arrived before it started, read them once, not once per order and
    cache). Within an enclosing pinned block it keeps that block's reads."""
    if getattr(_pins, "reads", None) is not None:
        yield
        return
    _pins.reads, _pins.hot_unread = {}, True
    try:
        if ahead and (hot := unread_hot()):
            supply(hot, mget(keys_of(hot)))
        yield
    finally:
        del _pins.reads, _pins.hot_unread


def unread_hot() -> list[str]:
    """The seeded caches' version names when this thread's pinned block has not read them yet, else
    none: for a caller making a round trip to Redis anyway, which reads their keys (`keys_of`) with it
    and hands the values to `supply`."""
    return sorted(_hot) if getattr(_pins, "reads", None) is not None and _pins.hot_unread else []


def keys_of(names: Sequence[str]) -> list[str]:
    """The Redis keys of the versions `names`."""
    return [_key(n) for n in names]


def supply(names: Sequence[str], values: Sequence[bytes | None]) -> None:
    """The versions `names` as just read from Redis (None for one missing), for the pinned block."""
    _pins.reads.update(zip(names, values, strict=True))
    _pins.hot_unread = False


def read(names: tuple[str, ...], *, seed: bool = False) -> tuple[bytes, ...] | None:
    """The versions, or None when any is missing. With `seed`, a missing version is first given a
    value (SET NX): safe because the caller reads the data after it, so what it keeps is at least as
    new as that version, and a later commit replaces it."""
    reads: dict[str, bytes | None] | None = getattr(_pins, "reads", None)
    if reads is None:
        return _read(names, seed=seed)
    if hot := unread_hot():  # the block's first read: the seeded caches' versions come with it
        wanted = [*hot, *(n for n in names if n not in _hot)]
        supply(wanted, mget(keys_of(wanted)))
    known = tuple(v for n in names if (v := reads.get(n)) is not None)
    if len(known) == len(names):
        return known
    found = _read(names, seed=seed)  # not read yet in the block, or missing
    if found is not None:
        reads.update(zip(names, found, strict=True))
    return found


def _read(names: tuple[str, ...], *, seed: bool) -> tuple[bytes, ...] | None:
    raw = mget(keys_of(names))
    if seed and any(r is None for r in raw):
        client = sync_client()
        for name, value in zip(names, raw, strict=True):
            if value is None:
                client.set(_key(name), uuid4().hex, nx=True)
        raw = mget(keys_of(names))
    if any(r is None for r in raw):
        return None
    return tuple(r for r in raw if r is not None)


class VersionedCache(Generic[K, T]):
    """Values by key, kept per process and computed again when any of `names` has moved on (or is
    missing). At most `size` keys are kept: past that the oldest entries are dropped. With `seed`, a
    missing version is created rather than computing on every read (for data read on every order)."""

    def __init__(
        self, names: tuple[str, ...], compute: Callable[[K], T], *, size: int = 1, seed: bool = False
    ) -> None:
        self.names = names
        self.compute = compute
        self.size = size
        self.seed = seed
        if seed:
            _hot.update(names)
        self._entries: dict[K, tuple[tuple[bytes, ...], T]] = {}
        self._lock = Lock()  # guards _computing
        self._computing: dict[K, Lock] = {}  # a lock per key being computed

    @property
    def keys(self) -> list[str]:
        """The Redis keys of its versions, in the order of `names`."""
        return keys_of(self.names)

    def kept(self, arg: K) -> tuple[tuple[bytes, ...], T] | None:
        """The versions and the value kept for `arg`, unchecked: for a caller that reads the versions
        in a round trip it makes anyway, then passes them to `get_as_of`."""
        return self._entries.get(arg)

    def get(self, arg: K) -> T:
        return self.get_as_of(arg, read(self.names, seed=self.seed))

    def get_as_of(self, arg: K, read_now: Sequence[bytes | None] | None) -> T:
        """The value for `arg`, given its versions as just read from Redis (None for one missing)."""
        versions = None if read_now is None or None in read_now else cast(tuple[bytes, ...], tuple(read_now))
        entry = self._entries.get(arg)
        if versions is not None and entry is not None and entry[0] == versions:
            return entry[1]
        # One computation per key and version, however many threads ask for it at once; other keys
        # are computed meanwhile (after a version moves on, every key misses at once: one lock for
        # all of them queued each request behind every other key's statement).
        with self._lock:
            computing = self._computing.setdefault(arg, Lock())
        with computing:
            entry = self._entries.get(arg)
            if versions is not None and entry is not None and entry[0] == versions:
                return entry[1]
            value = self.compute(arg)
            with self._lock:
                if versions is not None:
                    self._entries.pop(arg, None)
                    while len(self._entries) >= self.size:
                        del self._entries[next(iter(self._entries))]
                    self._entries[arg] = (versions, value)
                if self._computing.get(arg) is computing:
                    del self._computing[arg]
            return value
