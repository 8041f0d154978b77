"""A deal records the venue and the quote seq that priced it, so every fill is traced to its quote;
no deal is priced from a simulation where a live venue is, nor at all in a live deployment."""

import json
from decimal import Decimal as D

import pytest
from rest_framework.test import APIClient

from brokerage import services
from brokerage.models import Deal, Position, Reason
from brokerage.quotes import MemoryQuoteSource
from brokerage.router import Internal, RouteDecision, RouteRequest
from brokerage.watcher import TriggerWatcher
from kernel.errors import ServiceError
from kernel.redis import sync_client
from marketdata.lpmanager import LPManager, VenueSettings
from marketdata.publisher import ticker_key
from marketdata.quotes import Quote, SelectedQuote, now_ns
from tests.support.trading import open_account
from tests.support.waiting import wait_until


def origin(deal: Deal) -> tuple[str, int | None]:
    return deal.venue, deal.quote_seq


@pytest.mark.django_db
def test_market_fills_and_closes_record_the_venue_and_seq_of_the_quote_that_priced_them(account, market):
    opened_on = market.set("EURUSD", "1.1000", "1.1002")
    order = services.order_submit(account=account, symbol="EURUSD", side="buy", volume=D(1))
    deal = Deal.objects.get(order=order)
    assert origin(deal) == ("sim", opened_on.seq) and deal.price == opened_on.quote.ask

    partly_on = market.set("EURUSD", "1.1010", "1.1012")
    position = Position.objects.get()
    partial = services.position_close(position=position, volume=D("0.4"))
    assert origin(partial) == ("sim", partly_on.seq) and partial.price == D("1.1010")

    closed_on = market.set("EURUSD", "1.1020", "1.1022")
    (last,) = services.positions_close_bulk(account=account)
    assert origin(last) == ("sim", closed_on.seq) and last.price == D("1.1020")
    assert len({d.quote_seq for d in Deal.objects.all()}) == 3


@pytest.mark.django_db
def test_an_lp_fill_records_the_lp_venue_and_no_quote_seq(account, market, settings):
    settings.ORDER_GATEWAY = f"{__name__}.to_the_lp"
    market.set("EURUSD", "1.1000", "1.1002")
    order = services.order_submit(account=account, symbol="EURUSD", side="buy", volume=D(1))
    (deal,) = services.order_fill(order_id=order.pk, price=D("1.1001"), external_id="X-1", venue="lpx")
    assert origin(deal) == ("lpx", None)
    assert deal.reason == Reason.LP


class ToTheLp(Internal):
    def route(self, request: RouteRequest) -> RouteDecision:
        return RouteDecision(book="A", session="lp-test")


to_the_lp = ToTheLp()


@pytest.mark.django_db(transaction=True)
def test_trigger_watcher_fills_record_the_quote_that_fired_them(alice, group, market):
    watcher = TriggerWatcher(workers=2, margin_interval_s=0.1)
    try:
        account = open_account(alice, group, balance="1200")
        market.set("EURUSD", "1.1000", "1.1002")
        services.order_submit(account=account, symbol="EURUSD", side="buy", volume=D("0.1"), tp=D("1.1050"))
        pending = services.order_submit(
            account=account, symbol="EURUSD", side="buy", volume=D("0.9"), type="limit", price=D("1.0990")
        )
        watcher(market.selected("EURUSD", "1.1000", "1.1002"))
        assert watcher.ready.wait(10)

        fired = market.selected("EURUSD", "1.0986", "1.0988")  # a gap through the buy limit
        watcher(fired)
        wait_until(lambda: Deal.objects.filter(order=pending).exists())
        assert origin(Deal.objects.get(order=pending)) == ("sim", fired.seq)

        took_profit = market.selected("EURUSD", "1.1050", "1.1052")
        watcher(took_profit)
        wait_until(lambda: Deal.objects.filter(reason=Reason.TP).exists())
        assert origin(Deal.objects.get(reason=Reason.TP)) == ("sim", took_profit.seq)

        # 0.9 lot long from 1.0988 on a 1200 USD account: stopped out well before 1.0870
        stopped = market.selected("EURUSD", "1.0870", "1.0872")
        watcher(stopped)
        wait_until(lambda: Deal.objects.filter(reason=Reason.STOP_OUT).exists())
        assert origin(Deal.objects.get(reason=Reason.STOP_OUT)) == ("sim", stopped.seq)
    finally:
        watcher.stop()


