from decimal import Decimal as D
from typing import Any

import pytest

from brokerage import services
from brokerage.services import events
from marketdata.hub import batch_wire, envelope, plain

from .conftest import set_commission

pytestmark = pytest.mark.django_db


def test_a_fills_events_go_out_as_a_round_trip_through_json_would_send_them(
    account, instruments, market, monkeypatch, django_capture_on_commit_callbacks
):
    set_commission(account.group, instruments["EURUSD"], "7")
    sent: list[events.Outbox] = []
    monkeypatch.setattr(events._publisher, "put", sent.append)
    market.set("EURUSD", "1.1000", "1.1002")
    with django_capture_on_commit_callbacks(execute=True):
        services.order_submit(account=account, symbol="EURUSD", side="buy", volume=D("1"))
    (outbox,) = sent
    assert [name for name, _ in outbox.events] == ["order", "account", "deal", "position"]
    group = account.stream_group

    def wire(data: Any) -> tuple[str, bytes]:
        return batch_wire(group, [envelope(outbox.targets, name, data(d)) for name, d in outbox.events])

    assert wire(lambda d: d) == wire(plain)
