"""Venue catalogues -> instrument specifications, and the plan of an import. No Django (the venue
REST clients are Django-free too): services.instruments_import loads the rows, asks `plan_import`
what to change and writes it.

Sources (shared/PROTOCOLS.md): Coinbase `GET /api/v3/brokerage/market/products` (public), Binance
`GET /api/v3/exchangeInfo` (public), OANDA `GET /v3/accounts/{accountID}/instruments` (token).

How venue specs become ours (docs/catalogue.md says the same for operators):
- symbol = BASE + QUOTE (`BTC-USD` -> `BTCUSD`, `BTCUSDT` -> `BTCUSDT`, `EUR_USD` -> `EURUSD`), as
  the desk's instruments are named; the venue's own name is kept on the VenueSymbol.
- tick size = Coinbase `price_increment` (else `quote_increment`), Binance PRICE_FILTER `tickSize`,
  OANDA 10^-displayPrecision; digits = the decimals of that tick (0.5 -> 1, 0.01 -> 2, 5 -> 0), so a
  tick that is not a power of ten (0.5, 0.25) is kept exactly in `tick_size`.
- venue sizes are in base units; ours are lots of `contract_size` base units, so volume = size /
  contract size. A new instrument gets a contract size of 1 (a unit), except OANDA currencies:
  100000, the standard lot of the desk's FX. An existing instrument keeps its contract size: open
  positions are counted in its lots.
- OANDA's `marginRate` is a fraction of the notional (0.0333 = 30:1); Instrument.margin_rate is a
  multiplier on the client group's leverage, so the two cannot be converted without a group: it is
  shown in the preview and never written.
- description, pip size (except OANDA's pipLocation) and `tradable` are the desk's once the
  instrument exists; a product the venue does not trade now (delisted, halted) is not created.
"""

import fnmatch
import hashlib
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from marketdata.adapters.base import VenueConfig
from marketdata.adapters.binance import REST_URL as BINANCE_REST_URL
from marketdata.adapters.binance import BinanceRest
from marketdata.adapters.coinbase import REST_URL as COINBASE_REST_URL
from marketdata.adapters.coinbase import CoinbaseRest
from marketdata.adapters.oanda import REST_URL as OANDA_REST_URL
from marketdata.adapters.oanda import OandaRest, oanda_account, oanda_token

CATALOGUE_KINDS = frozenset({"coinbase", "binance", "oanda"})
SYMBOL_RE = re.compile(r"[A-Z0-9]{2,20}")
CURRENCY_RE = re.compile(r"[A-Z0-9]{1,10}")
FX_LOT = Decimal(100000)
# The Instrument columns: volumes have 8 decimals and 12 integer digits, prices 10 and 10.
VOLUME_QUANTUM, VOLUME_LIMIT = Decimal("1e-8"), Decimal("1e12")
PRICE_QUANTUM, PRICE_LIMIT = Decimal("1e-10"), Decimal("1e10")

# The Instrument fields an import writes on an existing instrument, in preview order.
UPDATED_FIELDS = ("digits", "tick_size", "pip_size", "volume_min", "volume_max", "volume_step")


class CatalogueUnavailable(Exception):
    """The venue has no catalogue we can read (its kind, or missing credentials/account)."""


class MalformedEntry(ValueError):
    pass


@dataclass(frozen=True)
class CatalogueEntry:
    """One venue product as our specification. Sizes are in base units, as the venue gives them."""

    venue_symbol: str
    symbol: str
    base: str
    quote: str
    description: str
    tick_size: Decimal
    pip_size: Decimal | None  # None: the venue has no pip (crypto)
    size_min: Decimal
    size_max: Decimal
    size_step: Decimal
    trading: bool
    status: str
    lot_units: Decimal  # the contract size of an instrument created from this entry
    venue_margin_rate: Decimal | None = None  # OANDA's, shown only

    @property
    def digits(self) -> int:
        return digits_of(self.tick_size)


