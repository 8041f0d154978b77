"""An operator logs into the admin in a real browser and watches quotes change."""

from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect, sync_playwright

from marketdata.demo import demo_seed
from tests.support.stack import run_stack
from tests.support.users import PASSWORD

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def test_an_operator_sees_live_quotes_change_in_the_admin(tmp_path: Path, operator: Any) -> None:
    demo_seed()
    with run_stack(tmp_path, "web", "market") as stack, sync_playwright() as pw:
        stack.wait_http("/readyz", timeout=60)
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto(f"{stack.url}/admin/login/")
            page.fill("#id_username", operator.username)
            page.fill("#id_password", PASSWORD)
            page.click("input[type=submit]")
            page.click("text=Live quotes")
            expect(page.locator("#status")).to_have_text("Live", timeout=10_000)
            bid = page.locator("#q-EURUSD .bid")
            expect(bid).not_to_have_text("–", timeout=10_000)
            first_bid, first_seq = bid.inner_text(), int(page.locator("#q-EURUSD .seq").inner_text())
            page.wait_for_function(
                "seq => Number(document.querySelector('#q-EURUSD .seq').textContent) > seq",
                arg=first_seq,
                timeout=10_000,
            )
            assert page.locator("#q-EURUSD .tradable").inner_text() == "yes"
            assert first_bid.startswith("1.")
            page.screenshot(path=str(tmp_path / "live-quotes.png"))
        finally:
            browser.close()
        stack.stop()
