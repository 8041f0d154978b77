"""Portfolio valuation end to end: the sync mirrors fills, ended orders and best bid/ask from the
Coinbase fake (real wire formats, ES256 JWT checked), and GET /api/v1/portfolio values the holdings.
Expected numbers are worked out by hand in the comments."""

import io
import json
from decimal import Decimal
from typing import Any

import pytest
from django.core.management import call_command
from django.test import Client
from rest_framework.test import APIClient

from portfolio.models import CoinbaseFill, CoinbaseLink, CoinbaseOrder, Holding, PortfolioPrice, SyncStatus
from portfolio.services import FILLS_OVERLAP, portfolio_sync
from tests.fakes.coinbase import CoinbaseRestFake, error
from tests.fakes.http import Request
from tests.support.users import make_client, make_staff
from users.models import User

from .test_sync import account, order

pytestmark = pytest.mark.django_db

D = Decimal


def wire_fill(
    n: int, product: str, side: str, size: str, price: str, commission: str, **extra: Any
) -> dict[str, Any]:
    """A fill as List Fills sends it (docs .../rest-api/orders/list-fills; SDK types `Fill`)."""
    when = f"2026-01-05T10:{n:02d}:00.123456Z"
    return {
        "entry_id": f"entry-{n:03d}",
        "trade_id": f"trade-{n:03d}",
        "order_id": extra.pop("order_id", f"order-{n:03d}"),
        "trade_time": when,
        "trade_type": "FILL",
        "price": price,
        "size": size,
        "commission": commission,
        "product_id": product,
        "sequence_timestamp": when,
        "liquidity_indicator": "TAKER",
        "size_in_quote": False,
        "user_id": "2222-000000-000000",
        "side": side,
        "retail_portfolio_id": "b87a2d3f-8fb8-4d2a-a6e5-0c0a6ac8a1b1",
        **extra,
    }


FILLS = [
    wire_fill(1, "BTC-USD", "BUY", "1.0", "30000", "30"),
    wire_fill(2, "BTC-USD", "BUY", "0.5", "36000", "18", order_id="o-cancelled-partly"),
    wire_fill(3, "BTC-USD", "SELL", "0.6", "40000", "24", order_id="o-expired-partly"),
    # A quote-sized market buy: `size` is 3500 USD at 35000, i.e. 0.1 BTC.
    wire_fill(4, "BTC-USD", "BUY", "3500", "35000", "3.5", size_in_quote=True),
    wire_fill(10, "ETH-BTC", "BUY", "2", "0.05", "0.0001"),
    wire_fill(11, "SOL-EUR", "BUY", "10", "20", "0.2"),
]


@pytest.fixture(autouse=True)
def coinbase_at_fake(settings: Any, coinbase_rest: CoinbaseRestFake) -> CoinbaseRestFake:
    settings.COINBASE_REST_URL = coinbase_rest.url
    coinbase_rest.accounts = [
        account("a-usd", "USD", "1000.25"),
        account("a-btc", "BTC", "1.0", "0.2"),
        account("a-eth", "ETH", "2"),
        account("a-sol", "SOL", "10"),
        account("a-doge", "DOGE", "100"),
    ]
    coinbase_rest.fills = list(FILLS)
    coinbase_rest.books = {
        "BTC-USD": ("41000", "41010"),
        "ETH-BTC": ("0.052", "0.0521"),
        "SOL-EUR": ("25", "25.1"),
        "USD-EUR": ("0.79", "0.8"),
        "ETH-USD": ("2100", "2101"),  # listed by Coinbase but not what ETH was bought on
    }
    coinbase_rest.orders = [
        order("o-open", "OPEN", "2026-01-04T09:00:00Z"),
        order("o-filled", "FILLED", "2026-01-05T09:59:00Z"),
        order(
            "o-cancelled-partly",
            "CANCELLED",
            "2026-01-05T10:01:00Z",
            filled_size="0.5",
            completion_percentage="50",
            number_of_fills="1",
            average_filled_price="36000",
            filled_value="18000",
            total_fees="18",
            cancel_message="User requested cancel",
        ),
        order(
            "o-expired-partly",
            "EXPIRED",
            "2026-01-05T10:02:00Z",
            side="SELL",
            filled_size="0.6",
            completion_percentage="60",
            number_of_fills="1",
            average_filled_price="40000",
            filled_value="24000",
            total_fees="24",
            time_in_force="GOOD_UNTIL_DATE_TIME",
        ),
        order("o-cancelled-empty", "CANCELLED", "2026-01-05T10:03:00Z"),
        order("o-expired-empty", "EXPIRED", "2026-01-05T10:04:00Z"),
    ]
    return coinbase_rest


