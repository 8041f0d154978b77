"""Data versions: bumped after commit only; a cache keeps its value while its versions stand."""

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from django.db import transaction

from kernel import versions
from kernel.redis import key, sync_client

pytestmark = pytest.mark.django_db(transaction=True)


class Counter:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, arg: str) -> int:
        self.calls += 1
        return self.calls


def test_a_bump_lands_when_the_transaction_commits_and_never_on_rollback() -> None:
    with transaction.atomic():
        versions.bump_on_commit("x")
        assert versions.read(("x",)) is None  # not before the commit
    first = versions.read(("x",))
    assert first is not None
    with pytest.raises(RuntimeError), transaction.atomic():
        versions.bump_on_commit("x")
        raise RuntimeError("rolled back")
    assert versions.read(("x",)) == first
    versions.bump_on_commit("x")
    assert versions.read(("x",)) not in (None, first)


def test_a_version_lost_with_redis_is_never_reused() -> None:
    compute = Counter()
    cache: versions.VersionedCache[str, int] = versions.VersionedCache(("a",), compute)
    versions.bump_on_commit("a")
    assert [cache.get("k"), cache.get("k")] == [1, 1]
    sync_client().delete(key("version", "a"))  # Redis restarted empty
    versions.bump_on_commit("a")  # the next write
    assert cache.get("k") == 2


def test_the_cache_keeps_its_value_until_a_version_moves() -> None:
    versions.bump_on_commit("a")
    versions.bump_on_commit("b")
    compute = Counter()
    cache: versions.VersionedCache[str, int] = versions.VersionedCache(("a", "b"), compute)
    assert [cache.get("k"), cache.get("k")] == [1, 1]
    versions.bump_on_commit("b")
    assert [cache.get("k"), cache.get("k")] == [2, 2]


def test_no_caching_while_a_version_is_missing(settings: Any) -> None:
    versions.bump_on_commit("a")
    compute = Counter()
    cache: versions.VersionedCache[str, int] = versions.VersionedCache(("a", "b"), compute)
    assert [cache.get("k"), cache.get("k")] == [1, 2]
    versions.bump_on_commit("b")
    assert [cache.get("k"), cache.get("k")] == [3, 3]
    sync_client().delete(key("version", "a"))  # Redis lost its keys: nothing cached is trusted
    assert cache.get("k") == 4


def test_entries_by_key_within_the_size() -> None:
    versions.bump_on_commit("a")
    cache: versions.VersionedCache[str, str] = versions.VersionedCache(("a",), lambda k: k * 2, size=2)
    assert [cache.get("x"), cache.get("y"), cache.get("z")] == ["xx", "yy", "zz"]
    assert list(cache._entries) == ["y", "z"]  # the oldest went


def test_a_seeding_cache_creates_a_missing_version_and_a_later_commit_still_retires_its_entry() -> None:
    compute = Counter()
    cache: versions.VersionedCache[str, int] = versions.VersionedCache(("s",), compute, seed=True)
    assert [cache.get("k"), cache.get("k")] == [1, 1]  # no version yet: made, then kept under it
    seeded = versions.read(("s",))
    assert seeded is not None
    versions.bump_on_commit("s")
    assert cache.get("k") == 2 and versions.read(("s",)) != seeded
    sync_client().delete(key("version", "s"))  # Redis emptied: a new version, never the old one
    assert [cache.get("k"), cache.get("k")] == [3, 3]


def test_a_pinned_block_reads_each_version_once_and_sees_later_bumps_after_it() -> None:
    versions.bump_on_commit("p")
    with versions.pinned():
        first = versions.read(("p",))
        versions.bump_on_commit("p")
        assert versions.read(("p",)) == first
    assert versions.read(("p",)) not in (None, first)


def test_a_pinned_block_inside_another_keeps_the_outer_reads() -> None:
    versions.bump_on_commit("q")
    with versions.pinned():
        first = versions.read(("q",))
        with versions.pinned():  # e.g. an order submitted directly within a pinned block
            versions.bump_on_commit("q")
            assert versions.read(("q",)) == first
        assert versions.read(("q",)) == first  # the inner block's end does not unpin the outer
    assert versions.read(("q",)) not in (None, first)


def test_a_pinned_block_reads_the_seeded_versions_with_its_first_read_or_a_round_trip_made_anyway(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A pinned block reads nothing until a version is asked for: then the seeded caches' versions
    come with that read, or, handed to `supply`, with a round trip its caller makes anyway."""
    monkeypatch.setattr(versions, "_hot", {"hot"})  # as a seeded cache of "hot" would
    versions.bump_on_commit("hot")
    versions.bump_on_commit("cold")
    hot_now = versions.read(("hot",))
    assert versions.unread_hot() == []  # outside a block
    fetched: list[list[str]] = []
    mget = versions.mget
    monkeypatch.setattr(versions, "mget", lambda names: fetched.append(names) or mget(names))
    with versions.pinned():
        assert fetched == [] and versions.unread_hot() == ["hot"]
        versions.read(("cold",))
        assert versions.unread_hot() == []
        assert fetched == [versions.keys_of(["hot", "cold"])]  # one round trip
        assert versions.read(("hot",)) == hot_now and len(fetched) == 1
    fetched.clear()
    with versions.pinned():
        versions.supply(versions.unread_hot(), [b"supplied"])
        assert versions.read(("hot",)) == (b"supplied",) and fetched == []


def test_keys_are_computed_side_by_side_and_each_key_once() -> None:
    """Once a version moves on, every key misses: a slow computation of one key must not hold the
    others (a bot's request behind every other key's statement), and threads asking for the same key
    meanwhile wait for its one computation."""
    versions.bump_on_commit("w")
    slow_started, release = threading.Event(), threading.Event()
    calls: list[str] = []

    def compute(arg: str) -> str:
        calls.append(arg)
        if arg == "slow":
            slow_started.set()
            assert release.wait(10)
        return arg.upper()

    cache: versions.VersionedCache[str, str] = versions.VersionedCache(("w",), compute, size=10)
    with ThreadPoolExecutor(max_workers=3) as pool:
        slow = [pool.submit(cache.get, "slow") for _ in range(2)]
        assert slow_started.wait(10)
        assert pool.submit(cache.get, "fast").result(timeout=10) == "FAST"  # not behind "slow"
        release.set()
        assert [f.result(timeout=10) for f in slow] == ["SLOW", "SLOW"]
    assert sorted(calls) == ["fast", "slow"]
    assert cache._computing == {}  # no lock is kept for a key once computed
