import threading

import pytest
from rest_framework.throttling import SimpleRateThrottle

from kernel.throttling import ScopedWriteThrottle
from users.models import User

pytestmark = pytest.mark.django_db


def test_concurrent_requests_never_pass_beyond_the_rate(alice: User, monkeypatch: pytest.MonkeyPatch) -> None:
    """The window is checked and recorded in one Redis script: requests racing from many threads
    cannot all read the same history and all pass (DRF's cache-based throttle lets them)."""
    monkeypatch.setitem(SimpleRateThrottle.THROTTLE_RATES, "orders", "5/min")
    request = type("R", (), {"method": "POST", "user": alice})()
    view = type("V", (), {"throttle_scope": "orders"})()
    start = threading.Barrier(20)
    results: list[bool] = []

    def check() -> None:
        throttle = ScopedWriteThrottle()
        start.wait()
        results.append(throttle.allow_request(request, view))

    threads = [threading.Thread(target=check) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count(True) == 5
    denied = ScopedWriteThrottle()
    assert not denied.allow_request(request, view)
    wait = denied.wait()
    assert wait is not None and 59 < wait <= 60
