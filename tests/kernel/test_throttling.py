import threading

import pytest
from rest_framework.exceptions import Throttled
from rest_framework.request import Request
from rest_framework.test import APIRequestFactory
from rest_framework.throttling import SimpleRateThrottle
from rest_framework.views import APIView

from kernel import throttling
from kernel.throttling import ScopedWriteThrottle, throttles_with
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


def test_a_views_throttles_are_checked_in_one_round_trip(
    alice: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An order checks the user's rate and the orders rate: one script call answers both."""
    monkeypatch.setitem(SimpleRateThrottle.THROTTLE_RATES, "orders", "2/min")
    checked: list[int] = []
    check = throttling._check

    def counted(windows: list[throttling.Window], now: float) -> object:
        checked.append(len(windows))
        return check(windows, now)

    monkeypatch.setattr(throttling, "_check", counted)
    view = type(
        "V", (APIView,), {"throttle_classes": throttles_with(ScopedWriteThrottle), "throttle_scope": "orders"}
    )()
    for _ in range(2):
        request = Request(APIRequestFactory().post("/"))
        request.user = alice
        view.check_throttles(request)
    request = Request(APIRequestFactory().post("/"))
    request.user = alice
    with pytest.raises(Throttled) as refused:
        view.check_throttles(request)
    wait = refused.value.wait  # type: ignore[attr-defined]
    assert wait is not None and 59 < wait <= 60
    assert checked == [2, 2, 2]
