import dataclasses
from datetime import UTC, datetime
from decimal import Decimal as D

from marketdata.bars import TIMEFRAME_SECONDS, Bar
from marketdata.candles import NS, CandleBuilder, fill_gaps

T0 = int(datetime(2026, 3, 2, 10, 0, tzinfo=UTC).timestamp())  # a Monday, 10:00 UTC


def at(seconds: float) -> int:
    return int((T0 + seconds) * NS)


def test_it_closes_one_minute_bar_on_the_first_quote_of_the_next():
    builder = CandleBuilder()
    assert not builder.add("EURUSD", at(0), D("1.1000"))
    assert not builder.add("EURUSD", at(30), D("1.1010"))
    assert not builder.add("EURUSD", at(59), D("1.0990"))
    closed = builder.add("EURUSD", at(60), D("1.1005"))
    assert closed == [
        Bar("EURUSD", "1m", T0, D("1.1000"), D("1.1010"), D("1.0990"), D("1.0990"), tick_count=3)
    ]
    nxt = builder.symbols["EURUSD"].minute
    assert nxt is not None
    assert (nxt.start, nxt.open, nxt.high, nxt.low, nxt.close, nxt.ticks) == (
        at(60),
        D("1.1005"),
        D("1.1005"),
        D("1.1005"),
        D("1.1005"),
        1,
    )


def test_it_closes_a_bar_by_timer_once_its_end_passes_and_never_again():
    builder = CandleBuilder(["1m"])
    builder.add("EURUSD", at(10), D("1.2"))
    assert builder.close_due(at(59.999)) == []
    closed = builder.close_due(at(60))
    assert [(b.timeframe, b.start, b.close, b.tick_count) for b in closed] == [("1m", T0, D("1.2"), 1)]
    assert builder.close_due(at(61)) == []
    # The next bar's first quote does not close the same bar a second time.
    assert builder.add("EURUSD", at(61), D("1.3")) == []


def test_a_late_quote_never_reopens_or_changes_a_closed_bar():
    builder = CandleBuilder()
    builder.add("EURUSD", at(0), D("1.1000"))
    (closed,) = builder.add("EURUSD", at(60), D("1.1005"))
    assert not builder.add("EURUSD", at(59.5), D("2.0000"))
    assert builder.late == 1
    builder.add("EURUSD", at(70), D("1.1006"))
    closing = builder.add("EURUSD", at(120), D("1.1007"))
    assert [(b.start, b.open, b.high, b.close, b.tick_count) for b in closing] == [
        (T0 + 60, D("1.1005"), D("1.1006"), D("1.1006"), 2)
    ]
    assert closed.high == D("1.1000")


def test_a_quote_late_after_the_timer_closed_its_bar_is_counted_and_dropped():
    builder = CandleBuilder()
    builder.add("EURUSD", at(10), D("1.1"))
    builder.close_due(at(300))  # closes the 1m and the 5m bar
    assert not builder.add("EURUSD", at(250), D("1.5"))
    assert builder.late == 1
    assert builder.symbols["EURUSD"].minute is None


def test_an_out_of_order_quote_inside_the_open_bar_counts_but_does_not_move_the_close():
    builder = CandleBuilder(["1m"])
    builder.add("EURUSD", at(10), D("1.1"))
    builder.add("EURUSD", at(20), D("1.2"))
    builder.add("EURUSD", at(15), D("0.9"))
    (bar,) = builder.close_due(at(60))
    assert (bar.open, bar.high, bar.low, bar.close, bar.tick_count) == (
        D("1.1"),
        D("1.2"),
        D("0.9"),
        D("1.2"),
        3,
    )


