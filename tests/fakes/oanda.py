"""OANDA v20 fake (shared/PROTOCOLS.md section 3) on a real HTTP server: the chunked pricing stream
(one JSON object per line, HEARTBEAT every `heartbeat_interval_s`), instrument candles with
`count` <= 5000 paging, `includeFirst`, incomplete current bar, and no bars on Saturdays (FX is
closed at weekends, so a page of N candles spans more than N buckets), and the account's
instruments (`instruments` CSV filter)."""

import json
import queue
import re
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

from .http import DROP, HttpFake, Request, Response, Stream

GRANULARITY_S = {"S5": 5, "M1": 60, "M5": 300, "M15": 900, "M30": 1800, "H1": 3600, "H4": 14400, "D": 86400}
MAX_COUNT = 5000


def rfc3339(ts: float) -> str:
    whole = int(ts)
    return f"{datetime.fromtimestamp(whole, UTC):%Y-%m-%dT%H:%M:%S}.{round((ts - whole) * 1e9):09d}Z"


def parse_rfc3339(value: str) -> float:
    head, _, fraction = value.rstrip("Z").partition(".")
    base = datetime.strptime(head, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC).timestamp()
    return base + (float(f"0.{fraction}") if fraction else 0.0)


def fake_mid(start: int, step: int) -> dict[str, str]:
    base = 1.1 + ((start // step) % 89) / 10_000
    return {
        "o": f"{base:.5f}",
        "h": f"{base + 0.0003:.5f}",
        "l": f"{base - 0.0002:.5f}",
        "c": f"{base + 0.0001:.5f}",
    }


def fake_volume(start: int, step: int) -> int:
    return 10 + (start // step) % 50


def oanda_instrument(
    name: str,
    *,
    kind: str = "CURRENCY",
    display_name: str | None = None,
    pip_location: int = -4,
    display_precision: int = 5,
    trade_units_precision: int = 0,
    minimum_trade_size: str = "1",
    maximum_order_units: str = "100000000",
    margin_rate: str = "0.0333",
) -> dict[str, Any]:
    """An Instrument of GET /v3/accounts/{accountID}/instruments (developer.oanda.com
    primitives-df "Instrument"; v20-openapi): integers as numbers, decimals as strings."""
    return {
        "name": name,
        "type": kind,
        "displayName": display_name or name.replace("_", "/"),
        "pipLocation": pip_location,
        "displayPrecision": display_precision,
        "tradeUnitsPrecision": trade_units_precision,
        "minimumTradeSize": minimum_trade_size,
        "maximumTrailingStopDistance": "1.00000",
        "minimumTrailingStopDistance": "0.00050",
        "maximumPositionSize": "0",
        "maximumOrderUnits": maximum_order_units,
        "marginRate": margin_rate,
        "guaranteedStopLossOrderMode": "DISABLED",
        "tags": [{"type": "ASSET_CLASS", "name": kind}],
        "financing": {
            "longRate": "-0.0275",
            "shortRate": "0.0063",
            "financingDaysOfWeek": [
                {"dayOfWeek": day, "daysCharged": 3 if day == "WEDNESDAY" else 1}
                for day in ("MONDAY", "TUESDAY", "WEDNESDAY", "THURSDAY", "FRIDAY")
            ],
        },
    }


def trading(start: int) -> bool:
    return datetime.fromtimestamp(start, UTC).weekday() != 5


class OandaFake(HttpFake):
    def __init__(
        self,
        token: str,
        *,
        account_id: str = "101-004-12345678-001",
        heartbeat_interval_s: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__()
        self.token = token
        self.account_id = account_id
        self.heartbeat_interval_s = heartbeat_interval_s
        self.clock = clock
        self.silent = False
        self.stream_connects = 0
        self.instruments: list[dict[str, Any]] = []
        self._streams: list[tuple[queue.Queue[Any], set[str]]] = []
        self._lock = threading.Lock()

    def handle(self, request: Request) -> Response | Stream:
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return Response(401, {"errorMessage": "Insufficient authorization to perform request."})
        if match := re.fullmatch(r"/v3/accounts/([^/]+)/pricing/stream", request.path):
            if match.group(1) != self.account_id:
                return Response(400, {"errorMessage": "Invalid value specified for 'accountID'"})
            instruments = {i for i in (request.arg("instruments") or "").split(",") if i}
            if not instruments:
                return Response(400, {"errorMessage": "Invalid value specified for 'instruments'"})
            return Stream(self._lines(instruments))
        if match := re.fullmatch(r"/v3/accounts/([^/]+)/instruments", request.path):
            if match.group(1) != self.account_id:
                return Response(400, {"errorMessage": "Invalid value specified for 'accountID'"})
            wanted = {i for i in (request.arg("instruments") or "").split(",") if i}
            listed = [i for i in self.instruments if not wanted or i["name"] in wanted]
            return Response(200, {"instruments": listed, "lastTransactionID": "6356"})
        if match := re.fullmatch(r"/v3/instruments/([A-Z0-9_]+)/candles", request.path):
            return self._candles(request, match.group(1))
        return Response(404, {"errorMessage": "The requested resource was not found"})

    # -- pricing stream -----------------------------------------------------------------------
    def _lines(self, instruments: set[str]) -> Iterator[Any]:
        inbox: queue.Queue[Any] = queue.Queue()
        with self._lock:
            self._streams.append((inbox, instruments))
            self.stream_connects += 1
        try:
            while not self.stopping.is_set():
                try:
                    item = inbox.get(timeout=self.heartbeat_interval_s)
                except queue.Empty:
                    if not self.silent:
                        yield self._line({"type": "HEARTBEAT", "time": rfc3339(self.clock())})
                    continue
                yield item
                if item is DROP:
                    return
        finally:
            with self._lock:
                self._streams.remove((inbox, instruments))

    @staticmethod
    def _line(obj: dict[str, Any]) -> bytes:
        return json.dumps(obj).encode() + b"\n"

    @property
    def open_streams(self) -> int:
        with self._lock:
            return len(self._streams)

    def price(
        self,
        instrument: str,
        bids: list[tuple[str, int]],
        asks: list[tuple[str, int]],
        *,
        tradeable: bool = True,
        at: str | None = None,
    ) -> None:
        line = self._line(
            {
                "type": "PRICE",
                "instrument": instrument,
                "time": at or rfc3339(self.clock()),
                "status": "tradeable" if tradeable else "non-tradeable",
                "tradeable": tradeable,
                "bids": [{"price": p, "liquidity": q} for p, q in bids],
                "asks": [{"price": p, "liquidity": q} for p, q in asks],
                "closeoutBid": bids[-1][0] if bids else "0",
                "closeoutAsk": asks[-1][0] if asks else "0",
            }
        )
        self._push(line, instrument)

    def send_raw(self, line: bytes) -> None:
        self._push(line, None)

    def drop(self) -> None:
        self._push(DROP, None)

    def _push(self, item: Any, instrument: str | None) -> None:
        with self._lock:
            for inbox, instruments in self._streams:
                if (not self.silent and (instrument is None or instrument in instruments)) or item is DROP:
                    inbox.put(item)

    # -- candles ----------------------------------------------------------------------------
    def _candles(self, request: Request, instrument: str) -> Response:
        granularity = request.arg("granularity", "S5") or "S5"
        if granularity not in GRANULARITY_S:
            return Response(
                400, {"errorMessage": f"Invalid value specified for 'granularity': {granularity}"}
            )
        step = GRANULARITY_S[granularity]
        count = int(request.arg("count") or 500)
        if count > MAX_COUNT:
            return Response(400, {"errorMessage": "Maximum value for 'count' exceeded"})
        if request.arg("from") and request.arg("to") and request.arg("count"):
            return Response(400, {"errorMessage": "'count' cannot be specified with both 'from' and 'to'"})
        if request.arg("from") is None:
            return Response(400, {"errorMessage": "this fake needs 'from'"})
        since = parse_rfc3339(request.arg("from") or "")
        bucket = int(since // step) * step
        if request.arg("includeFirst", "true") == "false":
            bucket += step
        now = self.clock()
        candles: list[dict[str, Any]] = []
        while len(candles) < count and bucket <= now:
            if trading(bucket):
                candles.append(
                    {
                        "complete": bucket + step <= now,
                        "volume": fake_volume(bucket, step),
                        "time": rfc3339(bucket),
                        "mid": fake_mid(bucket, step),
                    }
                )
            bucket += step
        return Response(200, {"instrument": instrument, "granularity": granularity, "candles": candles})
