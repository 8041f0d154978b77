"""runfix and the LP simulator as real processes (`manage.py runfix`, `manage.py fix_lp_simulator`)."""

import os
import signal
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.db import connection
from rest_framework_simplejwt.tokens import AccessToken

from brokerage.models import Deal, GroupInstrument, OrderStatus, Position, Posting
from brokerage.services import order_submit
from fix.models import FixOrder, FixOrderState
from fix.selectors import fix_session_state
from livermore.asgi import application
from marketdata.models import Instrument
from tests.brokerage.conftest import Market, ledger_problems
from tests.support.stack import free_port
from tests.support.waiting import wait_until

from .conftest import PASSWORD

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]
ROOT = Path(__file__).resolve().parents[2]
D = Decimal


@pytest.fixture
def spawn(tmp_path):
    """Start a manage.py command against the test database; every process is killed at teardown."""
    processes: list[subprocess.Popen[bytes]] = []
    db = connection.settings_dict
    env = {
        **os.environ,
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "REDIS_URL": settings.REDIS_URL,
        "REDIS_PREFIX": settings.REDIS_PREFIX,
        "FIX_STORE_DIR": str(tmp_path / "store"),
        "FIX_LEASE_TTL_S": "1",
        "LOG_LEVEL": "INFO",
    }

    def start(*args: str) -> subprocess.Popen[bytes]:
        log = open(tmp_path / f"{args[0]}-{len(processes)}.log", "wb")  # noqa: SIM115
        process = subprocess.Popen(
            [sys.executable, "manage.py", *args], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
        )
        processes.append(process)
        return process

    yield start
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def test_runfix_killed_with_sigkill_continues_its_sequence_numbers_after_a_restart(peer, make_session, spawn):
    make_session(peer.port, role="trading", venue=None, heartbeat_s=1)
    runfix = spawn("runfix")
    first = peer.expect("A", timeout=20)
    assert first["34"] == "1"
    for _ in range(3):
        peer.send("0")
    time.sleep(2.5)  # heartbeats both ways
    last_out = max(m.seq for m in peer.drain())

    runfix.send_signal(signal.SIGKILL)
    runfix.wait(timeout=5)
    spawn("runfix")
    again = peer.expect("A", timeout=20)

    assert int(again["34"]) == last_out + 1 and again.get("141") != "Y"
    time.sleep(1.5)
    assert not [m for m in peer.drain() if m.type in ("2", "5")]  # no resend request, no logout


def test_runfix_answers_a_resend_with_a_gap_fill_re_subscribes_and_keeps_the_password_off_disk(
    peer, make_session, spawn, tmp_path
):
    make_session(peer.port, heartbeat_s=5)
    runfix = spawn("runfix")
    logon = peer.expect("A", timeout=20)
    first = [peer.expect("V"), peer.expect("V")]

    peer.send("2", [(7, str(logon.seq)), (16, "0")])  # the Logon, with its password, included
    gap_fill = peer.expect("4")
    assert gap_fill["123"] == "Y" and gap_fill.seq == logon.seq
    again = [peer.expect("V"), peer.expect("V")]
    assert sorted(v["55"] for v in again) == sorted(v["55"] for v in first)
    assert all(v.seq >= int(gap_fill["36"]) for v in again)

    runfix.send_signal(signal.SIGTERM)
    runfix.wait(timeout=15)
    files = [p for p in (tmp_path / "store").rglob("*") if p.is_file()]
    assert files and not [p for p in files if PASSWORD.encode() in p.read_bytes()]


async def test_an_a_book_order_is_filled_by_the_simulator_process_and_streamed_to_the_client(
    make_session, a_book, spawn
):
    session = await sync_to_async(make_session)(
        free_port(), target_comp_id="LPSIM", name="lpsim", heartbeat_s=5
    )
    account = await sync_to_async(a_book)(session)
    spawn("fix_lp_simulator", "--session", "lpsim", "--interval-ms", "200")
    spawn("runfix")
    await sync_to_async(GroupInstrument.objects.create)(
        group=account.group,
        instrument=await sync_to_async(Instrument.objects.get)(symbol="EURUSD"),
        commission_per_lot=D("7"),
    )
    logged_on = lambda: (fix_session_state(session=session) or {}).get("logged_on")  # noqa: E731
    await sync_to_async(wait_until)(logged_on, timeout_s=30)

    token = str(AccessToken.for_user(await sync_to_async(lambda: account.owner)()))
    ws = WebsocketCommunicator(application, "/ws/v1/stream")
    connected, _ = await ws.connect()
    assert connected
    try:
        await ws.send_json_to({"type": "auth", "token": token})
        assert (await ws.receive_json_from(timeout=5))["type"] == "authenticated"
        await ws.send_json_to({"type": "subscribe", "channels": [f"account:{account.number}"]})
        assert (await ws.receive_json_from(timeout=5))["type"] == "snapshot"

        await sync_to_async(Market().set)("EURUSD", "1.08500", "1.08512")  # fresh for the dealing engine
        order = await sync_to_async(order_submit)(
            account=account, symbol="EURUSD", side="buy", volume=D("0.2")
        )
        assert order.status == OrderStatus.ROUTED
        events = []
        while not any(e["type"] == "position" for e in events):
            events.append(await ws.receive_json_from(timeout=20))
    finally:
        await ws.disconnect()

    filled = [e["data"] for e in events if e["type"] == "order" and e["data"]["status"] == "filled"]
    assert filled and filled[0]["id"] == order.pk
    fix_order = await sync_to_async(FixOrder.objects.get)(order=order)
    assert fix_order.state == FixOrderState.FILLED
    position = await sync_to_async(Position.objects.get)(account=account)
    deal = await sync_to_async(Deal.objects.get)(order=order)
    assert (position.volume, position.open_price) == (D("0.2"), deal.price)
    assert deal.price == fix_order.avg_px + D("0.00002")
    commission = await sync_to_async(
        lambda: list(Posting.objects.filter(transaction__deal=deal).values_list("amount", flat=True))
    )()
    assert sorted(commission) == [D("-1.4"), D("1.4")]  # 0.2 lot x 7: client pays, house revenue
    assert await sync_to_async(ledger_problems)() == []
    await sync_to_async(lambda: connection.close())()  # the executor thread's connection, before teardown