def api_for(user: User) -> APIClient:
    api = APIClient()
    api.force_authenticate(user)
    return api


def test_a_sync_mirrors_fills_and_the_best_bid_ask_of_the_products_that_value_the_holdings(
    link: CoinbaseLink, coinbase_rest: CoinbaseRestFake
) -> None:
    link = portfolio_sync(link=link)
    assert (link.status, link.last_error) == (SyncStatus.OK, "")
    fills = {f.entry_id: f for f in CoinbaseFill.objects.filter(user=link.user)}
    assert len(fills) == 6
    quote_sized = fills["entry-004"]
    assert (quote_sized.size, quote_sized.raw_size, quote_sized.size_in_quote) == (D("0.1"), D("3500"), True)
    assert fills["entry-001"].trade_time.isoformat() == "2026-01-05T10:01:00.123456+00:00"
    # fills came in cursor pages of 2 with an empty cursor on the last (List Fills has no has_next)
    fill_requests = [r for r in coinbase_rest.requests if r.path.endswith("/orders/historical/fills")]
    assert [r.arg("cursor") for r in fill_requests] == [None, "2", "4"]
    assert fill_requests[0].arg("start_sequence_timestamp") is None  # first sync: everything
    # one batched best_bid_ask, product_ids as repeated keys
    (prices_request,) = [r for r in coinbase_rest.requests if r.path.endswith("/best_bid_ask")]
    assert prices_request.query["product_ids"] == [
        "BTC-USD",
        "DOGE-USD",  # not in the fake: Coinbase leaves out products it has no book for
        "ETH-BTC",
        "EUR-USD",
        "SOL-EUR",
        "USD-BTC",
        "USD-EUR",
    ]
    prices = {p.product_id: (p.bid, p.ask) for p in PortfolioPrice.objects.filter(user=link.user)}
    assert prices == {
        "BTC-USD": (D("41000"), D("41010")),
        "ETH-BTC": (D("0.052"), D("0.0521")),
        "SOL-EUR": (D("25"), D("25.1")),
        "USD-EUR": (D("0.79"), D("0.8")),
    }
    assert not coinbase_rest.rejected_jwts and len(coinbase_rest.jwt_claims) == len(coinbase_rest.requests)


def test_orders_that_ended_cancelled_or_expired_after_partial_fills_are_mirrored(
    link: CoinbaseLink, coinbase_rest: CoinbaseRestFake
) -> None:
    portfolio_sync(link=link)
    orders = {o.order_id: o for o in CoinbaseOrder.objects.filter(user=link.user)}
    assert set(orders) == {"o-open", "o-filled", "o-cancelled-partly", "o-expired-partly"}
    cancelled, expired = orders["o-cancelled-partly"], orders["o-expired-partly"]
    assert (cancelled.status, cancelled.filled_size, cancelled.total_fees) == ("CANCELLED", D("0.5"), D("18"))
    assert (expired.status, expired.side, expired.filled_size) == ("EXPIRED", "SELL", D("0.6"))
    batches = [r for r in coinbase_rest.requests if r.path.endswith("/orders/historical/batch")]
    ended = [r for r in batches if r.query.get("order_status") == ["FILLED", "CANCELLED", "EXPIRED"]]
    # five ended orders (the open one is asked for apart), pages of two, followed by cursor
    assert [r.arg("cursor") for r in ended] == [None, "2", "4"]