@dataclass(frozen=True)
class Catalogue:
    entries: list[CatalogueEntry]
    errors: list[tuple[str, str]]  # (venue name or position, what is wrong)


def digits_of(tick: Decimal) -> int:
    """The decimals a price needs on this tick: 0.00001 -> 5, 0.5 -> 1, 0.25 -> 2, 5 or 10 -> 0."""
    exponent = tick.normalize().as_tuple().exponent
    assert isinstance(exponent, int)
    return max(0, -exponent)


def _decimal(entry: Mapping[str, Any], name: str, *, positive: bool = True) -> Decimal:
    raw = entry.get(name)
    if not isinstance(raw, str | int) or isinstance(raw, bool):
        raise MalformedEntry(f"{name} is missing or not a decimal string: {raw!r}")
    try:
        value = Decimal(str(raw))
    except InvalidOperation as exc:
        raise MalformedEntry(f"{name} is not a number: {raw!r}") from exc
    if not value.is_finite() or value < 0 or (positive and value == 0):
        raise MalformedEntry(f"{name} must be {'positive' if positive else 'at least 0'}: {raw!r}")
    return value


def _int(entry: Mapping[str, Any], name: str) -> int:
    raw = entry.get(name)
    if not isinstance(raw, int) or isinstance(raw, bool):
        raise MalformedEntry(f"{name} is missing or not an integer: {raw!r}")
    return raw


def _currency(raw: object, name: str) -> str:
    if not isinstance(raw, str) or not CURRENCY_RE.fullmatch(raw.upper()):
        raise MalformedEntry(f"{name} is not a currency code: {raw!r}")
    return raw.upper()


def _entry(
    venue_symbol: str,
    base: str,
    quote: str,
    *,
    description: str,
    tick_size: Decimal,
    size_min: Decimal,
    size_max: Decimal,
    size_step: Decimal,
    trading: bool,
    status: str,
    lot_units: Decimal = Decimal(1),
    pip_size: Decimal | None = None,
    venue_margin_rate: Decimal | None = None,
) -> CatalogueEntry:
    symbol = base + quote
    if not SYMBOL_RE.fullmatch(symbol):
        raise MalformedEntry(f"symbol {symbol!r} is not 2-20 letters and digits")
    if size_max < size_min:
        raise MalformedEntry(f"maximum size {size_max} is below the minimum {size_min}")
    return CatalogueEntry(
        venue_symbol=venue_symbol,
        symbol=symbol,
        base=base,
        quote=quote,
        description=description[:100],
        tick_size=tick_size,
        pip_size=pip_size,
        size_min=size_min,
        size_max=size_max,
        size_step=size_step,
        trading=trading,
        status=status,
        lot_units=lot_units,
        venue_margin_rate=venue_margin_rate,
    )


def coinbase_entry(product: Mapping[str, Any]) -> CatalogueEntry | None:
    """A product of Coinbase's `market/products` (every number a string); None for a product that
    is not SPOT (futures are not instruments of this kind)."""
    if product.get("product_type", "SPOT") != "SPOT":
        return None
    base = _currency(product.get("base_currency_id"), "base_currency_id")
    quote = _currency(product.get("quote_currency_id"), "quote_currency_id")
    tick_name = "price_increment" if product.get("price_increment") else "quote_increment"
    status = str(product.get("status") or "")
    trading = status.lower() == "online" and not any(
        product.get(flag) for flag in ("trading_disabled", "is_disabled", "cancel_only")
    )
    base_name, quote_name = product.get("base_name"), product.get("quote_name")
    return _entry(
        str(product["product_id"]),
        base,
        quote,
        description=f"{base_name} vs {quote_name}" if base_name and quote_name else f"{base} vs {quote}",
        tick_size=_decimal(product, tick_name),
        size_min=_decimal(product, "base_min_size"),
        size_max=_decimal(product, "base_max_size"),
        size_step=_decimal(product, "base_increment"),
        trading=trading,
        status=status,
    )


