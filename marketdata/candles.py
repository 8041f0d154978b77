"""Candle builder: 1m 5m 15m 1h 4h 1d bars from the selected mid. Pure Python, no Django.

Only the open 1m bar is touched per quote; every longer timeframe is a fold of closed 1m bars (all
boundaries are whole minutes since the epoch, so 4h bars start at 00/04/08.. UTC and 1d at 00:00
UTC), which gives the same OHLC and tick count as updating six bars per quote at a sixth of the cost.

A bar closes exactly once: when the first quote of a later bar arrives, or when `close_due` is called
after its end. Each symbol keeps a watermark (the latest end of a closed bar): a quote older than
it, or older than the open 1m bar, is late, counted and dropped, so it never reopens or misorders a
closed bar.

After a restart `restore` rebuilds a symbol's open bars from what was stored: the closed 1m bars of
the periods still open and the ticks after the last of them, so a minute the previous run left open
(it was killed at second 57) is rebuilt from its ticks and closed, and the longer bars include it.
Bars that began before `since` (when this builder started watching) are marked partial.

Each price comes with its source (a trade, with its size as volume, or a mid with none) and venue.
A bar takes the source and venue of its first price; a price of another source or venue in the
same bar (a failover) makes it partial, so it is never taken for a clean series of one venue.
"""

from collections.abc import Iterable, Sequence
from decimal import Decimal

from marketdata.bars import MID, TIMEFRAME_SECONDS, Bar

NS = 1_000_000_000
MINUTE_NS = 60 * NS
TIMEFRAMES = tuple(TIMEFRAME_SECONDS)
ZERO = Decimal(0)
_NO_BARS: tuple[Bar, ...] = ()


class _Minute:
    __slots__ = (
        "close",
        "end",
        "high",
        "last_ts",
        "low",
        "mixed",
        "open",
        "source",
        "start",
        "ticks",
        "venue",
        "volume",
    )

    def __init__(self, start: int, ts: int, price: Decimal, volume: Decimal, source: str, venue: str) -> None:
        self.start = start
        self.end = start + MINUTE_NS
        self.open = self.high = self.low = self.close = price
        self.ticks = 1
        self.last_ts = ts
        self.volume = volume
        self.source = source
        self.venue = venue
        self.mixed = False


class _Fold:
    """An open bar of a longer timeframe, made of the closed 1m bars inside it."""

    __slots__ = (
        "close",
        "end",
        "high",
        "low",
        "mixed",
        "open",
        "source",
        "start",
        "ticks",
        "venue",
        "volume",
    )

    def __init__(self, start: int, length: int, minute: _Minute | Bar) -> None:
        self.start = start
        self.end = start + length
        self.open, self.high, self.low, self.close = minute.open, minute.high, minute.low, minute.close
        self.volume = minute.volume
        self.source, self.venue = minute.source, minute.venue
        if isinstance(minute, _Minute):
            self.ticks, self.mixed = minute.ticks, minute.mixed
        else:  # a stored bar at a restart: the fold is partial anyway (it began before `since`)
            self.ticks, self.mixed = minute.tick_count, False

    def add(self, bar: Bar) -> None:
        self.high = max(self.high, bar.high)
        self.low = min(self.low, bar.low)
        self.close = bar.close
        self.ticks += bar.tick_count
        self.volume += bar.volume
        if bar.source != self.source or bar.venue != self.venue:
            self.mixed = True


class _SymbolState:
    __slots__ = ("folds", "minute", "watermark")

    def __init__(self, n_folds: int) -> None:
        self.minute: _Minute | None = None
        self.folds: list[_Fold | None] = [None] * n_folds
        self.watermark = 0