def test_the_api_values_the_portfolio_at_the_bid_with_cost_basis_and_unrealized_pnl(
    link: CoinbaseLink,
) -> None:
    portfolio_sync(link=link)
    body = api_for(link.user).get("/api/v1/portfolio").json()
    valuation = body["valuation"]
    assert valuation["currency"] == "USD"
    by = {h["currency"]: h for h in valuation["holdings"]}
    # BTC: avg cost after buys/sell/buy = 32332.3; holding 1.2 (0.2 on hold) of which 1.0 tracked
    assert by["BTC"]["value"] == "49200.00"  # 1.2 x 41000
    assert (by["BTC"]["cost_basis"], by["BTC"]["unrealized_pnl"]) == ("32332.30", "8667.70")
    assert (by["BTC"]["quantity"], by["BTC"]["tracked_quantity"], by["BTC"]["untracked_quantity"]) == (
        "1.2",
        "1",
        "0.2",
    )
    assert (by["BTC"]["bid"], by["BTC"]["average_cost"]) == ("41000", "32332.3")
    # ETH bought on ETH-BTC: 2 x 0.052 x 41000 (converted through BTC-USD at its bid)
    assert (by["ETH"]["product_id"], by["ETH"]["conversion_product"]) == ("ETH-BTC", "BTC-USD")
    assert (by["ETH"]["value"], by["ETH"]["cost_basis"], by["ETH"]["unrealized_pnl"]) == (
        "4264.00",
        "4104.10",
        "159.90",
    )
    # SOL bought on SOL-EUR; no EUR-USD product, so USD-EUR at its ask: rate 1 / 0.8
    assert (by["SOL"]["conversion_product"], by["SOL"]["value"], by["SOL"]["unrealized_pnl"]) == (
        "USD-EUR",
        "312.50",
        "62.25",
    )
    assert by["DOGE"]["value"] is None and by["DOGE"]["unpriced_reason"] == "no price for DOGE-USD"
    assert by["USD"]["value"] == "1000.25"
    assert (valuation["total_value"], valuation["total_cost_basis"], valuation["total_unrealized_pnl"]) == (
        "54776.75",
        "36686.65",
        "8889.85",
    )
    assert (valuation["complete"], valuation["unpriced"]) == (False, ["DOGE"])
    btc = next(p for p in valuation["positions"] if p["product_id"] == "BTC-USD")
    assert (btc["realized_pnl"], btc["fees"], btc["average_cost"]) == ("4756.8", "75.5", "32332.3")
    assert body["coinbase"]["currency"] == "USD"
    assert valuation["priced_at"] == body["holdings"][0]["synced_at"]  # the same sync


def test_a_resync_is_idempotent_and_asks_only_for_fills_posted_since_the_last_one(
    link: CoinbaseLink, coinbase_rest: CoinbaseRestFake
) -> None:
    link = portfolio_sync(link=link)
    first = api_for(link.user).get("/api/v1/portfolio").json()["valuation"]
    synced_until = link.fills_synced_until
    assert synced_until is not None
    coinbase_rest.requests.clear()
    link = portfolio_sync(link=link)
    assert link.status == SyncStatus.OK
    fill_requests = [r for r in coinbase_rest.requests if r.path.endswith("/orders/historical/fills")]
    since = (synced_until - FILLS_OVERLAP).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert {r.arg("start_sequence_timestamp") for r in fill_requests} == {since}
    assert CoinbaseFill.objects.filter(user=link.user).count() == 6
    assert CoinbaseOrder.objects.filter(user=link.user).count() == 4
    again = api_for(link.user).get("/api/v1/portfolio").json()["valuation"]
    assert again.pop("priced_at") > first.pop("priced_at")  # fresh prices, the same numbers
    assert again == first