def test_all_six_timeframes_are_aligned_and_match_their_quotes():
    builder = CandleBuilder()
    day = int(datetime(2026, 3, 2, tzinfo=UTC).timestamp())
    prices = {}
    closed: list[Bar] = []
    # One quote every 7 minutes for two days, starting 00:03 UTC.
    for i in range(2 * 24 * 60 // 7):
        t = day + 180 + i * 420
        price = D(100) + D(i % 37) - D(i % 11) / 10
        prices[t] = price
        closed.extend(builder.add("BTCUSD", t * NS, price))
    closed.extend(builder.close_due((day + 3 * 86400) * NS))
    by_tf: dict[str, list[Bar]] = {}
    for bar in closed:
        by_tf.setdefault(bar.timeframe, []).append(bar)
    assert set(by_tf) == set(TIMEFRAME_SECONDS)
    assert [b.start for b in by_tf["1d"]] == [day, day + 86400]  # 00:00 UTC
    assert {b.start % 14400 for b in by_tf["4h"]} == {0}
    for tf, bars in by_tf.items():
        step = TIMEFRAME_SECONDS[tf]
        assert [b.start for b in bars] == sorted({b.start for b in bars})
        for bar in bars:
            assert bar.start % step == 0
            inside = [p for t, p in sorted(prices.items()) if bar.start <= t < bar.start + step]
            assert (bar.open, bar.high, bar.low, bar.close, bar.tick_count) == (
                inside[0],
                max(inside),
                min(inside),
                inside[-1],
                len(inside),
            ), (tf, bar.start)
    assert sum(b.tick_count for b in by_tf["1d"]) == len(prices)


def test_closed_bars_come_out_shortest_timeframe_first():
    builder = CandleBuilder()
    builder.add("EURUSD", at(0), D("1.1"))
    closed = builder.add("EURUSD", at(3600), D("1.2"))
    assert [b.timeframe for b in closed] == ["1m", "5m", "15m", "1h"]


def test_symbols_are_independent():
    builder = CandleBuilder(["1m"])
    builder.add("EURUSD", at(0), D("1.1"))
    assert builder.add("GBPUSD", at(61), D("1.3")) == []
    assert [b.symbol for b in builder.add("EURUSD", at(61), D("1.2"))] == ["EURUSD"]


def bar(start: int, close: str) -> Bar:
    c = D(close)
    return Bar("EURUSD", "1m", start, c, c, c, c, tick_count=1)


def test_gaps_are_filled_with_synthetic_bars_at_the_previous_close():
    bars = [bar(T0, "1.1"), bar(T0 + 180, "1.3")]
    out, after = fill_gaps(
        bars,
        symbol="EURUSD",
        timeframe="1m",
        start=T0,
        end=T0 + 300,
        previous=None,
        complete_until=T0 + 10_000,
        limit=100,
    )
    assert [(b.start, b.close, b.synthetic) for b in out] == [
        (T0, D("1.1"), False),
        (T0 + 60, D("1.1"), True),
        (T0 + 120, D("1.1"), True),
        (T0 + 180, D("1.3"), False),
        (T0 + 240, D("1.3"), True),
    ]
    filled = out[1]
    assert (filled.open, filled.high, filled.low, filled.volume, filled.tick_count) == (
        D("1.1"),
        D("1.1"),
        D("1.1"),
        D(0),
        0,
    )
    assert after == T0 + 300


def test_gap_filling_uses_the_bar_before_the_range_and_stops_at_the_open_bar():
    out, _ = fill_gaps(
        [],
        symbol="EURUSD",
        timeframe="1m",
        start=T0,
        end=T0 + 600,
        previous=bar(T0 - 600, "1.05"),
        complete_until=T0 + 150,
        limit=100,
    )
    assert [(b.start, b.close, b.synthetic) for b in out] == [
        (T0, D("1.05"), True),
        (T0 + 60, D("1.05"), True),
    ]


def test_gap_filling_invents_nothing_before_the_first_known_close():
    out, _ = fill_gaps(
        [bar(T0 + 120, "1.2")],
        symbol="EURUSD",
        timeframe="1m",
        start=T0,
        end=T0 + 180,
        previous=None,
        complete_until=T0 + 10_000,
        limit=100,
    )
    assert [(b.start, b.synthetic) for b in out] == [(T0 + 120, False)]


def test_gap_filling_honours_the_limit_and_says_where_to_continue():
    out, after = fill_gaps(
        [bar(T0, "1.1")],
        symbol="EURUSD",
        timeframe="1m",
        start=T0,
        end=T0 + 3600,
        previous=None,
        complete_until=T0 + 10_000,
        limit=3,
    )
    assert [b.start for b in out] == [T0, T0 + 60, T0 + 120]
    assert after == T0 + 180


def test_bars_closed_after_a_restart_match_an_uninterrupted_run():
    """A run restored from its stored 1m bars and the current minute's ticks closes the same 5m..1d
    bars as a run that never stopped, marked partial (the restart window is not watched)."""
    import random

    rng = random.Random(7)
    quotes = []
    price = D("1.10000")
    for second in range(0, 5 * 3600, 7):  # five hours: every timeframe but 1d closes or is open
        price += D(rng.randint(-20, 20)) / 100000
        quotes.append((at(second), price))
    restart = at(2 * 3600 + 17 * 60 + 41)  # inside a 5m, 15m, 1h, 4h and 1d bar
    whole = CandleBuilder()
    closed_before = [b for ts, p in quotes if ts < restart for b in whole.add("EURUSD", ts, p)]
    stored_1m = [b for b in closed_before if b.timeframe == "1m"]
    current_minute = restart - restart % (60 * NS)
    ticks = [(ts, p) for ts, p in quotes if current_minute <= ts < restart]

    restored = CandleBuilder()
    restored.since = restart
    restored.restore("EURUSD", stored_1m, ticks, restart)

    after = [(ts, p) for ts, p in quotes if ts >= restart]
    expected = [b for ts, p in after for b in whole.add("EURUSD", ts, p)]
    got = [b for ts, p in after for b in restored.add("EURUSD", ts, p)]
    expected += whole.close_due(at(6 * 3600))
    got += restored.close_due(at(6 * 3600))
    assert {b.timeframe for b in got} == {"1m", "5m", "15m", "1h", "4h"}
    assert [dataclasses.replace(b, partial=False) for b in got] == expected
    partial = {(b.timeframe, b.start) for b in got if b.partial}
    spanning = {
        (tf, restart // NS - restart // NS % seconds)
        for tf, seconds in TIMEFRAME_SECONDS.items()
        if tf != "1d"
    }
    assert partial == spanning


def test_a_run_killed_at_second_57_leaves_no_bar_missing_across_hour_and_day_boundaries():
    """The previous run stored the bars it closed and the ticks up to its death at 23:59:57; the
    next starts at 00:00:03 and closes, from the stored ticks, the same 1m, 5m, 15m, 1h, 4h and 1d
    bars as a run that had lived on (marked partial)."""
    day_end = T0 + 14 * 3600  # midnight after the Monday
    quotes = [
        (int((day_end - 3 * 3600 + s) * NS), D("1.1") + D(s % 97) / 10000) for s in range(0, 3 * 3600 - 3, 2)
    ]
    killed, restart = int((day_end - 3) * NS), int((day_end + 3) * NS)
    whole = CandleBuilder()
    stored = [b for ts, p in quotes for b in whole.add("EURUSD", ts, p)]
    last_1m_end = max(b.start for b in stored if b.timeframe == "1m") * NS + 60 * NS
    ticks = [(ts, p) for ts, p in quotes if last_1m_end <= ts < killed]

    restored = CandleBuilder()
    restored.since = restart
    got = restored.restore("EURUSD", stored, ticks, restart) + restored.close_due(restart)
    expected = whole.close_due(restart)

    assert {(b.timeframe, b.start) for b in expected} == {
        (tf, day_end - seconds) for tf, seconds in TIMEFRAME_SECONDS.items()
    }
    assert [dataclasses.replace(b, partial=False) for b in got] == expected
    assert all(b.partial for b in got)


def test_trades_make_bars_with_their_volume_source_and_venue_on_every_timeframe():
    builder = CandleBuilder()
    prints = [(0, "100.5", "0.25"), (20, "101", "1.5"), (40, "99.75", "0.125"), (70, "100", "2")]
    closed = []
    for t, price, size in prints:
        closed += builder.add("BTCUSD", at(t), D(price), D(size), "trades", "cb")
    closed += builder.close_due(at(3600))
    by_tf = {(b.timeframe, b.start): b for b in closed}
    first = by_tf[("1m", T0)]
    assert (first.open, first.high, first.low, first.close, first.volume, first.tick_count) == (
        D("100.5"),
        D("101"),
        D("99.75"),
        D("99.75"),
        D("1.875"),
        3,
    )
    assert (first.source, first.venue, first.partial) == ("trades", "cb", False)
    hour = by_tf[("1h", T0)]
    assert (hour.volume, hour.tick_count, hour.close, hour.source, hour.venue, hour.partial) == (
        D("3.875"),
        4,
        D("100"),
        "trades",
        "cb",
        False,
    )


def test_a_bar_fed_by_two_venues_is_partial_and_so_are_its_longer_bars():
    builder = CandleBuilder()
    builder.add("BTCUSD", at(0), D("100"), D("1"), "trades", "cb")
    builder.add("BTCUSD", at(30), D("100.2"), D(0), "mid", "sim")  # failover inside the minute
    bars = list(builder.add("BTCUSD", at(61), D("100.4"), D(0), "mid", "sim"))
    closed = {(b.timeframe, b.start): b for b in bars + builder.close_due(at(3600))}
    assert closed[("1m", T0)].partial and closed[("1m", T0)].venue == "cb"
    clean = closed[("1m", T0 + 60)]
    assert (clean.partial, clean.source, clean.venue, clean.volume) == (False, "mid", "sim", D(0))
    assert closed[("5m", T0)].partial and closed[("1h", T0)].partial
