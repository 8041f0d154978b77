"""FIX 4.4 application messages built with QuickFIX (field order and groups from its FIX44 classes).
Used by runfix (requests) and the LP simulator (responses); no Django here."""

from datetime import UTC, datetime
from decimal import Decimal

import quickfix as qf
import quickfix44 as fix44

from .wire import BUY, LIMIT, MARKET, SELL, STOP, STOP_LIMIT

__all__ = ["BUY", "LIMIT", "MARKET", "SELL", "STOP", "STOP_LIMIT"]


def utc_timestamp(at: datetime) -> str:
    """FIX 4.4 UTCTimestamp (YYYYMMDD-HH:MM:SS.sss: FIX 4.4 allows no finer) of an aware datetime."""
    return at.astimezone(UTC).strftime("%Y%m%d-%H:%M:%S.%f")[:-3]


def utc_now() -> str:
    return utc_timestamp(datetime.now(UTC))


def _message(msg_type: str) -> qf.Message:
    msg = qf.Message()
    header = msg.getHeader()
    header.setField(8, "FIX.4.4")
    header.setField(35, msg_type)
    return msg


_templates: dict[type, qf.Group] = {}


def _group(group_class: type) -> qf.Group:
    """An empty entry of a repeating group. quickfix44's classes build their field order with one
    SWIG call per field (84 for an MDEntry), which made the simulator's incremental refreshes
    CPU-bound; a copy of an entry built once takes one call."""
    template = _templates.get(group_class)
    if template is None:
        template = _templates[group_class] = group_class()
    return qf.Group(template)


def _set(msg: qf.Message | qf.Group, fields: dict[int, str | Decimal | None]) -> None:
    for tag, value in fields.items():
        if isinstance(value, Decimal):
            msg.setField(tag, format(value.normalize(), "f"))
        elif value is not None and value != "":
            msg.setField(tag, value)


# -- market data ------------------------------------------------------------------------------------
def md_request(req_id: str, symbol: str, *, subscribe: bool) -> qf.Message:
    """Top-of-book bid/offer, snapshot then incremental updates (or unsubscribe that request)."""
    msg = _message("V")
    _set(msg, {262: req_id, 263: "1" if subscribe else "2", 264: "1", 265: "1"})
    for entry_type in ("0", "1"):
        group = _group(fix44.MarketDataRequest.NoMDEntryTypes)
        group.setField(269, entry_type)
        msg.addGroup(group)
    group = _group(fix44.MarketDataRequest.NoRelatedSym)
    group.setField(55, symbol)
    msg.addGroup(group)
    return msg


def md_snapshot(req_id: str, symbol: str, entries: list[tuple[str, Decimal, Decimal | None]]) -> qf.Message:
    """Full refresh W; entries are (269 type, price, size)."""
    msg = _message("W")
    _set(msg, {262: req_id, 55: symbol})
    for entry_type, price, size in entries:
        group = _group(fix44.MarketDataSnapshotFullRefresh.NoMDEntries)
        _set(group, {269: entry_type, 270: price, 271: size})
        msg.addGroup(group)
    return msg


def md_incremental(
    req_id: str, entries: list[tuple[str, str, str, Decimal | None, Decimal | None]]
) -> qf.Message:
    """Incremental refresh X; entries are (279 action, 269 type, 55 symbol, price, size)."""
    msg = _message("X")
    _set(msg, {262: req_id})
    for action, entry_type, symbol, price, size in entries:
        group = _group(fix44.MarketDataIncrementalRefresh.NoMDEntries)
        _set(group, {279: action, 269: entry_type, 55: symbol, 270: price, 271: size})
        msg.addGroup(group)
    return msg


def md_reject(req_id: str, reason: str, text: str) -> qf.Message:
    msg = _message("Y")
    _set(msg, {262: req_id, 281: reason, 58: text})
    return msg


# -- orders -----------------------------------------------------------------------------------------
def new_order_single(
    *,
    cl_ord_id: str,
    symbol: str,
    side: str,
    qty: Decimal,
    ord_type: str,
    price: Decimal | None,
    time_in_force: str,
    account: str = "",
    stop_px: Decimal | None = None,
    expire_time: datetime | None = None,
) -> qf.Message:
    msg = _message("D")
    _set(
        msg,
        {
            11: cl_ord_id,
            1: account,
            21: "1",
            55: symbol,
            54: side,
            60: utc_now(),
            38: qty,
            40: ord_type,
            44: price if ord_type in (LIMIT, STOP_LIMIT) else None,
            99: stop_px if ord_type in (STOP, STOP_LIMIT) else None,
            59: time_in_force,
            126: None if expire_time is None else utc_timestamp(expire_time),
        },
    )
    return msg