def _filter(symbol: Mapping[str, Any], kind: str) -> Mapping[str, Any]:
    filters = symbol.get("filters")
    if not isinstance(filters, list):
        raise MalformedEntry("filters is missing")
    for item in filters:
        if isinstance(item, Mapping) and item.get("filterType") == kind:
            return item
    raise MalformedEntry(f"no {kind} filter")


def binance_entry(symbol: Mapping[str, Any]) -> CatalogueEntry:
    """A symbol of Binance's exchangeInfo: PRICE_FILTER gives the tick, LOT_SIZE the sizes. A
    minQty of 0 (no minimum) becomes one step: nothing smaller can be traded."""
    base = _currency(symbol.get("baseAsset"), "baseAsset")
    quote = _currency(symbol.get("quoteAsset"), "quoteAsset")
    price_filter, lot_size = _filter(symbol, "PRICE_FILTER"), _filter(symbol, "LOT_SIZE")
    step = _decimal(lot_size, "stepSize")
    status = str(symbol.get("status") or "")
    return _entry(
        str(symbol["symbol"]),
        base,
        quote,
        description=f"{base} vs {quote}",
        tick_size=_decimal(price_filter, "tickSize"),
        size_min=_decimal(lot_size, "minQty", positive=False) or step,
        size_max=_decimal(lot_size, "maxQty"),
        size_step=step,
        trading=status == "TRADING",
        status=status,
    )


def oanda_entry(instrument: Mapping[str, Any]) -> CatalogueEntry:
    """An instrument of OANDA's account instruments: prices have displayPrecision decimals, the pip
    is 10^pipLocation, units have tradeUnitsPrecision decimals. Every listed instrument is
    tradeable for the account."""
    name = str(instrument["name"])
    parts = name.split("_")
    if len(parts) != 2:
        raise MalformedEntry(f"name {name!r} is not BASE_QUOTE")
    base, quote = _currency(parts[0], "name"), _currency(parts[1], "name")
    precision, pip_location = _int(instrument, "displayPrecision"), _int(instrument, "pipLocation")
    units_precision = _int(instrument, "tradeUnitsPrecision")
    if not 0 <= precision <= 10 or not -10 <= pip_location <= 10 or not 0 <= units_precision <= 8:
        raise MalformedEntry("displayPrecision, pipLocation or tradeUnitsPrecision out of range")
    kind = str(instrument.get("type") or "")
    margin = instrument.get("marginRate")
    return _entry(
        name,
        base,
        quote,
        description=str(instrument.get("displayName") or f"{base}/{quote}"),
        tick_size=Decimal(1).scaleb(-precision),
        pip_size=Decimal(1).scaleb(pip_location),
        size_min=_decimal(instrument, "minimumTradeSize"),
        size_max=_decimal(instrument, "maximumOrderUnits"),
        size_step=Decimal(1).scaleb(-units_precision),
        trading=True,
        status=kind,
        lot_units=FX_LOT if kind == "CURRENCY" else Decimal(1),
        venue_margin_rate=_decimal(instrument, "marginRate") if margin is not None else None,
    )


PARSERS: dict[str, tuple[str, str, Callable[[Mapping[str, Any]], CatalogueEntry | None]]] = {
    "coinbase": ("products", "product_id", coinbase_entry),
    "binance": ("symbols", "symbol", binance_entry),
    "oanda": ("instruments", "name", oanda_entry),
}


def patterns_of(match: str) -> list[str]:
    """`BTC-*,ETH-USD` -> the comma- or space-separated shell patterns, upper case."""
    return [p.upper() for p in re.split(r"[\s,]+", match.strip()) if p]


def _matches(patterns: Sequence[str], *names: str) -> bool:
    return not patterns or any(fnmatch.fnmatchcase(n.upper(), p) for n in names for p in patterns)


