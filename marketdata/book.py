"""A price-level order book (level 2) with its best bid and ask kept current. No Django, no I/O.

Coinbase's `level2` channel sends the whole book as a snapshot and then absolute quantities per
price level ("0" removes the level). Only the top of book leaves this module, so each side is a
dict of levels plus a lazily cleaned heap of its prices: setting a level is O(1) unless it adds a
price (O(log n)), and removing the best pops the heap until it finds a price still in the book.
"""

import heapq
from decimal import Decimal

ZERO = Decimal(0)


class BookSide:
    __slots__ = ("_heap", "best", "is_bid", "levels")

    def __init__(self, *, is_bid: bool) -> None:
        self.is_bid = is_bid
        self.levels: dict[Decimal, Decimal] = {}
        # Bids are kept negated so both sides pop their best first. May hold prices no longer in
        # `levels` (and repeats): they are dropped when they reach the top or on a rebuild.
        self._heap: list[Decimal] = []
        self.best: Decimal | None = None

    def __len__(self) -> int:
        return len(self.levels)

    def clear(self) -> None:
        self.levels.clear()
        self._heap.clear()
        self.best = None

    def set(self, price: Decimal, quantity: Decimal) -> bool:
        """Set a level's absolute quantity (zero removes it). True when the best level changed
        (its price or its size)."""
        levels = self.levels
        best = self.best
        if quantity == ZERO:
            if levels.pop(price, None) is None:
                return False
            if price != best:
                return False
            self.best = self._pop_to_best()
            return True
        if price in levels:
            levels[price] = quantity
            return price == best
        levels[price] = quantity
        heap = self._heap
        heapq.heappush(heap, -price if self.is_bid else price)
        if len(heap) > 2 * len(levels) + 64:
            self._rebuild()
        if best is None or (price > best if self.is_bid else price < best):
            self.best = price
            return True
        return False

    @property
    def best_size(self) -> Decimal | None:
        return None if self.best is None else self.levels[self.best]

    def _pop_to_best(self) -> Decimal | None:
        heap, levels = self._heap, self.levels
        while heap:
            price = -heap[0] if self.is_bid else heap[0]
            if price in levels:
                return price
            heapq.heappop(heap)
        return None

    def _rebuild(self) -> None:
        self._heap = [-p for p in self.levels] if self.is_bid else list(self.levels)
        heapq.heapify(self._heap)


class OrderBook:
    """One product's book. `synced` is False until a snapshot arrives (and again while resyncing):
    updates to an unsynced book are ignored, since they would apply to an unknown state."""

    __slots__ = ("asks", "bids", "synced")

    def __init__(self) -> None:
        self.bids = BookSide(is_bid=True)
        self.asks = BookSide(is_bid=False)
        self.synced = False

    def reset(self) -> None:
        """Forget every level; the book waits for its next snapshot."""
        self.bids.clear()
        self.asks.clear()
        self.synced = False

    def side(self, name: str) -> BookSide:
        if name == "bid":
            return self.bids
        if name == "offer":
            return self.asks
        raise ValueError(f"unknown book side {name!r}")

    @property
    def top(self) -> tuple[Decimal, Decimal, Decimal, Decimal] | None:
        """(bid, bid size, ask, ask size), or None when a side is empty or the book is crossed."""
        bid, ask = self.bids.best, self.asks.best
        if bid is None or ask is None or bid >= ask:
            return None
        return bid, self.bids.levels[bid], ask, self.asks.levels[ask]