def order_cancel_request(
    *, cl_ord_id: str, orig_cl_ord_id: str, order_id: str, symbol: str, side: str, qty: Decimal
) -> qf.Message:
    msg = _message("F")
    _set(msg, {41: orig_cl_ord_id, 37: order_id, 11: cl_ord_id, 55: symbol, 54: side, 60: utc_now(), 38: qty})
    return msg


def order_cancel_replace_request(
    *,
    cl_ord_id: str,
    orig_cl_ord_id: str,
    order_id: str,
    symbol: str,
    side: str,
    qty: Decimal,
    ord_type: str,
    price: Decimal | None,
    time_in_force: str,
    expire_time: datetime | None = None,
) -> qf.Message:
    msg = _message("G")
    _set(
        msg,
        {
            37: order_id,
            41: orig_cl_ord_id,
            11: cl_ord_id,
            21: "1",
            55: symbol,
            54: side,
            60: utc_now(),
            38: qty,
            40: ord_type,
            44: price if ord_type == LIMIT else None,
            59: time_in_force,
            126: None if expire_time is None else utc_timestamp(expire_time),
        },
    )
    return msg


def order_status_request(*, cl_ord_id: str, order_id: str, symbol: str, side: str) -> qf.Message:
    msg = _message("H")
    _set(msg, {37: order_id, 11: cl_ord_id, 55: symbol, 54: side})
    return msg


def execution_report(
    *,
    order_id: str,
    exec_id: str,
    exec_type: str,
    ord_status: str,
    cl_ord_id: str,
    symbol: str,
    side: str,
    qty: Decimal,
    ord_type: str,
    price: Decimal | None,
    leaves_qty: Decimal,
    cum_qty: Decimal,
    avg_px: Decimal,
    last_qty: Decimal | None = None,
    last_px: Decimal | None = None,
    orig_cl_ord_id: str = "",
    rej_reason: str = "",
    text: str = "",
) -> qf.Message:
    msg = _message("8")
    _set(
        msg,
        {
            37: order_id,
            11: cl_ord_id,
            41: orig_cl_ord_id,
            17: exec_id,
            150: exec_type,
            39: ord_status,
            103: rej_reason,
            55: symbol,
            54: side,
            38: qty,
            40: ord_type,
            44: price,
            32: last_qty,
            31: last_px,
            151: leaves_qty,
            14: cum_qty,
            6: avg_px,
            60: utc_now(),
            58: text,
        },
    )
    return msg


def order_cancel_reject(
    *,
    order_id: str,
    cl_ord_id: str,
    orig_cl_ord_id: str,
    ord_status: str,
    response_to: str,
    reason: str,
    text: str,
) -> qf.Message:
    msg = _message("9")
    _set(
        msg,
        {
            37: order_id,
            11: cl_ord_id,
            41: orig_cl_ord_id,
            39: ord_status,
            434: response_to,
            102: reason,
            58: text,
        },
    )
    return msg


# -- positions --------------------------------------------------------------------------------------
def request_for_positions(*, req_id: str, account: str) -> qf.Message:
    msg = _message("AN")
    _set(
        msg,
        {
            710: req_id,
            724: "0",
            1: account or "house",
            581: "3",
            715: datetime.now(UTC).strftime("%Y%m%d"),
            60: utc_now(),
        },
    )
    return msg


def position_ack(*, report_id: str, req_id: str, account: str, count: int) -> qf.Message:
    msg = _message("AO")
    _set(
        msg,
        {
            721: report_id,
            710: req_id,
            727: str(count),
            728: "0" if count else "2",
            729: "0",
            1: account,
            581: "3",
        },
    )
    return msg


def position_report(
    *,
    report_id: str,
    req_id: str,
    account: str,
    symbol: str,
    net_qty: Decimal,
    settle_px: Decimal,
    count: int,
) -> qf.Message:
    msg = _message("AP")
    _set(
        msg,
        {
            721: report_id,
            710: req_id,
            724: "0",
            727: str(count),
            728: "0",
            715: datetime.now(UTC).strftime("%Y%m%d"),
            1: account,
            581: "3",
            55: symbol,
            730: settle_px,
            731: "2",
            734: settle_px,
        },
    )
    group = _group(fix44.PositionReport.NoPositions)
    _set(group, {703: "FIN", 704: max(net_qty, Decimal(0)), 705: max(-net_qty, Decimal(0))})
    msg.addGroup(group)
    return msg