def parse_catalogue(kind: str, payload: object, *, match: str = "") -> Catalogue:
    """The entries of a venue's catalogue response whose venue name or symbol matches `match`, and
    what is wrong with the matching entries that do not parse (never silently dropped)."""
    key, name_field, parse = PARSERS[kind]
    items = payload.get(key) if isinstance(payload, Mapping) else None
    if not isinstance(items, list):
        raise MalformedEntry(f"the response has no {key!r} list")
    patterns = patterns_of(match)
    entries, errors = [], []
    for position, item in enumerate(items):
        name = item.get(name_field) if isinstance(item, Mapping) else None
        if not isinstance(name, str) or not name:
            errors.append((f"#{position}", f"{name_field} is missing"))
            continue
        try:
            entry = parse(item)
        except (MalformedEntry, KeyError, TypeError) as exc:
            if _matches(patterns, name, re.sub(r"[^A-Za-z0-9]", "", name)):
                errors.append((name, str(exc)))
            continue
        if entry is not None and _matches(patterns, entry.venue_symbol, entry.symbol):
            entries.append(entry)
    return Catalogue(entries, errors)


# -- the plan of an import -----------------------------------------------------------------


@dataclass(frozen=True)
class InstrumentRow:
    symbol: str
    description: str
    base_currency: str
    quote_currency: str
    contract_size: Decimal
    digits: int
    tick_size: Decimal
    pip_size: Decimal
    volume_min: Decimal
    volume_max: Decimal
    volume_step: Decimal
    tradable: bool


@dataclass(frozen=True)
class MappingRow:
    venue_symbol: str
    instrument: str
    enabled: bool


@dataclass
class PlanItem:
    """What an import does with one catalogue entry. `action`: create, update, unchanged or
    skipped. `values` are the instrument's fields after the import; `changes` field -> (old, new)."""

    entry: CatalogueEntry
    symbol: str
    action: str
    values: dict[str, Any] = field(default_factory=dict)
    changes: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    mapping: str = ""  # "", "create" (new mapping, off the watchlist) or "rename" (from `old_name`)
    old_name: str = ""
    reason: str = ""


@dataclass
class ImportPlan:
    venue: str
    match: str
    items: list[PlanItem]
    errors: list[tuple[str, str]]

    def of(self, action: str) -> list[PlanItem]:
        return [i for i in self.items if i.action == action]

    @property
    def counts(self) -> dict[str, int]:
        return {a: len(self.of(a)) for a in ("create", "update", "unchanged", "skipped")}

    @property
    def fingerprint(self) -> str:
        """Identifies what applying the plan would write: a confirmation carries it, so what is
        written is what the operator saw."""
        wire = [
            (
                i.action,
                i.entry.venue_symbol,
                i.symbol,
                i.mapping,
                sorted((k, str(v)) for k, v in i.values.items()),
            )
            for i in self.items
        ]
        return hashlib.sha256(json.dumps([wire, self.errors]).encode()).hexdigest()[:32]


def _fits(value: Decimal, quantum: Decimal, limit: Decimal) -> bool:
    return value < limit and value == value.quantize(quantum)


def _values(entry: CatalogueEntry, row: InstrumentRow | None) -> dict[str, Any]:
    contract = row.contract_size if row is not None else entry.lot_units
    values: dict[str, Any] = {
        "digits": entry.digits,
        "tick_size": entry.tick_size,
        "pip_size": entry.pip_size or (row.pip_size if row is not None else entry.tick_size),
        "volume_min": entry.size_min / contract,
        "volume_max": entry.size_max / contract,
        "volume_step": entry.size_step / contract,
    }
    for name in ("tick_size", "pip_size"):
        if not _fits(values[name], PRICE_QUANTUM, PRICE_LIMIT):
            raise MalformedEntry(f"{name} {values[name]} does not fit 10 decimals")
    for name in ("volume_min", "volume_max", "volume_step"):
        values[name] = values[name].normalize()
        if not _fits(values[name], VOLUME_QUANTUM, VOLUME_LIMIT):
            raise MalformedEntry(f"{name} {values[name]} (lots of {contract}) does not fit 8 decimals")
    if row is None:
        values.update(
            description=entry.description,
            base_currency=entry.base,
            quote_currency=entry.quote,
            contract_size=contract,
            tradable=entry.trading,
        )
    return values