def test_new_fills_and_prices_change_the_valuation_on_the_next_sync(
    link: CoinbaseLink, coinbase_rest: CoinbaseRestFake
) -> None:
    portfolio_sync(link=link)
    coinbase_rest.fills.append(wire_fill(20, "BTC-USD", "SELL", "0.5", "42000", "21"))
    coinbase_rest.fills[-1]["sequence_timestamp"] = "2099-01-01T00:00:00Z"  # posted after the last sync
    coinbase_rest.accounts[1] = account("a-btc", "BTC", "0.5", "0.2")
    coinbase_rest.books["BTC-USD"] = ("40000", "40010")
    portfolio_sync(link=link)
    by = {
        h["currency"]: h for h in api_for(link.user).get("/api/v1/portfolio").json()["valuation"]["holdings"]
    }
    # 0.5 of 1.0 sold at avg 32332.3: cost left 16166.15 on 0.5; holding 0.7 (0.2 untracked)
    assert by["BTC"]["value"] == "28000.00"  # 0.7 x 40000
    assert (by["BTC"]["cost_basis"], by["BTC"]["unrealized_pnl"]) == ("16166.15", "3833.85")


def test_a_venue_error_leaves_the_stored_mirror_intact(
    link: CoinbaseLink, coinbase_rest: CoinbaseRestFake, monkeypatch: pytest.MonkeyPatch
) -> None:
    portfolio_sync(link=link)
    before = api_for(link.user).get("/api/v1/portfolio").json()
    counts = [
        m.objects.filter(user=link.user).count()
        for m in (Holding, CoinbaseOrder, CoinbaseFill, PortfolioPrice)
    ]
    coinbase_rest.fills.append(wire_fill(30, "BTC-USD", "SELL", "1.0", "45000", "45"))
    coinbase_rest.accounts[1] = account("a-btc", "BTC", "9")
    coinbase_rest.books["BTC-USD"] = ("1", "2")

    def refuse(request: Request) -> Any:
        return error(400, "INVALID_ARGUMENT", 3, "product_ids is invalid")

    monkeypatch.setattr(coinbase_rest, "_best_bid_ask", refuse)  # the last call of a sync fails
    link = portfolio_sync(link=link)
    assert link.status == SyncStatus.FAILED and "product_ids is invalid" in link.last_error
    after = api_for(link.user).get("/api/v1/portfolio").json()
    assert after["valuation"] == before["valuation"] and after["holdings"] == before["holdings"]
    assert [
        m.objects.filter(user=link.user).count()
        for m in (Holding, CoinbaseOrder, CoinbaseFill, PortfolioPrice)
    ] == counts


def test_a_malformed_fill_fails_the_sync_and_stores_nothing(
    link: CoinbaseLink, coinbase_rest: CoinbaseRestFake
) -> None:
    coinbase_rest.fills.append(wire_fill(40, "BTC-USD", "BUY", "lots", "30000", "1"))
    link = portfolio_sync(link=link)
    assert link.status == SyncStatus.FAILED and "not a decimal" in link.last_error
    assert not CoinbaseFill.objects.filter(user=link.user).exists()
    assert not Holding.objects.filter(user=link.user).exists()


def test_a_user_sees_only_their_own_valuation(link: CoinbaseLink) -> None:
    portfolio_sync(link=link)
    other = make_client("other-trader")
    body = api_for(other).get("/api/v1/portfolio").json()
    assert body["coinbase"] is None
    assert body["valuation"] == {
        "currency": "USD",
        "priced_at": None,
        "total_value": "0",
        "total_cost_basis": "0",
        "total_unrealized_pnl": "0",
        "complete": True,
        "unpriced": [],
        "holdings": [],
        "positions": [],
    }
    assert APIClient().get("/api/v1/portfolio").status_code == 401


