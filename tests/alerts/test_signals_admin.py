"""The admin Signals grid and chart pages: named permission, view-only staff, rendering."""

from typing import Any

import pytest
from django.contrib.auth.models import Permission
from django.test import Client

from alerts.signal_grid import STAGES
from tests.alerts.signal_data import seed_signals
from tests.support.users import grant, make_client, make_staff

pytestmark = pytest.mark.django_db

GRID = "/admin/alerts/indicatorvalue/signals/"
CHART = "/admin/alerts/indicatorvalue/signals/chart/"


@pytest.fixture
def viewer(db: Any) -> Any:
    """Staff who may only look: the signals permission and the view permissions of the alerts models."""
    seed_signals()
    views = Permission.objects.filter(content_type__app_label="alerts", codename__startswith="view_")
    return make_staff("viewer", *(f"alerts.{p.codename}" for p in views))


def logged_in(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


class TestGrid:
    def test_view_only_staff_see_instruments_by_timeframe_with_the_bias(self, viewer: Any) -> None:
        response = logged_in(viewer).get(GRID)
        assert response.status_code == 200
        html = response.content.decode()
        assert 'id="s-EURUSD-15m" class="signal stage-oversold"' in html
        assert 'id="s-EURUSD-1h" class="signal stage-overbought"' in html
        assert 'id="s-GBPUSD-5m" class="signal stage-unknown"' in html
        assert "No closed bars" in html
        assert 'id="bias-EURUSD" class="bias bias-Bearish"' in html
        assert "s-USDJPY-1m" not in html  # disabled
        assert f"{CHART}?symbol=EURUSD&amp;tf=4h" in html

    def test_every_stage_has_a_colour(self, viewer: Any) -> None:
        html = logged_in(viewer).get(GRID).content.decode()
        for stage in STAGES:
            assert f".stage-{stage} " in html, stage
            assert f'<span class="stage-{stage}">{stage}</span>' in html

    def test_the_dashboard_links_to_it_for_those_who_may_see_it(self, viewer: Any) -> None:
        assert GRID.encode() in logged_in(viewer).get("/admin/").content
        other = make_staff("desk")
        assert GRID.encode() not in logged_in(other).get("/admin/").content

    def test_staff_without_the_permission_are_refused(self, viewer: Any) -> None:
        other = make_staff("desk")
        assert logged_in(other).get(GRID).status_code == 403
        assert logged_in(other).get(CHART, {"symbol": "EURUSD", "tf": "1h"}).status_code == 403

    def test_non_staff_and_anonymous_are_sent_to_the_login(self, viewer: Any) -> None:
        alice = grant(make_client("alice"), "alerts.view_signals")
        for client in (Client(), logged_in(alice)):
            response = client.get(GRID)
            assert response.status_code == 302
            assert response["Location"].startswith("/admin/login/")


class TestChart:
    def test_it_renders_the_chosen_range_for_the_browser_to_draw(self, viewer: Any) -> None:
        response = logged_in(viewer).get(
            CHART, {"symbol": "EURUSD", "tf": "1h", "start": "2026-01-01 00:00", "end": "2026-01-05 00:00"}
        )
        assert response.status_code == 200
        html = response.content.decode()
        assert '"symbol": "EURUSD"' in html and '"tf": "1h"' in html
        assert '"start": "2026-01-01T00:00:00+00:00"' in html
        assert '"end": "2026-01-05T00:00:00+00:00"' in html
        assert 'id="chart"' in html

    def test_the_range_defaults_to_the_last_bars(self, viewer: Any) -> None:
        response = logged_in(viewer).get(CHART, {"symbol": "EURUSD", "tf": "1d"})
        assert response.status_code == 200
        assert response.context["chart"]["tf"] == "1d"

    @pytest.mark.parametrize(
        ("params", "field"),
        [
            ({"symbol": "NOPE", "tf": "1h"}, "symbol"),
            ({"symbol": "EURUSD", "tf": "2h"}, "tf"),
            ({"symbol": "EURUSD", "tf": "1m", "start": "2026-01-01", "end": "2026-01-05"}, "start"),
            ({"symbol": "EURUSD", "tf": "1h", "start": "2026-01-05", "end": "2026-01-01"}, "start"),
        ],
    )
    def test_a_bad_choice_is_400_with_the_form_errors(
        self, viewer: Any, params: dict[str, str], field: str
    ) -> None:
        response = logged_in(viewer).get(CHART, params)
        assert response.status_code == 400
        assert field in response.context["form"].errors
        assert 'id="chart"' not in response.content.decode()

    def test_without_a_choice_it_shows_the_form(self, viewer: Any) -> None:
        response = logged_in(viewer).get(CHART)
        assert response.status_code == 200
        assert response.context["chart"] is None
