"""GET /api/v1/signals: every enabled instrument on the six timeframes, filtered."""

import io
import json
from decimal import Decimal
from typing import Any

import pytest
from django.core.management import call_command
from django.db import transaction
from rest_framework.test import APIClient

from alerts import selectors
from alerts.indicators import LOW_TRADING_ACTIVITY, NOT_ENOUGH_BARS
from alerts.models import IndicatorValue
from alerts.selectors import INDICATORS_VERSION, signal_list
from alerts.signal_grid import NO_BARS, NOT_COMPUTED, TIMEFRAMES
from kernel import versions
from marketdata.bars import Bar
from marketdata.models import Venue
from marketdata.selectors import MARKET_VERSION
from marketdata.services import candles_store
from tests.alerts.signal_data import AS_OF, EURUSD, seed_signals
from tests.support.users import grant, make_client, make_staff
from users.models import ApiKey

pytestmark = pytest.mark.django_db

URL = "/api/v1/signals"
ENABLED = ["BTCUSD", "ETHUSD", "EURUSD", "GBPUSD", "XAUUSD"]  # the demo's, USDJPY disabled


def api_client(user: Any) -> APIClient:
    _, raw = ApiKey.issue(user=user, name="bot")
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Api-Key {raw}")
    return api


@pytest.fixture
def client() -> APIClient:
    seed_signals()
    return api_client(grant(make_client("analyst"), "alerts.view_signals"))


def rows(client: APIClient, **params: str) -> list[dict[str, Any]]:
    response = client.get(URL, params)
    assert response.status_code == 200, response.content
    return list(response.json()["results"])


def by_cell(results: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(r["symbol"], r["timeframe"]): r for r in results}


def assert_invalid(response: Any, field: str) -> str:
    assert response.status_code == 400, response.content
    body = response.json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == "invalid"
    assert set(body["error"]["fields"]) == {field}
    return " ".join(body["error"]["fields"][field])


class TestValues:
    def test_every_enabled_instrument_has_the_six_timeframes_in_order(self, client: APIClient) -> None:
        results = rows(client)
        assert [(r["symbol"], r["timeframe"]) for r in results] == [
            (s, tf) for s in ENABLED for tf in TIMEFRAMES
        ]

    def test_a_seeded_cell_has_the_latest_values_stage_and_as_of_bar(self, client: APIClient) -> None:
        cell = by_cell(rows(client))[("EURUSD", "1m")]
        assert cell == {
            "symbol": "EURUSD",
            "timeframe": "1m",
            "value": "100.0000000000",
            "signal": "50.0000000000",
            "histogram": "50.0000000000",
            "stage": "rallying",
            "bias": "Bearish",
            "seeded": True,
            "reason": None,
            "as_of": "2026-01-05T00:00:00Z",
        }

    def test_each_stage_comes_from_the_value_and_its_signal(self, client: APIClient) -> None:
        cells = by_cell(rows(client, symbol="EURUSD"))
        assert {tf: cells[("EURUSD", tf)]["stage"] for tf in TIMEFRAMES} == {
            tf: stage for tf, (_, _, stage) in EURUSD.items()
        }

    def test_the_bias_is_the_instruments_over_the_six_timeframes(self, client: APIClient) -> None:
        results = rows(client)
        assert {r["symbol"]: r["bias"] for r in results} == {
            "BTCUSD": "Neutral",
            "ETHUSD": "Bullish",
            "EURUSD": "Bearish",
            "GBPUSD": "Neutral",  # ranging 1m and unknown elsewhere: 0 against 0
            "XAUUSD": "Neutral",
        }

    def test_unseeded_cells_say_why(self, client: APIClient) -> None:
        cells = by_cell(rows(client, symbol="GBPUSD"))
        assert {tf: (c["seeded"], c["stage"], c["reason"]) for (_, tf), c in cells.items()} == {
            "1m": (True, "ranging", None),
            "5m": (False, "unknown", NO_BARS),
            "15m": (False, "unknown", NOT_ENOUGH_BARS),
            "1h": (False, "unknown", LOW_TRADING_ACTIVITY),
            "4h": (False, "unknown", NOT_COMPUTED),
            "1d": (False, "unknown", NOT_ENOUGH_BARS),
        }
        assert (cells[("GBPUSD", "1d")]["value"], cells[("GBPUSD", "1d")]["signal"]) == (
            "80.0000000000",
            None,
        )
        assert cells[("GBPUSD", "5m")]["as_of"] is None

    def test_instruments_of_a_disabled_venue_are_left_out(self, client: APIClient) -> None:
        Venue.objects.update(enabled=False)
        assert rows(client) == []

    def test_all_cells_take_one_query(self, client: APIClient, django_assert_num_queries: Any) -> None:
        with django_assert_num_queries(1):
            signals = signal_list()
        assert len(signals) == len(ENABLED) * len(TIMEFRAMES)

    def test_a_newer_stored_bar_moves_the_cell(self, client: APIClient) -> None:
        row = IndicatorValue.objects.get(instrument__symbol="GBPUSD", timeframe="1m", name="macdv", value=10)
        IndicatorValue.objects.create(
            instrument=row.instrument,
            timeframe="1m",
            start=row.start.replace(minute=1),
            name="macdv",
            value=-300,
            signal=-200,
            histogram=-100,
        )
        cell = by_cell(rows(client, symbol="GBPUSD", tf="1m"))[("GBPUSD", "1m")]
        assert (cell["stage"], cell["as_of"]) == ("oversold", "2026-01-05T00:01:00Z")