def test_the_account_currency_is_the_users_choice_and_validated(
    link: CoinbaseLink, coinbase_rest: CoinbaseRestFake
) -> None:
    api = api_for(link.user)
    bad = api.put("/api/v1/portfolio/currency", {"currency": "$$"}, format="json")
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_currency"
    assert "currency" in bad.json()["error"]["fields"]
    assert CoinbaseLink.objects.get(pk=link.pk).currency == "USD"
    changed = api.put("/api/v1/portfolio/currency", {"currency": "eur"}, format="json")
    assert changed.status_code == 200 and changed.json()["currency"] == "EUR"
    coinbase_rest.books["BTC-EUR"] = ("38000", "38010")
    portfolio_sync(link=CoinbaseLink.objects.get(pk=link.pk))
    valuation = api.get("/api/v1/portfolio").json()["valuation"]
    by = {h["currency"]: h for h in valuation["holdings"]}
    assert valuation["currency"] == "EUR"
    assert by["SOL"]["value"] == "250.00" and by["SOL"]["conversion_product"] == ""  # 10 x 25, in EUR
    # BTC was bought on BTC-USD, so it is priced there and converted back through USD-EUR's bid
    assert (by["BTC"]["product_id"], by["BTC"]["conversion_product"]) == ("BTC-USD", "USD-EUR")
    assert by["BTC"]["value"] == "38868.00"  # 1.2 x 41000 x 0.79
    assert by["USD"]["value"] == "790.20"  # 1000.25 x 0.79 = 790.1975
    other = make_client("keyless")
    assert (
        api_for(other).put("/api/v1/portfolio/currency", {"currency": "EUR"}, format="json").status_code
        == 409
    )


def test_the_admin_shows_the_valuation_and_the_mirrored_fills(
    admin_client: Client, link: CoinbaseLink
) -> None:
    portfolio_sync(link=link)
    page = admin_client.get(f"/admin/portfolio/coinbaselink/{link.pk}/change/").content.decode()
    assert "54776.75 USD at the bid" in page
    assert "DOGE: no price for DOGE-USD" in page
    # one row per holding: SOL priced on SOL-EUR at 25, converted through USD-EUR
    assert "<tr><td>SOL</td><td>10</td><td>SOL-EUR</td><td>25</td><td>USD-EUR</td><td>312.50</td>" in page
    listing = admin_client.get("/admin/portfolio/coinbaselink/").content.decode()
    assert "54776.75 USD (incomplete)" in listing
    fills = admin_client.get("/admin/portfolio/coinbasefill/").content.decode()
    assert "ETH-BTC" in fills and "SOL-EUR" in fills
    assert admin_client.get("/admin/portfolio/portfolioprice/").status_code == 200


def test_the_valuation_admin_pages_need_the_view_permission(client: Client, link: CoinbaseLink) -> None:
    staff = make_staff("clerk")
    client.force_login(staff)
    assert client.get("/admin/portfolio/coinbasefill/").status_code == 403
    assert client.get(f"/admin/portfolio/coinbaselink/{link.pk}/change/").status_code == 403


def test_an_operator_sets_the_account_currency_in_the_admin_and_a_bad_one_is_refused(
    admin_client: Client, link: CoinbaseLink
) -> None:
    url = f"/admin/portfolio/coinbaselink/{link.pk}/change/"
    refused = admin_client.post(url, {"enabled": "on", "currency": "U$D"})
    assert refused.status_code == 200 and "2 to 10 letters or digits" in refused.content.decode()
    assert CoinbaseLink.objects.get(pk=link.pk).currency == "USD"
    assert admin_client.post(url, {"enabled": "on", "currency": "gbp"}).status_code == 302
    assert CoinbaseLink.objects.get(pk=link.pk).currency == "GBP"


def test_the_valuation_is_documented_in_the_openapi_schema() -> None:
    out = io.StringIO()
    call_command("spectacular", "--validate", "--fail-on-warn", "--format", "openapi-json", stdout=out)
    schema = json.loads(out.getvalue())
    portfolio = schema["paths"]["/api/v1/portfolio"]["get"]["responses"]["200"]["content"]["application/json"]
    assert portfolio["schema"]["$ref"] == "#/components/schemas/Portfolio"
    components = schema["components"]["schemas"]
    assert (
        components["Portfolio"]["properties"]["valuation"]["$ref"]
        == "#/components/schemas/PortfolioValuation"
    )
    assert "best bid" in components["PortfolioValuation"]["description"]
    holding = components["PortfolioHoldingValue"]["properties"]
    assert {"value", "cost_basis", "unrealized_pnl", "conversion_product", "unpriced_reason"} <= set(holding)
    assert "/api/v1/portfolio/currency" in schema["paths"]
