"""FIX market data: subscriptions, snapshot, incremental, reject, and the hop into the LP manager."""

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import pytest

from fix.selectors import fix_session_state
from kernel.redis import sync_client
from marketdata.adapters.base import VenueConfig
from marketdata.adapters.fix import FixAdapter, encode_rows, fixmd_channel
from marketdata.lpmanager import LPManager, VenueSettings
from marketdata.models import VenueSymbol
from marketdata.quotes import Quote
from tests.support.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]


class QuoteTap:
    """Subscribes to a venue's FIX quote channel the way the market loop's adapter does."""

    def __init__(self, venue: str) -> None:
        self.pubsub = sync_client().pubsub(ignore_subscribe_messages=True)
        self.pubsub.subscribe(fixmd_channel(venue))
        self.rows: list[list[object]] = []

    def next(self, timeout: float = 5.0) -> list[object]:
        def poll() -> bool:
            message = self.pubsub.get_message(timeout=0.1)
            if message is not None:
                self.rows.extend(json.loads(message["data"]))
            return bool(self.rows)

        wait_until(poll, timeout_s=timeout, interval_s=0)
        return self.rows.pop(0)

    def close(self) -> None:
        self.pubsub.close()


@pytest.fixture
def tap():
    t = QuoteTap("lpx")
    yield t
    t.close()


def subscriptions(peer) -> dict[str, str]:
    """Symbol -> MDReqID of the next two subscribe requests, checking their shape."""
    out = {}
    for _ in range(2):
        request = peer.expect("V", where={"263": "1"})
        assert (request["264"], request["265"]) == ("1", "1")
        assert request.all("269") == ["0", "1"] and request["267"] == "2" and request["146"] == "1"
        out[request["55"]] = request["262"]
    return out


def snapshot(peer, req_id: str, symbol: str, bid: str, ask: str) -> None:
    body = [(262, req_id), (55, symbol), (268, "2"), (269, "0"), (270, bid), (271, "1000000")]
    peer.send("W", [*body, (269, "1"), (270, ask), (271, "2000000")])


@pytest.mark.django_db(transaction=True)
def test_it_subscribes_each_symbol_and_publishes_snapshot_and_incremental_quotes(
    peer, make_session, run_engine, tap
):
    make_session(peer.port)
    run_engine()
    peer.expect("A")
    reqs = subscriptions(peer)
    assert set(reqs) == {"EUR/USD", "USD/JPY"}

    snapshot(peer, reqs["EUR/USD"], "EUR/USD", "1.08510", "1.08522")
    assert tap.next()[:5] == ["EUR/USD", "1.08510", "1.08522", "1000000", "2000000"]

    # an incremental refresh that moves only the bid keeps the offer
    peer.send(
        "X", [(262, reqs["EUR/USD"]), (268, "1"), (279, "1"), (269, "0"), (55, "EUR/USD"), (270, "1.08515")]
    )
    assert tap.next()[:5] == ["EUR/USD", "1.08515", "1.08522", "1000000", "2000000"]

    # two entries for two symbols in one message; the second symbol has no offer yet: no quote
    peer.send(
        "X",
        [
            (268, "2"),
            (279, "1"),
            (269, "1"),
            (55, "EUR/USD"),
            (270, "1.08530"),
            (271, "500000"),
            (279, "0"),
            (269, "0"),
            (55, "USD/JPY"),
            (270, "150.010"),
        ],
    )
    assert tap.next()[:5] == ["EUR/USD", "1.08515", "1.08530", "1000000", "500000"]
    peer.send("X", [(268, "1"), (279, "0"), (269, "1"), (55, "USD/JPY"), (270, "150.024")])
    assert tap.next()[:3] == ["USD/JPY", "150.010", "150.024"]

    # a deleted side leaves the symbol without a two-sided quote until it is back
    peer.send("X", [(268, "1"), (279, "2"), (269, "0"), (55, "USD/JPY")])
    peer.send("X", [(268, "1"), (279, "0"), (269, "0"), (55, "USD/JPY"), (270, "150.012")])
    assert tap.next()[:3] == ["USD/JPY", "150.012", "150.024"]


@pytest.mark.django_db(transaction=True)
def test_a_rejected_subscription_is_not_left_marked_subscribed(peer, make_session, run_engine):
    session = make_session(peer.port)
    run_engine()
    peer.expect("A")
    reqs = subscriptions(peer)
    wait_until(lambda: len((fix_session_state(session=session) or {}).get("subscribed", [])) == 2)

    peer.send("Y", [(262, reqs["USD/JPY"]), (281, "0"), (58, "unknown symbol")])
    state = wait_until(
        lambda: (s := fix_session_state(session=session)) and s["subscribed"] == ["EUR/USD"] and s
    )
    assert state["rejected"] == {"USD/JPY": "0: unknown symbol"}