def plan_import(
    venue: str,
    catalogue: Catalogue,
    *,
    match: str,
    instruments: Mapping[str, InstrumentRow],
    mappings: Iterable[MappingRow],
) -> ImportPlan:
    """Decide, entry by entry, what an import creates, updates, leaves alone or skips.

    An entry whose name this venue already maps keeps that mapping's instrument (the desk may name
    it differently); otherwise it goes to the instrument of its symbol. An instrument whose currencies
    differ from the entry's (BTCUSDT mapped to BTCUSD as a price proxy) is skipped: a venue's specs
    for another currency are not the instrument's."""
    by_name = {m.venue_symbol: m for m in mappings}
    by_instrument = {m.instrument: m for m in by_name.values()}
    errors = list(catalogue.errors)
    items: list[PlanItem] = []
    targets: dict[str, str] = {}
    for entry in catalogue.entries:
        mapped = by_name.get(entry.venue_symbol)
        symbol = mapped.instrument if mapped is not None else entry.symbol
        if symbol in targets:
            errors.append((entry.venue_symbol, f"{symbol} is also the instrument of {targets[symbol]}"))
            continue
        targets[symbol] = entry.venue_symbol
        row = instruments.get(symbol)
        if row is not None and (row.base_currency, row.quote_currency) != (entry.base, entry.quote):
            reason = (
                f"mapped to {symbol} ({row.base_currency}/{row.quote_currency}), "
                f"the venue quotes {entry.base}/{entry.quote}: specs not imported"
            )
            items.append(PlanItem(entry, symbol, "skipped", reason=reason))
            continue
        if row is None and not entry.trading:
            # Catalogues keep delisted and halted products (Binance lists hundreds in BREAK): a new
            # instrument is made only for a product the venue trades; an existing one is updated.
            reason = f"not trading at the venue ({entry.status or 'disabled'}): not created"
            items.append(PlanItem(entry, symbol, "skipped", reason=reason))
            continue
        try:
            values = _values(entry, row)
        except MalformedEntry as exc:
            errors.append((entry.venue_symbol, str(exc)))
            continue
        item = PlanItem(entry, symbol, "create" if row is None else "update", values=values)
        if mapped is None:
            other = by_instrument.get(symbol)
            item.mapping, item.old_name = ("rename", other.venue_symbol) if other else ("create", "")
        if row is not None:
            for name in UPDATED_FIELDS:
                old = getattr(row, name)
                if old != values[name]:
                    item.changes[name] = (old, values[name])
            if not item.changes and not item.mapping:
                item.action = "unchanged"
        items.append(item)
    return ImportPlan(venue=venue, match=match, items=items, errors=errors)


# -- fetching ------------------------------------------------------------------------------


def catalogue_payload(venue: VenueConfig) -> object:
    """The venue's catalogue response as JSON. Raises CatalogueUnavailable, VenueHttpError."""
    base_url = venue.config.get("rest_url")
    if venue.kind == "coinbase":
        # The public catalogue needs no key: a venue without credentials can import too.
        with CoinbaseRest(signer=None, base_url=str(base_url or COINBASE_REST_URL), venue=venue.code) as cb:
            return cb.public_products()
    if venue.kind == "binance":
        with BinanceRest(base_url=str(base_url or BINANCE_REST_URL), venue=venue.code) as binance:
            return binance.exchange_info()
    if venue.kind == "oanda":
        url = str(base_url or OANDA_REST_URL)
        token, account = oanda_token(venue.credentials, url=url), oanda_account(venue.config, url=url)
        if not token or not account:
            raise CatalogueUnavailable(
                f"venue {venue.code} needs an OANDA token (credentials) and account_id (config) "
                "to read its instruments"
            )
        with OandaRest(token=token, base_url=url, venue=venue.code) as oanda:
            return oanda.instruments(account)
    raise CatalogueUnavailable(
        f"venue {venue.code} is a {venue.kind} venue: only {', '.join(sorted(CATALOGUE_KINDS))} "
        "venues have a catalogue"
    )
