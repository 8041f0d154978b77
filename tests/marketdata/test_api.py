import json
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal as D

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from kernel.db import database_conninfo
from kernel.redis import sync_client
from marketdata.models import Candle, Instrument
from marketdata.publisher import ticker_key
from marketdata.quotes import Quote, SelectedQuote
from marketdata.ticks import TickRecorder
from tests.support.instruments import make_instrument

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)


def error(response) -> tuple[int, str]:
    return response.status_code, response.json()["error"]["code"]


def candle(inst: Instrument, minute: int, close: str, tf: str = "1m") -> Candle:
    c = D(close)
    return Candle.objects.create(
        instrument=inst,
        timeframe=tf,
        start=T0 + timedelta(minutes=minute),
        open=c,
        high=c + D("0.001"),
        low=c - D("0.001"),
        close=c,
        tick_count=4,
    )


def test_it_requires_authentication(eurusd):
    for url in ("/api/v1/instruments", "/api/v1/quotes", "/api/v1/candles/EURUSD", "/api/v1/ticks/EURUSD"):
        assert APIClient().get(url).status_code == 401


def test_it_lists_instruments_with_decimals_as_strings(api, eurusd):
    (row,) = api.get("/api/v1/instruments").json()
    assert row["symbol"] == "EURUSD"
    assert row["contract_size"] == "100000.00000000" and row["digits"] == 5
    assert row["tick_size"] == "0.0000100000"  # one unit of the last digit unless set


def test_it_serves_quotes_from_the_ticker_cache(api, eurusd):
    make_instrument("GBPUSD")
    q = Quote("EURUSD", "sim", D("1.08500"), D("1.08512"), venue_ts=1_772_445_600_000_000_000, recv_ts=0)
    wire = SelectedQuote(symbol="EURUSD", seq=42, quote=q, tradable=True).to_wire()
    sync_client().set(ticker_key("EURUSD"), json.dumps(wire))
    response = api.get("/api/v1/quotes", {"symbols": "EURUSD,GBPUSD"})
    assert response.status_code == 200
    eur, gbp = response.json()
    assert eur == {
        "symbol": "EURUSD",
        "seq": 42,
        "tradable": True,
        "venue": "sim",
        "bid": "1.08500",
        "ask": "1.08512",
        "ts": 1_772_445_600_000,
    }
    assert gbp["symbol"] == "GBPUSD" and gbp["tradable"] is False and gbp["bid"] is None


def test_an_unknown_symbol_is_a_404_with_a_code(api, eurusd):
    response = api.get("/api/v1/quotes", {"symbols": "EURUSD,NOPE"})
    assert error(response) == (404, "unknown_symbol")
    assert "NOPE" in response.json()["error"]["fields"]["symbols"][0]
    assert error(api.get("/api/v1/candles/NOPE")) == (404, "unknown_symbol")
    assert error(api.get("/api/v1/ticks/NOPE")) == (404, "unknown_symbol")


def test_malformed_symbol_lists_are_rejected(api, eurusd):
    response = api.get("/api/v1/quotes", {"symbols": "eur/usd"})
    assert error(response) == (400, "invalid")
    assert "symbols" in response.json()["error"]["fields"]


def test_candles_come_with_gaps_filled_and_flagged(api, eurusd):
    candle(eurusd, 0, "1.1000")
    candle(eurusd, 3, "1.1030")
    response = api.get(
        "/api/v1/candles/EURUSD",
        {"tf": "1m", "start": "2026-03-02T10:00:00Z", "end": "2026-03-02T10:05:00Z"},
    )
    assert response.status_code == 200
    body = response.json()
    assert [(r["start"], r["c"], r["synthetic"]) for r in body["results"]] == [
        ("2026-03-02T10:00:00+00:00", "1.1", False),
        ("2026-03-02T10:01:00+00:00", "1.1", True),
        ("2026-03-02T10:02:00+00:00", "1.1", True),
        ("2026-03-02T10:03:00+00:00", "1.103", False),
        ("2026-03-02T10:04:00+00:00", "1.103", True),
    ]
    first, gap = body["results"][:2]
    assert (first["o"], first["h"], first["l"], first["ticks"]) == ("1.1", "1.101", "1.099", 4)
    assert (gap["o"], gap["h"], gap["l"], gap["volume"], gap["ticks"]) == ("1.1", "1.1", "1.1", "0", 0)
    assert body["next"] is None