class CandleBuilder:
    def __init__(self, timeframes: Iterable[str] = TIMEFRAMES) -> None:
        timeframes = tuple(timeframes)
        if "1m" not in timeframes:
            raise ValueError("the 1m timeframe is the base of all others")
        self.fold_tfs = [tf for tf in TIMEFRAMES if tf in timeframes and tf != "1m"]
        self.fold_ns = [TIMEFRAME_SECONDS[tf] * NS for tf in self.fold_tfs]
        self.symbols: dict[str, _SymbolState] = {}
        self.late = 0
        self.since = 0  # epoch ns from which every quote was seen; bars that began earlier are partial

    def add(
        self,
        symbol: str,
        ts: int,
        price: Decimal,
        volume: Decimal = ZERO,
        source: str = MID,
        venue: str = "",
    ) -> Sequence[Bar]:
        """Apply one price at `ts` (epoch ns): a mid (volume 0) or a trade (its size as volume) from
        `venue`. Returns the bars this price closed, shortest first."""
        state = self.symbols.get(symbol)
        if state is not None:
            m = state.minute
            if m is not None and m.start <= ts < m.end:
                if price > m.high:
                    m.high = price
                elif price < m.low:
                    m.low = price
                if ts >= m.last_ts:
                    m.close = price
                    m.last_ts = ts
                m.ticks += 1
                if volume:
                    m.volume += volume
                if venue != m.venue or source != m.source:
                    m.mixed = True
                return _NO_BARS
        else:
            state = self.symbols[symbol] = _SymbolState(len(self.fold_ns))
        return self._roll(state, symbol, ts, price, volume, source, venue)

    def close_due(self, now: int) -> list[Bar]:
        """Close every bar whose end is at or before `now` (epoch ns): the timer path."""
        closed: list[Bar] = []
        for symbol, state in self.symbols.items():
            m = state.minute
            if m is not None and m.end <= now:
                self._close_minute(state, symbol, closed)
            self._close_folds(state, symbol, now, closed)
        return closed

    def restore(
        self, symbol: str, stored: Iterable[Bar], ticks: Iterable[tuple[int, Decimal]], now: int
    ) -> list[Bar]:
        """Rebuild `symbol`'s bars that were open when the previous run stopped, at `now` (epoch ns),
        from what it stored: `stored` are its closed bars (1m, and the longer ones it closed) since
        the start of the longest period still open, `ticks` its (ts, mid) recorded after its last
        stored 1m bar. Minutes the previous run left open and that have ended since (it stopped
        at second 57, this one starts in the next minute) are closed here, and so are the longer
        bars that ended with them: returns those bars, to be stored."""
        state = self.symbols[symbol] = _SymbolState(len(self.fold_ns))
        current = now - now % MINUTE_NS
        ticks = sorted((t for t in ticks if t[0] <= now), key=lambda t: t[0])
        minutes = sorted(
            (b for b in stored if b.timeframe == "1m" and b.start * NS < current), key=lambda b: b.start
        )
        closed_folds = {(b.timeframe, b.start) for b in stored if b.timeframe != "1m"}
        if minutes:
            open_from = minutes[-1].start * NS + MINUTE_NS
        else:
            open_from = min(current, ticks[0][0] - ticks[0][0] % MINUTE_NS) if ticks else current
        for i, length in enumerate(self.fold_ns):
            period = open_from - open_from % length
            if (self.fold_tfs[i], period // NS) in closed_folds:
                continue  # the previous run closed it: a bar opens with the next minute
            for bar in minutes:
                if bar.start * NS < period:
                    continue
                fold = state.folds[i]
                if fold is None:
                    state.folds[i] = _Fold(period, length, bar)
                else:
                    fold.add(bar)
        if minutes:
            state.watermark = open_from
        rebuilt: list[Bar] = []
        for ts, price in ticks:
            if ts >= open_from:
                rebuilt.extend(self.add(symbol, ts, price))
        return rebuilt

    def _roll(
        self,
        state: _SymbolState,
        symbol: str,
        ts: int,
        price: Decimal,
        volume: Decimal,
        source: str,
        venue: str,
    ) -> Sequence[Bar]:
        m = state.minute
        if ts < state.watermark or (m is not None and ts < m.start):
            self.late += 1
            return _NO_BARS
        closed: list[Bar] = []
        if m is not None:
            self._close_minute(state, symbol, closed)
        self._close_folds(state, symbol, ts, closed)
        state.minute = _Minute(ts - ts % MINUTE_NS, ts, price, volume, source, venue)
        return closed

    def _close_minute(self, state: _SymbolState, symbol: str, out: list[Bar]) -> None:
        m = state.minute
        assert m is not None
        state.minute = None
        state.watermark = max(state.watermark, m.end)
        out.append(
            Bar(
                symbol,
                "1m",
                m.start // NS,
                m.open,
                m.high,
                m.low,
                m.close,
                m.volume,
                tick_count=m.ticks,
                partial=m.mixed or m.start < self.since,
                source=m.source,
                venue=m.venue,
            )
        )
        folds = state.folds
        for i, length in enumerate(self.fold_ns):
            fold = folds[i]
            if fold is not None and m.start >= fold.end:
                self._close_fold(state, symbol, i, out)
                fold = None
            if fold is None:
                folds[i] = _Fold(m.start - m.start % length, length, m)
                continue
            if m.high > fold.high:
                fold.high = m.high
            if m.low < fold.low:
                fold.low = m.low
            fold.close = m.close
            fold.ticks += m.ticks
            fold.volume += m.volume
            if m.mixed or m.source != fold.source or m.venue != fold.venue:
                fold.mixed = True

    def _close_folds(self, state: _SymbolState, symbol: str, now: int, out: list[Bar]) -> None:
        for i, fold in enumerate(state.folds):
            if fold is not None and fold.end <= now:
                self._close_fold(state, symbol, i, out)

    def _close_fold(self, state: _SymbolState, symbol: str, i: int, out: list[Bar]) -> None:
        fold = state.folds[i]
        assert fold is not None
        state.folds[i] = None
        state.watermark = max(state.watermark, fold.end)
        out.append(
            Bar(
                symbol,
                self.fold_tfs[i],
                fold.start // NS,
                fold.open,
                fold.high,
                fold.low,
                fold.close,
                fold.volume,
                tick_count=fold.ticks,
                partial=fold.mixed or fold.start < self.since,
                source=fold.source,
                venue=fold.venue,
            )
        )


def fill_gaps(
    bars: list[Bar],
    *,
    symbol: str,
    timeframe: str,
    start: int,
    end: int,
    previous: Bar | None,
    complete_until: int,
    limit: int,
) -> tuple[list[Bar], int]:
    """Bars from `start` to `end` (epoch seconds, end exclusive), at most `limit`: the stored `bars`
    (ascending) with every missing bar after a known close made synthetic (OHLC = previous close,
    volume 0). Only bars that ended by `complete_until` are synthesised (the current one is not),
    and none before the first known close. Returns the bars and where the next page starts."""
    step = TIMEFRAME_SECONDS[timeframe]
    out: list[Bar] = []
    last = previous
    t, i = start, 0
    while len(out) < limit and t < end:
        stored = bars[i] if i < len(bars) else None
        if stored is not None and stored.start <= t:
            out.append(stored)
            last = stored
            i += 1
            t = stored.start + step
        elif last is None or t + step > complete_until:
            if stored is None:
                break
            t = stored.start
        else:
            # A gap continues the series before it: same source and venue, flagged synthetic.
            close = last.close
            out.append(
                Bar(
                    symbol,
                    timeframe,
                    t,
                    close,
                    close,
                    close,
                    close,
                    synthetic=True,
                    source=last.source,
                    venue=last.venue,
                )
            )
            t += step
    return out, t
