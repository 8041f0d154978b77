"""In-memory trigger index: which pending orders, stop losses and take profits a quote crosses.

Pure Python, no Django: the market loop calls `fire` on every quote, so it must be fast. Per symbol
there are four sorted arrays of raw-price thresholds, one per (bid or ask, fires at-or-below or
at-or-above); a quote is checked with one bisect per array, whatever the number of triggers.

Thresholds are kept in raw (pre-markup) prices: a client ask of raw ask + m crosses level L exactly
when the raw ask crosses L - m, so the group's markup is folded in once, when a trigger is added.
"""

from bisect import bisect_left, bisect_right
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

from . import pricing

TriggerKind = Literal["order", "sl", "tp"]
TriggerKey = tuple[TriggerKind, int]  # ("order", order id) or ("sl" | "tp", position id)


@dataclass(frozen=True, slots=True)
class Trigger:
    kind: TriggerKind
    object_id: int
    account_id: int
    symbol: str
    group_id: int  # with instrument_id: the kill switch's scopes the trigger falls in
    instrument_id: int
    book: str  # "bid" or "ask": which raw price it watches
    below: bool  # fires when that price is at or below the threshold (else at or above)
    threshold: Decimal  # in raw prices

    @property
    def key(self) -> TriggerKey:
        return (self.kind, self.object_id)

    @classmethod
    def make(
        cls,
        *,
        kind: TriggerKind,
        object_id: int,
        account_id: int,
        symbol: str,
        group_id: int,
        instrument_id: int,
        side: str,
        rule: str,
        level: Decimal,
        markup: Decimal,
    ) -> "Trigger":
        """A trigger of `rule` ("limit", "stop", "sl", "tp") at the client price `level` for `side`."""
        book, below = pricing.trigger_rule(side, rule)
        threshold = level - markup if book == "ask" else level + markup
        return cls(kind, object_id, account_id, symbol, group_id, instrument_id, book, below, threshold)


class _Ladder:
    """Thresholds in ascending order with their keys alongside."""

    __slots__ = ("keys", "prices")

    def __init__(self) -> None:
        self.prices: list[Decimal] = []
        self.keys: list[TriggerKey] = []

    def add(self, price: Decimal, key: TriggerKey) -> None:
        i = bisect_right(self.prices, price)
        self.prices.insert(i, price)
        self.keys.insert(i, key)

    def remove(self, price: Decimal, key: TriggerKey) -> None:
        i = bisect_left(self.prices, price)
        while i < len(self.prices) and self.prices[i] == price:
            if self.keys[i] == key:
                del self.prices[i], self.keys[i]
                return
            i += 1

    def take_at_or_below(self, price: Decimal) -> list[TriggerKey]:
        """Keys of thresholds <= price (fired by a price rising to them), removed."""
        i = bisect_right(self.prices, price)
        if not i:
            return []
        fired = self.keys[:i]
        del self.prices[:i], self.keys[:i]
        return fired

    def take_at_or_above(self, price: Decimal) -> list[TriggerKey]:
        """Keys of thresholds >= price (fired by a price falling to them), removed."""
        i = bisect_left(self.prices, price)
        if i == len(self.prices):
            return []
        fired = self.keys[i:]
        del self.prices[i:], self.keys[i:]
        return fired


class TriggerIndex:
    """Not thread-safe: the watcher serialises access."""

    def __init__(self) -> None:
        self._ladders: dict[tuple[str, str, bool], _Ladder] = {}
        self._triggers: dict[TriggerKey, Trigger] = {}
        self._by_account: dict[int, set[TriggerKey]] = {}

    def __len__(self) -> int:
        return len(self._triggers)

    def __contains__(self, key: TriggerKey) -> bool:
        return key in self._triggers

    def add(self, trigger: Trigger) -> None:
        self.remove(trigger.key)
        ladder = self._ladders.get((trigger.symbol, trigger.book, trigger.below))
        if ladder is None:
            ladder = self._ladders[(trigger.symbol, trigger.book, trigger.below)] = _Ladder()
        ladder.add(trigger.threshold, trigger.key)
        self._triggers[trigger.key] = trigger
        self._by_account.setdefault(trigger.account_id, set()).add(trigger.key)

    def remove(self, key: TriggerKey) -> None:
        trigger = self._triggers.pop(key, None)
        if trigger is None:
            return
        self._ladders[(trigger.symbol, trigger.book, trigger.below)].remove(trigger.threshold, key)
        self._forget(trigger)

    def _forget(self, trigger: Trigger) -> None:
        keys = self._by_account.get(trigger.account_id)
        if keys is not None:
            keys.discard(trigger.key)
            if not keys:
                del self._by_account[trigger.account_id]

    def replace_account(self, account_id: int, triggers: list[Trigger]) -> None:
        for key in list(self._by_account.get(account_id, ())):
            self.remove(key)
        for trigger in triggers:
            self.add(trigger)

    def replace_all(self, triggers: list[Trigger]) -> None:
        self._ladders.clear()
        self._triggers.clear()
        self._by_account.clear()
        for trigger in triggers:
            self.add(trigger)

    def fire(self, symbol: str, bid: Decimal, ask: Decimal) -> list[Trigger]:
        """The triggers this raw quote crosses, removed from the index (each fires once here; the
        database decides whether it still executes)."""
        keys: list[TriggerKey] = []
        for book, price in (("bid", bid), ("ask", ask)):
            rising = self._ladders.get((symbol, book, False))
            if rising is not None and rising.prices:
                keys.extend(rising.take_at_or_below(price))
            falling = self._ladders.get((symbol, book, True))
            if falling is not None and falling.prices:
                keys.extend(falling.take_at_or_above(price))
        fired = []
        for key in keys:
            trigger = self._triggers.pop(key)
            self._forget(trigger)
            fired.append(trigger)
        return fired