def test_candle_pages_follow_the_cursor_to_the_end(api, eurusd):
    for minute in (0, 1, 4, 6):
        candle(eurusd, minute, f"1.10{minute}0")
    params = {"tf": "1m", "start": "2026-03-02T10:00:00Z", "end": "2026-03-02T10:07:00Z", "limit": 3}
    starts, pages, cursor = [], 0, None
    while True:
        body = api.get("/api/v1/candles/EURUSD", {**params, **({"cursor": cursor} if cursor else {})}).json()
        pages += 1
        starts += [(r["start"][11:16], r["synthetic"]) for r in body["results"]]
        cursor = body["next"]
        if cursor is None:
            break
    assert pages == 3
    assert starts == [
        ("10:00", False),
        ("10:01", False),
        ("10:02", True),
        ("10:03", True),
        ("10:04", False),
        ("10:05", True),
        ("10:06", False),
    ]


def test_other_timeframes_are_served_from_their_own_bars(api, eurusd):
    candle(eurusd, 0, "1.2", tf="1h")
    candle(eurusd, 0, "1.3", tf="1m")
    body = api.get("/api/v1/candles/EURUSD", {"tf": "1h", "start": "2026-03-02T10:00:00Z", "limit": 1}).json()
    assert [(r["tf"], r["c"]) for r in body["results"]] == [("1h", "1.2")]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"tf": "2m"}, "tf"),
        ({"limit": 1001}, "limit"),
        ({"limit": 0}, "limit"),
        ({"start": "yesterday"}, "start"),
        ({"end": "2026-13-40T00:00:00Z"}, "end"),
        ({"start": "2026-03-02T11:00:00Z", "end": "2026-03-02T10:00:00Z"}, "start"),
        ({"cursor": "not-a-cursor"}, "cursor"),
    ],
)
def test_bad_candle_parameters_get_a_400_naming_the_field(api, eurusd, params, field):
    response = api.get("/api/v1/candles/EURUSD", params)
    assert error(response) == (400, "invalid")
    assert field in response.json()["error"]["fields"]
    assert not Candle.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_ticks_are_paged_in_time_order(api, eurusd, tick_table):
    recorder = TickRecorder(database_conninfo())
    base = time.time_ns() - 10_000_000_000
    for seq in range(1, 6):
        q = Quote("EURUSD", "sim", D("1.08500"), D("1.08512"), venue_ts=base + seq * 1000_000, recv_ts=0)
        recorder(SelectedQuote(symbol="EURUSD", seq=seq, quote=q, tradable=True))
    assert recorder.flush()
    start = (timezone.now() - timedelta(minutes=1)).isoformat()
    seqs, cursor = [], None
    while True:
        params = {"start": start, "limit": 2, **({"cursor": cursor} if cursor else {})}
        body = api.get("/api/v1/ticks/EURUSD", params).json()
        seqs += [r["seq"] for r in body["results"]]
        cursor = body["next"]
        if cursor is None:
            break
    assert seqs == [1, 2, 3, 4, 5]
    first = api.get("/api/v1/ticks/EURUSD", {"start": start, "limit": 1}).json()["results"][0]
    assert (first["bid"], first["ask"], first["venue"]) == ("1.085", "1.08512", "sim")
    assert error(api.get("/api/v1/ticks/EURUSD", {"limit": 5000})) == (400, "invalid")


def test_the_schema_documents_the_market_data_endpoints(api):
    response = api.get("/api/v1/schema", {"format": "json"})
    assert response.status_code == 200
    paths = json.loads(response.content)["paths"]
    assert {
        "/api/v1/instruments",
        "/api/v1/quotes",
        "/api/v1/candles/{symbol}",
        "/api/v1/ticks/{symbol}",
    } <= set(paths)
    names = {p["name"] for p in paths["/api/v1/candles/{symbol}"]["get"]["parameters"]}
    assert {"symbol", "tf", "start", "end", "limit", "cursor"} <= names