class TestFilters:
    def test_by_symbols(self, client: APIClient) -> None:
        results = rows(client, symbol="GBPUSD,EURUSD")
        assert {r["symbol"] for r in results} == {"EURUSD", "GBPUSD"}
        assert len(results) == 12

    def test_by_stage_in_any_case(self, client: APIClient) -> None:
        results = rows(client, stage="Oversold,RANGING")
        assert {(r["symbol"], r["timeframe"], r["stage"]) for r in results} == {
            ("EURUSD", "15m", "oversold"),
            ("GBPUSD", "1m", "ranging"),
        }

    def test_by_unknown_stage(self, client: APIClient) -> None:
        results = rows(client, stage="unknown", symbol="EURUSD,GBPUSD")
        assert [(r["symbol"], r["timeframe"]) for r in results] == [
            ("GBPUSD", tf) for tf in ("5m", "15m", "1h", "4h", "1d")
        ]

    def test_by_bias_and_timeframe(self, client: APIClient) -> None:
        results = rows(client, bias="bearish", tf="1h,1d")
        assert [(r["symbol"], r["timeframe"], r["bias"]) for r in results] == [
            ("EURUSD", "1h", "Bearish"),
            ("EURUSD", "1d", "Bearish"),
        ]

    def test_the_bias_counts_every_timeframe_whatever_the_filter(self, client: APIClient) -> None:
        # EURUSD's 1m alone is rallying (bullish); over its six timeframes it is Bearish.
        assert [r["bias"] for r in rows(client, symbol="EURUSD", tf="1m")] == ["Bearish"]

    def test_nothing_matching_is_an_empty_list(self, client: APIClient) -> None:
        # Overbought cells (EURUSD 1h) and Bullish instruments (ETHUSD) exist, but not together.
        assert rows(client, stage="overbought")
        assert rows(client, bias="Bullish")
        assert rows(client, stage="overbought", bias="Bullish") == []


class TestRejects:
    @pytest.mark.parametrize(
        ("params", "field", "named"),
        [
            ({"stage": "sideways"}, "stage", "sideways"),
            ({"stage": "oversold,bogus"}, "stage", "bogus"),
            ({"stage": ","}, "stage", ","),
            ({"bias": "Bullishh"}, "bias", "Bullishh"),
            ({"tf": "2m"}, "tf", "2m"),
            ({"symbol": "NOPE"}, "symbol", "NOPE"),
            ({"symbol": "EURUSD,USDJPY"}, "symbol", "USDJPY"),  # a disabled instrument
            ({"symbol": " , "}, "symbol", "EURUSD,BTCUSD"),
        ],
    )
    def test_unknown_filter_values_are_400_naming_them(
        self, client: APIClient, params: dict[str, str], field: str, named: str
    ) -> None:
        assert named in assert_invalid(client.get(URL, params), field)

    def test_a_refusal_changes_nothing(self, client: APIClient) -> None:
        before = list(IndicatorValue.objects.order_by("pk").values())
        assert_invalid(client.get(URL, {"stage": "bogus"}), "stage")
        assert list(IndicatorValue.objects.order_by("pk").values()) == before


