"""Data versions: bumped after commit only; a cache keeps its value while its versions stand."""

from typing import Any

import pytest
from django.db import transaction

from kernel import versions
from kernel.redis import key, sync_client

pytestmark = pytest.mark.django_db(transaction=True)


class Counter:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> int:
        self.calls += 1
        return self.calls


def test_a_bump_lands_when_the_transaction_commits_and_never_on_rollback() -> None:
    with transaction.atomic():
        versions.bump_on_commit("x")
        assert versions.read(("x",)) is None  # not before the commit
    assert versions.read(("x",)) == (1,)
    with pytest.raises(RuntimeError), transaction.atomic():
        versions.bump_on_commit("x")
        raise RuntimeError("rolled back")
    assert versions.read(("x",)) == (1,)


def test_the_cache_keeps_its_value_until_a_version_moves() -> None:
    versions.bump_on_commit("a")
    versions.bump_on_commit("b")
    compute = Counter()
    cache: versions.VersionedCache[int] = versions.VersionedCache(("a", "b"), compute)
    assert [cache.get(), cache.get()] == [1, 1]
    versions.bump_on_commit("b")
    assert [cache.get(), cache.get()] == [2, 2]


def test_no_caching_while_a_version_is_missing(settings: Any) -> None:
    versions.bump_on_commit("a")
    compute = Counter()
    cache: versions.VersionedCache[int] = versions.VersionedCache(("a", "b"), compute)
    assert [cache.get(), cache.get()] == [1, 2]
    versions.bump_on_commit("b")
    assert [cache.get(), cache.get()] == [3, 3]
    sync_client().delete(key("version", "a"))  # Redis lost its keys: nothing cached is trusted
    assert cache.get() == 4
