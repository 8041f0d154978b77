"""Top of book per symbol from FIX market data: a full refresh (W) replaces both sides, an
incremental refresh (X) changes only the entries it carries and keeps the other side."""

from dataclasses import dataclass

BID, OFFER = "0", "1"
NEW, CHANGE, DELETE = "0", "1", "2"


@dataclass(slots=True)
class Side:
    price: str | None = None
    size: str | None = None


@dataclass(slots=True)
class Top:
    bid: Side
    ask: Side
    ts_ns: int = 0

    @property
    def complete(self) -> bool:
        return self.bid.price is not None and self.ask.price is not None


class Book:
    """Latest bid and offer per venue symbol; prices stay the venue's decimal strings."""

    def __init__(self) -> None:
        self.tops: dict[str, Top] = {}

    def clear(self, symbol: str | None = None) -> None:
        if symbol is None:
            self.tops.clear()
        else:
            self.tops.pop(symbol, None)

    def _top(self, symbol: str) -> Top:
        top = self.tops.get(symbol)
        if top is None:
            top = self.tops[symbol] = Top(Side(), Side())
        return top

    def snapshot(self, symbol: str, entries: list[dict[str, str]], ts_ns: int) -> Top:
        top = self.tops[symbol] = Top(Side(), Side(), ts_ns)
        for entry in entries:
            side = self._side(top, entry.get("269"))
            if side is not None:
                side.price, side.size = entry.get("270"), entry.get("271")
        return top

    def update(self, symbol: str, entry: dict[str, str], ts_ns: int) -> Top:
        top = self._top(symbol)
        side = self._side(top, entry.get("269"))
        if side is not None:
            if entry.get("279") == DELETE:
                side.price = side.size = None
            else:
                side.price = entry.get("270", side.price)
                side.size = entry.get("271", side.size)
            top.ts_ns = ts_ns
        return top

    @staticmethod
    def _side(top: Top, entry_type: str | None) -> Side | None:
        if entry_type == BID:
            return top.bid
        if entry_type == OFFER:
            return top.ask
        return None
