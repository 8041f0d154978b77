"""View-only staff watch the signals grid change live and open a chart, in a real browser."""

import math
import re
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from django.db import connection
from playwright.sync_api import Page, expect, sync_playwright

from alerts.models import IndicatorValue
from alerts.selectors import epoch_to_datetime, signal_list
from alerts.services import indicators_update_for_bar
from marketdata.bars import TIMEFRAME_SECONDS
from marketdata.models import Candle, Instrument
from tests.alerts.signal_data import AS_OF, seed_signals
from tests.livermore.test_browser_live_quotes import CHROMIUM_ARGS
from tests.support.stack import run_stack
from tests.support.users import PASSWORD, make_staff

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

CHART_BARS = 80
LONG_CHART_BARS = 1500  # more than a page of the candles API
HOUR = timedelta(hours=1)


def store_bars(
    symbol: str, bars: int, end: Any, close_of: Callable[[int], float], timeframe: str = "1h"
) -> list[int]:
    """Bars closing at `close_of(i)`, the last one starting at `end`; returns their starts (epoch s)."""
    instrument = Instrument.objects.get(symbol=symbol)
    step = timedelta(seconds=TIMEFRAME_SECONDS[timeframe])
    starts = [end - (bars - 1 - i) * step for i in range(bars)]
    candles = []
    for i, start in enumerate(starts):
        close = Decimal(close_of(i)).quantize(Decimal("0.01"))
        candles.append(
            Candle(
                instrument=instrument,
                timeframe=timeframe,
                start=start,
                open=close - 2,
                high=close + 5,
                low=close - 6,
                close=close,
                volume=Decimal(100 + i),
            )
        )
    Candle.objects.bulk_create(candles)
    return [int(s.timestamp()) for s in starts]


def elsewhere(job: Callable[[], Any]) -> Any:
    """Database work off this thread, as a worker would do it: Playwright's event loop runs here."""

    def run() -> Any:
        try:
            return job()
        finally:
            connection.close()

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(run).result()


def log_in(page: Page, base: str, user: Any) -> None:
    page.goto(f"{base}/admin/login/")
    page.fill("#id_username", user.username)
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")


def test_view_only_staff_watch_a_cell_change_and_open_its_chart(tmp_path: Path, settings: Any) -> None:
    settings.REDIS_PREFIX = f"test-signals-{uuid.uuid4().hex[:8]}"
    seed_signals()
    viewer = make_staff("viewer", "alerts.view_signals")
    btc_bars = store_bars("BTCUSD", 40, AS_OF, lambda i: 95000 + 2 * i * i)  # rising faster and faster
    for start in store_bars("XAUUSD", CHART_BARS, AS_OF, lambda i: 2650 + 40 * math.sin(i / 6)):
        indicators_update_for_bar(symbol="XAUUSD", timeframe="1h", start=start)
    xau = Instrument.objects.get(symbol="XAUUSD")
    IndicatorValue.objects.bulk_create(
        IndicatorValue(
            instrument=xau,
            timeframe="1m",
            start=epoch_to_datetime(start),
            name="macdv",
            value=Decimal(i % 300 - 150),
            signal=Decimal(0),
            histogram=Decimal(i % 300 - 150),
        )
        for i, start in enumerate(store_bars("XAUUSD", LONG_CHART_BARS, AS_OF, lambda i: 2650 + i % 50, "1m"))
    )

    with run_stack(tmp_path, "web", REDIS_PREFIX=settings.REDIS_PREFIX) as stack, sync_playwright() as pw:
        stack.wait_http("/healthz", timeout=60)
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            log_in(page, stack.url, viewer)
            page.click("#livermore-dashboard a[href$='/signals/']")
            expect(page.locator("#status")).to_have_text("Live", timeout=10_000)  # every snapshot is in
            cell = page.locator("#s-BTCUSD-1h")
            expect(cell).to_have_class(re.compile(r"\bstage-unknown\b"))
            expect(page.locator("#s-EURUSD-15m")).to_have_class(re.compile(r"\bstage-oversold\b"))
            expect(page.locator("#bias-EURUSD")).to_have_text("Bearish")
            expect(page.locator("#bias-BTCUSD")).to_have_text("Neutral")

            # The bar-close job of BTCUSD's latest 1h bar stores its indicators and publishes them.
            data = elsewhere(
                lambda: indicators_update_for_bar(symbol="BTCUSD", timeframe="1h", start=btc_bars[-1])
            )
            stage = data["indicators"]["macdv"]["stage"]
            assert stage is not None
            expect(cell).to_have_class(re.compile(rf"\bstage-{stage}\b"), timeout=10_000)
            expect(cell.locator(".value")).to_have_text(f"{float(data['indicators']['macdv']['value']):.1f}")
            # The page then reads the instrument's bias (over the six timeframes) from the API.
            (signal,) = elsewhere(lambda: signal_list(symbols=["BTCUSD"], timeframes=["1h"]))
            assert signal.bias != "Neutral"
            expect(page.locator("#bias-BTCUSD")).to_have_text(signal.bias, timeout=10_000)
            page.screenshot(path=str(tmp_path / "signals.png"))

            page.click("#s-XAUUSD-1h a")
            expect(page.locator("#id_symbol")).to_have_value("XAUUSD")
            first = AS_OF - (CHART_BARS - 1) * HOUR
            page.fill("#id_start", first.strftime("%Y-%m-%d %H:%M"))
            page.fill("#id_end", (AS_OF + HOUR).strftime("%Y-%m-%d %H:%M"))
            page.click("input[value=Draw]")
            chart = page.locator("#chart")
            expect(chart).to_have_attribute("data-bars", str(CHART_BARS), timeout=10_000)
            expect(page.locator("#chart .candle")).to_have_count(CHART_BARS)
            expect(page.locator("#chart .volume")).to_have_count(CHART_BARS)
            expect(page.locator("#chart .guide")).to_have_count(4)
            # MACD-V is seeded from the 26th bar, its signal 8 bars later.
            expect(chart).to_have_attribute("data-macdv", str(CHART_BARS - 25))
            expect(page.locator("#chart .macdv-hist")).to_have_count(CHART_BARS - 33)
            for line in ("macdv-line", "macdv-signal", "ema12", "ema26"):
                assert (page.locator(f"#chart .{line}").get_attribute("d") or "").startswith("M"), line
            page.screenshot(path=str(tmp_path / "chart.png"))

            # A range longer than a page of candles: the page follows the API's cursor.
            page.select_option("#id_tf", "1m")
            page.fill(
                "#id_start", (AS_OF - timedelta(minutes=LONG_CHART_BARS - 1)).strftime("%Y-%m-%d %H:%M")
            )
            page.fill("#id_end", (AS_OF + timedelta(minutes=1)).strftime("%Y-%m-%d %H:%M"))
            page.click("input[value=Draw]")
            expect(chart).to_have_attribute("data-bars", str(LONG_CHART_BARS), timeout=20_000)
            expect(chart).to_have_attribute("data-macdv", str(LONG_CHART_BARS))
            expect(page.locator("#chart .candle")).to_have_count(LONG_CHART_BARS)
        finally:
            browser.close()
            stack.stop()  # SIGTERM, which the supervisor passes on: every process flushes
