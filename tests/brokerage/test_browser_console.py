"""The operator console in a real browser (Debian chromium): the dashboard updating, a dealer's order
entry and cancel from the account page, the instrument chart, and view-only staff kept read-only."""

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from django.urls import reverse
from playwright.sync_api import expect, sync_playwright

from brokerage import services
from brokerage.models import ClientGroup, Order, OrderStatus, Position
from marketdata.demo import demo_seed
from marketdata.models import Instrument, Venue
from tests.alerts.test_browser_signals import elsewhere, log_in, store_bars
from tests.livermore.test_browser_live_quotes import CHROMIUM_ARGS
from tests.support.stack import run_stack
from tests.support.trading import open_account
from tests.support.users import make_client, make_role_user
from users.roles import DEALER, VIEWER

from .conftest import PRICES, quote_set

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

HOUR = timedelta(hours=1)
AS_OF = datetime(2026, 11, 30, 12, tzinfo=UTC)


def fresh_quotes() -> None:
    for symbol, (bid, ask) in PRICES.items():
        quote_set(symbol, bid, ask)


def test_the_console_in_a_browser(tmp_path: Path, settings: Any) -> None:
    settings.REDIS_PREFIX = f"test-console-{uuid.uuid4().hex[:8]}"
    demo_seed()
    Venue.objects.filter(code="sim").update(stale_after_ms=600_000)  # the quotes below stay priced
    fresh_quotes()
    group = ClientGroup.objects.create(name="standard", currency="USD", leverage=100)
    account = open_account(make_client("alice"), group, "10000")
    dealer = make_role_user("dina", DEALER)
    viewer = make_role_user("vic", VIEWER)
    store_bars("EURUSD", 48, AS_OF, lambda i: 1.08 + i / 10_000)
    store_bars("EURUSD", 12, AS_OF, lambda i: 1.08 + i / 1_000, "4h")
    chart = reverse("admin:marketdata_instrument_chart", args=[Instrument.objects.get(symbol="EURUSD").pk])
    chart_range = f"start={(AS_OF - 47 * HOUR):%Y-%m-%d %H:%M}&end={(AS_OF + HOUR):%Y-%m-%d %H:%M}"

    with run_stack(tmp_path, "web", REDIS_PREFIX=settings.REDIS_PREFIX) as stack, sync_playwright() as pw:
        stack.wait_http("/healthz", timeout=60)
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            log_in(page, stack.url, dealer)

            # The dashboard's exposure panel shows a position opened elsewhere, without a reload.
            expect(page.locator("#live-status")).to_contain_text("Live", timeout=15_000)
            exposure = page.locator('table[data-table="exposure"] tbody')
            expect(exposure).to_contain_text("No open positions.")
            expect(page.locator('table[data-table="four_eyes"] tbody')).to_contain_text("No cash operation")
            elsewhere(
                lambda: services.order_submit(
                    account=account, symbol="USDJPY", side="sell", volume=Decimal("0.3")
                )
            )
            expect(exposure.locator("tr").first).to_contain_text("USDJPY", timeout=15_000)
            expect(exposure.locator("tr").first.locator("td").nth(2)).to_have_text("0.3")
            page.screenshot(path=str(tmp_path / "dashboard.png"))

            # Order entry from the account page: a refused order, then a pending one, then its cancel.
            page.goto(f"{stack.url}{reverse('admin:brokerage_tradingaccount_change', args=[account.pk])}")
            page.click("a:text-is('Trade')")
            order_form = page.locator("#order-entry")
            order_form.locator("#id_new-symbol").select_option("EURUSD")
            order_form.locator("#id_new-side").select_option("buy")
            order_form.locator("#id_new-volume").fill("0.2")
            order_form.locator("#id_new-sl").fill("1.2")
            order_form.locator("input[type=submit]").click()
            expect(page.locator("#order-entry .errorlist").first).to_contain_text("SL must be below")
            assert not elsewhere(lambda: Order.objects.filter(instrument__symbol="EURUSD").exists())

            order_form.locator("#id_new-type").select_option("limit")
            order_form.locator("#id_new-price").fill("1.08")
            order_form.locator("#id_new-sl").fill("1.07")
            order_form.locator("#id_new-tp").fill("1.1")
            elsewhere(fresh_quotes)
            order_form.locator("input[type=submit]").click()
            expect(page.locator(".messagelist")).to_contain_text("pending")
            pending = elsewhere(lambda: Order.objects.get(instrument__symbol="EURUSD"))
            assert (pending.status, pending.price, pending.sl, pending.tp) == (
                OrderStatus.PENDING,
                Decimal("1.08"),
                Decimal("1.07"),
                Decimal("1.1"),
            )
            row = page.locator(f"#order-{pending.pk}")
            expect(row).to_contain_text("EURUSD")
            position = elsewhere(lambda: Position.objects.get(instrument__symbol="USDJPY"))
            expect(page.locator(f"#position-{position.pk}")).to_contain_text("USDJPY")
            row.locator("input[value='Cancel order']").click()
            expect(page.locator(".messagelist")).to_contain_text(f"Order {pending.pk}: cancelled.")
            expect(page.locator(f"#order-{pending.pk}")).to_have_count(0)
            assert elsewhere(lambda: Order.objects.get(pk=pending.pk).status) == OrderStatus.CANCELLED
            page.screenshot(path=str(tmp_path / "trade.png"))

            # The chart of an instrument from its stored bars, timeframe selectable.
            page.goto(f"{stack.url}{chart}?tf=1h&{chart_range}")
            svg = page.locator("#chart")
            expect(svg).to_have_attribute("data-bars", "48", timeout=10_000)
            expect(page.locator("#chart .candle")).to_have_count(48)
            expect(page.locator("#chart .volume")).to_have_count(48)
            page.select_option("#id_tf", "4h")
            page.click("input[value=Draw]")
            expect(page.locator("#chart-status")).to_contain_text("EURUSD 4h", timeout=10_000)
            assert int(svg.get_attribute("data-bars") or 0) >= 12
            page.screenshot(path=str(tmp_path / "chart.png"))

            # View-only staff: the live pages, no trade page and no order forms.
            viewing = browser.new_page()
            log_in(viewing, stack.url, viewer)
            expect(viewing.locator('table[data-table="exposure"] tbody')).to_contain_text(
                "USDJPY", timeout=15_000
            )
            viewing.goto(f"{stack.url}{reverse('admin:brokerage_exposure')}")
            expect(viewing.locator("#live-status")).to_contain_text("Live", timeout=15_000)
            expect(viewing.locator('table[data-table="exposure"] tbody')).to_contain_text("USDJPY")
            viewing.goto(f"{stack.url}{reverse('admin:brokerage_tradingaccount_change', args=[account.pk])}")
            expect(viewing.locator("a:text-is('Trade')")).to_have_count(0)
            expect(viewing.locator("input[name=_save]")).to_have_count(0)
            refused = viewing.goto(
                f"{stack.url}{reverse('admin:brokerage_tradingaccount_trade', args=[account.pk])}"
            )
            assert refused is not None and refused.status == 403
            viewing.goto(f"{stack.url}{chart}?tf=1h&{chart_range}")
            expect(viewing.locator("#chart")).to_have_attribute("data-bars", "48", timeout=10_000)
        finally:
            browser.close()
        stack.stop()