def publish_to_ticker_cache(selected: SelectedQuote) -> None:
    """What the market process's publisher writes for each selected quote."""
    sync_client().set(ticker_key(selected.symbol), json.dumps(selected.to_wire()), ex=60)


@pytest.mark.django_db
def test_a_live_venue_going_stale_with_the_simulator_enabled_refuses_orders_with_no_price(account, market):
    market.symbols.add("EURUSD")  # cleaned up after the test
    memory = MemoryQuoteSource()
    clock = [now_ns()]
    manager = LPManager(
        {
            "live": VenueSettings(priority=10, stale_after_ms=200, symbols=frozenset({"EURUSD"})),
            "sim": VenueSettings(priority=1, stale_after_ms=30_000, simulated=True),
        },
        outputs=[publish_to_ticker_cache, memory.update],
        clock=lambda: clock[0],
    )

    def quote(venue: str, bid: str) -> Quote:
        return Quote("EURUSD", venue, D(bid), D(bid) + D("0.0002"), venue_ts=clock[0], recv_ts=clock[0])

    manager.on_quote(quote("sim", "1.2000"))
    manager.on_quote(quote("live", "1.1000"))
    order = services.order_submit(account=account, symbol="EURUSD", side="buy", volume=D("0.1"))
    assert origin(Deal.objects.get(order=order)) == ("live", manager.seq["EURUSD"])

    clock[0] += 1_000_000_000  # a second later: the live venue is silent, the simulator quotes on
    manager.on_quote(quote("sim", "1.2001"))
    manager.check()
    assert manager.selected["EURUSD"] is None
    for source in (None, memory):  # the ticker cache (web, worker) and the market process's copy
        with pytest.raises(ServiceError) as refused:
            services.order_submit(
                account=account, symbol="EURUSD", side="buy", volume=D("0.1"), quotes=source
            )
        assert (refused.value.code, refused.value.status_code) == ("no_price", 503)
    assert Deal.objects.count() == 1

    api = APIClient()
    api.force_authenticate(account.owner)
    refused_api = api.post(
        f"/api/v1/accounts/{account.number}/orders",
        {"symbol": "EURUSD", "side": "buy", "volume": "0.10"},
        format="json",
    )
    assert refused_api.status_code == 503
    assert refused_api.json()["error"]["code"] == "no_price"


@pytest.mark.django_db
def test_a_live_deployment_deals_on_no_simulated_price(account, market, settings):
    settings.LIVERMORE_DEMO = False
    market.set("EURUSD", "1.1000", "1.1002")  # as if the simulator ("sim") had priced it
    with pytest.raises(ServiceError) as refused:
        services.order_submit(account=account, symbol="EURUSD", side="buy", volume=D("0.1"))
    assert refused.value.code == "no_price"
    settings.LIVERMORE_DEMO = True
    services.order_submit(account=account, symbol="EURUSD", side="buy", volume=D("0.1"))


@pytest.mark.django_db
def test_the_api_and_the_admin_show_a_deals_venue_and_quote_seq(account, market, admin_client):
    market.seq = 41
    quoted = market.set("EURUSD", "1.1000", "1.1002")
    order = services.order_submit(account=account, symbol="EURUSD", side="buy", volume=D(1))
    api = APIClient()
    api.force_authenticate(account.owner)
    deals = api.get(f"/api/v1/accounts/{account.number}/deals").json()["results"]
    assert (deals[0]["venue"], deals[0]["quote_seq"]) == ("sim", quoted.seq) == ("sim", 42)

    schema = api.get("/api/v1/schema", {"format": "json"}).json()
    deal_schema = schema["components"]["schemas"]["Deal"]["properties"]
    assert deal_schema["venue"]["type"] == "string"
    assert deal_schema["quote_seq"]["type"] == "integer" and deal_schema["quote_seq"]["nullable"]

    deal = Deal.objects.get(order=order)
    listing = admin_client.get("/admin/brokerage/deal/", {"q": "42"}).content.decode()
    assert "column-venue" in listing and "column-quote_seq" in listing
    assert f'href="/admin/brokerage/deal/{deal.pk}/change/' in listing
    detail = admin_client.get(f"/admin/brokerage/deal/{deal.pk}/change/").content.decode()
    assert "Venue that priced the fill" in detail or "field-venue" in detail
    assert "field-quote_seq" in detail
