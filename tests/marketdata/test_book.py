import random
from decimal import Decimal as D

import pytest

from marketdata.book import OrderBook


def test_a_new_book_has_no_top_until_both_sides_have_a_level() -> None:
    book = OrderBook()
    assert book.top is None
    book.bids.set(D("100.5"), D("2"))
    assert book.top is None
    book.asks.set(D("101"), D("3"))
    assert book.top == (D("100.5"), D("2"), D("101"), D("3"))


def test_setting_levels_reports_whether_the_best_changed() -> None:
    book = OrderBook()
    assert book.bids.set(D("100"), D("1")) is True  # first level
    assert book.bids.set(D("99"), D("1")) is False  # below the best
    assert book.bids.set(D("101"), D("1")) is True  # better
    assert book.bids.set(D("101"), D("4")) is True  # the best level's size changed
    assert book.bids.set(D("99"), D("7")) is False
    assert book.bids.set(D("98"), D("0")) is False  # removing a level that is not there
    assert book.bids.best == D("101") and book.bids.best_size == D("4")


def test_removing_the_best_level_falls_back_to_the_next_one() -> None:
    book = OrderBook()
    for price in ("101", "102", "103"):
        book.asks.set(D(price), D("1"))
    assert book.asks.best == D("101")
    assert book.asks.set(D("101"), D("0")) is True
    assert book.asks.best == D("102")
    assert book.asks.set(D("103"), D("0")) is False
    assert book.asks.set(D("102"), D("0.000")) is True  # any spelling of zero removes
    assert book.asks.best is None and len(book.asks) == 0


def test_a_level_removed_and_added_again_is_found_once_more() -> None:
    book = OrderBook()
    book.bids.set(D("10"), D("1"))
    book.bids.set(D("9"), D("1"))
    book.bids.set(D("10"), D("0"))
    book.bids.set(D("10"), D("2"))
    book.bids.set(D("10"), D("0"))
    assert book.bids.best == D("9")
    book.bids.set(D("9"), D("0"))
    assert book.bids.best is None


def test_a_crossed_book_has_no_top() -> None:
    book = OrderBook()
    book.bids.set(D("101"), D("1"))
    book.asks.set(D("101"), D("1"))
    assert book.top is None


def test_the_sides_are_named_as_coinbase_names_them() -> None:
    book = OrderBook()
    assert book.side("bid") is book.bids and book.side("offer") is book.asks
    with pytest.raises(ValueError, match="unknown book side"):
        book.side("ask")


def test_reset_forgets_every_level_and_unsyncs() -> None:
    book = OrderBook()
    book.synced = True
    book.bids.set(D("1"), D("1"))
    book.asks.set(D("2"), D("1"))
    book.reset()
    assert (book.top, book.synced, len(book.bids), len(book.asks)) == (None, False, 0, 0)


def test_the_best_matches_a_full_scan_through_random_churn() -> None:
    rng = random.Random(7)
    book = OrderBook()
    for _ in range(20_000):
        side = book.bids if rng.random() < 0.5 else book.asks
        price = D(rng.randint(9_000, 9_200)) / 100
        quantity = D(0) if rng.random() < 0.45 else D(rng.randint(1, 9))
        side.set(price, quantity)
        assert book.bids.best == (max(book.bids.levels) if book.bids.levels else None)
        assert book.asks.best == (min(book.asks.levels) if book.asks.levels else None)
    # the lazily cleaned heaps stay bounded
    assert len(book.bids._heap) <= 2 * len(book.bids) + 65