class TestPermissions:
    def test_anonymous_requests_are_401(self) -> None:
        response = APIClient().get(URL)
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "not_authenticated"

    def test_a_user_without_the_permission_is_403(self, client: APIClient) -> None:
        other = api_client(make_client("client"))
        response = other.get(URL)
        assert response.status_code == 403
        error = response.json()["error"]
        assert (error["code"], "alerts.view_signals" in error["message"]) == ("permission_denied", True)

    def test_a_session_user_with_the_permission_reads_it(self, client: APIClient) -> None:
        staff = make_staff("viewer", "alerts.view_signals")
        session = APIClient()
        session.force_login(staff)
        assert session.get(URL, {"symbol": "EURUSD"}).status_code == 200


def test_the_openapi_schema_describes_the_endpoint_and_its_filters(db: Any) -> None:
    out = io.StringIO()
    call_command("spectacular", "--validate", "--fail-on-warn", "--format", "openapi-json", stdout=out)
    operation = json.loads(out.getvalue())["paths"]["/api/v1/signals"]["get"]
    assert {p["name"] for p in operation["parameters"]} >= {"symbol", "tf", "stage", "bias"}
    assert set(operation["responses"]) >= {"200", "400"}


@pytest.mark.django_db(transaction=True)
class TestGridCache:
    """The grid is computed once per data version: committed writes retire it, nothing else does."""

    @pytest.fixture
    def cached(self, client: APIClient) -> APIClient:
        versions.bump_on_commit(INDICATORS_VERSION)  # as the last indicator write did
        assert versions.read((MARKET_VERSION, INDICATORS_VERSION)) is not None
        return client

    def test_a_second_read_runs_no_grid_query(self, cached: APIClient, monkeypatch: Any) -> None:
        computed = []
        frames = selectors.signal_frames
        monkeypatch.setattr(selectors, "signal_frames", lambda: computed.append(1) or frames())
        first = rows(cached)
        assert (rows(cached), rows(cached)) == (first, first)
        assert len(computed) == 1

    def test_an_indicator_write_shows_at_once(self, cached: APIClient) -> None:
        assert by_cell(rows(cached))[("GBPUSD", "1m")]["stage"] == "ranging"
        with transaction.atomic():
            IndicatorValue.objects.filter(instrument__symbol="GBPUSD", timeframe="1m").update(
                value=Decimal("-200"), signal=Decimal("-100"), histogram=Decimal("-100")
            )
            versions.bump_on_commit(INDICATORS_VERSION)
            assert by_cell(rows(cached))[("GBPUSD", "1m")]["stage"] == "ranging"  # not committed yet
        assert by_cell(rows(cached))[("GBPUSD", "1m")]["stage"] == "oversold"

    def test_a_disabled_venue_drops_its_instruments_at_once(self, cached: APIClient) -> None:
        assert "BTCUSD" in {r["symbol"] for r in rows(cached)}
        for venue in Venue.objects.filter(symbols__instrument__symbol="BTCUSD"):
            venue.enabled = False
            venue.save(update_fields=["enabled"])  # a model save moves the market version on
        assert "BTCUSD" not in {r["symbol"] for r in rows(cached)}

    def test_a_stored_candle_moves_the_market_version(self, cached: APIClient) -> None:
        before = versions.read((MARKET_VERSION,))
        start = int(AS_OF.timestamp()) + 900  # the bar after the five stored
        candles_store(bars=[Bar("GBPUSD", "15m", start, *(Decimal(1),) * 4, Decimal(0), 1)])
        assert versions.read((MARKET_VERSION,)) != before
        assert by_cell(rows(cached))[("GBPUSD", "15m")]["reason"] == NOT_ENOUGH_BARS