@pytest.mark.django_db(transaction=True)
def test_symbol_changes_unsubscribe_live_and_every_logon_restores_subscriptions(
    peer, make_session, run_engine, fix_venue
):
    session = make_session(peer.port)
    run_engine()
    peer.expect("A")
    reqs = subscriptions(peer)

    VenueSymbol.objects.filter(venue=fix_venue, venue_symbol="USD/JPY").update(enabled=False)
    cancel = peer.expect("V", where={"263": "2"})
    assert (cancel["262"], cancel["55"]) == (reqs["USD/JPY"], "USD/JPY")
    wait_until(lambda: (fix_session_state(session=session) or {}).get("subscribed") == ["EUR/USD"])

    VenueSymbol.objects.filter(venue=fix_venue, venue_symbol="USD/JPY").update(enabled=True)
    assert peer.expect("V", where={"263": "1"})["55"] == "USD/JPY"

    peer.disconnect()
    peer.expect("A", timeout=6)
    assert set(subscriptions(peer)) == {"EUR/USD", "USD/JPY"}


async def test_the_fix_adapter_feeds_redis_quotes_into_the_lp_manager():
    received: list[Quote] = []
    manager = LPManager({"lpx": VenueSettings(priority=5, stale_after_ms=1000)}, outputs=[])
    venue = VenueConfig(code="lpx", kind="fix", symbols={"EUR/USD": "EURUSD"})

    def sink(quote: Quote) -> None:
        received.append(quote)
        manager.on_quote(quote)

    adapter = FixAdapter(venue, sink)
    task = asyncio.create_task(adapter.run())
    try:
        for _ in range(100):
            if adapter.stats.state == "streaming":
                break
            await asyncio.sleep(0.02)
        rows = [("EUR/USD", "1.1", "1.2", "5", None, 1), ("GBP/USD", "1.3", "1.4", None, None, 2)]
        client = sync_client()
        client.publish(fixmd_channel("lpx"), encode_rows(rows))  # type: ignore[arg-type]
        client.publish(fixmd_channel("lpx"), "not json")
        client.publish(fixmd_channel("lpx"), '[["EUR/USD", "x", "1.2", null, null, 3]]')
        for _ in range(100):
            if adapter.stats.malformed == 2:
                break
            await asyncio.sleep(0.02)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert [(q.symbol, q.bid, q.ask, q.bid_size, q.ask_size) for q in received] == [
        ("EURUSD", Decimal("1.1"), Decimal("1.2"), Decimal(5), None)
    ]
    assert adapter.stats.malformed == 2
    selected = manager.last["EURUSD"]
    assert selected.tradable and selected.quote is not None and selected.quote.venue == "lpx"


def test_the_market_loop_side_imports_neither_the_fix_app_nor_quickfix():
    code = (
        "import sys, marketdata.adapters.fix; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('fix', 'quickfix')))"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "livermore.settings"}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


def count_beacons(pubsub, for_s: float) -> int:
    """Empty batches (liveness beacons) received on the venue's quote channel within `for_s`."""
    deadline, count = time.monotonic() + for_s, 0
    while time.monotonic() < deadline:
        message = pubsub.get_message(timeout=0.1)
        if message is not None and json.loads(message["data"]) == []:
            count += 1
    return count


@pytest.mark.django_db(transaction=True)
def test_beacons_flow_while_the_peer_answers_and_stop_when_it_falls_silent(peer, make_session, run_engine):
    pubsub = sync_client().pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(fixmd_channel("lpx"))
    try:
        make_session(peer.port)  # HeartBtInt 1 s
        run_engine()
        peer.expect("A")
        # No quote at all: the book is quiet, the session answers test requests, the beacons say so.
        assert count_beacons(pubsub, 4.0) >= 3
        # The peer stays connected and says nothing more (nor answers the logon of a reconnect).
        peer.auto_heartbeat = peer.auto_logon = False
        silent_at = time.monotonic()
        while count_beacons(pubsub, 1.2):  # until a whole 1.2 s passes without a beacon
            assert time.monotonic() - silent_at < 8, "beacons go on for a silent peer"
        # The last beacon within 2 HeartBtInt + 1 s, then at most the window that held it and the empty one
        assert time.monotonic() - silent_at <= 3 + 1.2 + 1.2 + 1.0
    finally:
        pubsub.close()
