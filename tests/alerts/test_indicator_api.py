from decimal import Decimal
from typing import Any

import pytest
from rest_framework.test import APIClient

from alerts.indicators import INDICATOR_NAMES
from alerts.models import IndicatorValue
from alerts.services import indicators_update_for_bar
from tests.alerts.candle_factory import bar_start, epoch, make_ramp
from tests.support.instruments import make_instrument
from tests.support.users import make_client
from users.models import ApiKey

pytestmark = pytest.mark.django_db

URL = "/api/v1/indicators/EURUSD"


@pytest.fixture
def client() -> APIClient:
    user = make_client("bot-owner")
    _, raw = ApiKey.issue(user=user, name="bot")
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Api-Key {raw}")
    return api


@pytest.fixture
def history() -> None:
    make_ramp(make_instrument(), 40)
    for i in range(30, 40):
        indicators_update_for_bar(symbol="EURUSD", timeframe="1m", start=epoch(i))


def assert_error(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.content
    body = response.json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == code
    return body["error"]


@pytest.mark.usefixtures("history")
class TestRead:
    def test_it_serves_one_indicator_oldest_first_with_decimal_strings(self, client: APIClient) -> None:
        response = client.get(URL, {"tf": "1m", "name": "macdv"})
        assert response.status_code == 200
        body = response.json()
        assert (body["symbol"], body["timeframe"]) == ("EURUSD", "1m")
        assert [r["start"] for r in body["results"]] == [
            bar_start(i).isoformat().replace("+00:00", "Z") for i in range(30, 40)
        ]
        first, last = body["results"][0], body["results"][-1]
        assert first == {
            "name": "macdv",
            "start": first["start"],
            "value": "350.0000000000",
            "signal": None,
            "histogram": None,
            "stage": "unknown",
            "diagnostics": {"n_eff": 31, "span": 31, "gap_ratio": 0.0, "liquidity": "high"},
        }
        assert (last["value"], last["signal"]) == ("350.0000000000", "350.0000000000")
        assert last["stage"] == "unknown"  # at its signal, outside -50..50
        assert last["diagnostics"]["n_eff"] == 40

    def test_other_indicators_have_no_stage_or_diagnostics(self, client: APIClient) -> None:
        (row,) = client.get(URL, {"tf": "1m", "name": "ema12", "limit": 1}).json()["results"]
        assert (row["stage"], row["diagnostics"]) == (None, None)

    def test_the_stage_follows_the_stored_value_and_signal(self, client: APIClient) -> None:
        IndicatorValue.objects.filter(name="macdv", start=bar_start(39)).update(
            value=Decimal("20"), signal=Decimal("10"), n_eff=None, span=None
        )
        (row,) = client.get(URL, {"tf": "1m", "name": "macdv", "limit": 1}).json()["results"]
        assert (row["stage"], row["diagnostics"]) == ("rebounding", None)

    def test_every_indicator_is_served_without_a_name(self, client: APIClient) -> None:
        body = client.get(URL, {"tf": "1m", "limit": "5000"}).json()
        assert {r["name"] for r in body["results"]} == set(INDICATOR_NAMES)
        assert len(body["results"]) == IndicatorValue.objects.count()

    def test_it_filters_by_start_and_end_and_keeps_the_latest_within_limit(self, client: APIClient) -> None:
        params: dict[str, Any] = {
            "tf": "1m",
            "name": "ema12",
            "start": bar_start(32).isoformat(),
            "end": bar_start(37).isoformat(),
        }
        body = client.get(URL, {**params, "limit": 3}).json()
        assert [Decimal(r["value"]) for r in body["results"]] == [
            Decimal("129.5"),
            Decimal("130.5"),
            Decimal("131.5"),
        ]

    def test_another_timeframe_has_nothing_yet(self, client: APIClient) -> None:
        assert client.get(URL, {"tf": "5m"}).json()["results"] == []


@pytest.mark.usefixtures("history")
class TestRejects:
    def test_an_unknown_symbol_is_404(self, client: APIClient) -> None:
        error = assert_error(client.get("/api/v1/indicators/NOPE", {"tf": "1m"}), 404, "not_found")
        assert "NOPE" in error["message"]

    @pytest.mark.parametrize(
        ("params", "field"),
        [
            ({}, "tf"),
            ({"tf": "2m"}, "tf"),
            ({"tf": "1m", "name": "macdx"}, "name"),
            ({"tf": "1m", "limit": 0}, "limit"),
            ({"tf": "1m", "limit": 5001}, "limit"),
            ({"tf": "1m", "start": "yesterday"}, "start"),
            ({"tf": "1m", "start": "2026-01-05T00:10:00Z", "end": "2026-01-05T00:05:00Z"}, "end"),
        ],
    )
    def test_bad_parameters_are_400_with_the_field(
        self, client: APIClient, params: dict[str, Any], field: str
    ) -> None:
        error = assert_error(client.get(URL, params), 400, "invalid")
        assert field in error["fields"]

    def test_anonymous_requests_are_refused(self) -> None:
        response = APIClient().get(URL, {"tf": "1m"})
        assert response.status_code in (401, 403)
        assert "error" in response.json()


@pytest.mark.usefixtures("history")
def test_the_admin_lists_the_macdv_stage_and_liquidity(admin_client: Any) -> None:
    IndicatorValue.objects.filter(name="macdv", start=bar_start(39)).update(
        value=Decimal("20"), signal=Decimal("10"), n_eff=150, span=200
    )
    page = admin_client.get("/admin/alerts/indicatorvalue/", {"name": "macdv", "start__gte": bar_start(39)})
    assert page.status_code == 200
    body = page.content.decode()
    assert "rebounding" in body and '<td class="field-liquidity">medium</td>' in body
