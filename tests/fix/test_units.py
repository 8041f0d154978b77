"""Pure pieces: tag=value parsing, redaction, the top-of-book, QuickFIX settings built in memory."""

from datetime import time
from pathlib import Path
from typing import cast

from fix.book import Book
from fix.config import SessionConfig, data_dictionary_path, settings_text
from fix.engine import LOGON_BACKOFF_CAP_S, FixEngine, SessionHandler
from fix.wire import SOH, field_map, fields, redact, split_groups, utc_date_time_ns, utc_timestamp_ns


def raw(*pairs: str) -> str:
    return SOH.join(pairs) + SOH


def test_redact_hides_passwords_and_shows_soh_as_pipes():
    logon = raw("8=FIX.4.4", "35=A", "553=user", "554=s3cret", "925=n3w", "96=blob", "10=000")
    assert redact(logon) == "8=FIX.4.4|35=A|553=user|554=***|925=***|96=***|10=000|"


def test_redact_does_not_touch_tags_that_merely_end_in_a_secret_number():
    assert redact(raw("1554=keep", "2096=keep")) == "1554=keep|2096=keep|"


def test_split_groups_cuts_entries_at_the_delimiter_tag():
    pairs = fields(raw("35=X", "268=2", "279=1", "269=0", "55=A", "279=2", "269=1", "55=B"))
    head, entries = split_groups(pairs, "279")
    assert head == {"35": "X", "268": "2"}
    assert entries == [{"279": "1", "269": "0", "55": "A"}, {"279": "2", "269": "1", "55": "B"}]
    assert field_map(raw("55=A", "55=B")) == {"55": "A"}


def test_utc_timestamps_parse_to_nanoseconds():
    assert utc_timestamp_ns("19700101-00:00:01.5") == 1_500_000_000
    assert utc_timestamp_ns("19700101-00:00:01.000000123") == 1_000_000_123
    assert utc_date_time_ns("19700102", "00:00:00") == 86_400 * 10**9


def test_an_incremental_update_keeps_the_unchanged_side():
    book = Book()
    book.snapshot("EUR/USD", [{"269": "0", "270": "1.1", "271": "5"}, {"269": "1", "270": "1.2"}], 1)
    top = book.update("EUR/USD", {"279": "1", "269": "0", "270": "1.15"}, 2)
    assert (top.bid.price, top.bid.size, top.ask.price, top.ts_ns) == ("1.15", "5", "1.2", 2)
    top = book.update("EUR/USD", {"279": "2", "269": "1"}, 3)
    assert not top.complete and top.bid.price == "1.15"


def test_an_update_for_an_unknown_entry_type_changes_nothing():
    book = Book()
    top = book.update("EUR/USD", {"279": "0", "269": "2", "270": "9"}, 1)
    assert (top.bid.price, top.ask.price) == (None, None)


def config(**changes: object) -> SessionConfig:
    values: dict[str, object] = {
        "id": 1,
        "name": "lp",
        "sender_comp_id": "US",
        "target_comp_id": "LP",
        "host": "127.0.0.1",
        "port": 9000,
        "password": "hunter2-secret",
    }
    values.update(changes)
    return SessionConfig(**values)  # type: ignore[arg-type]


def test_settings_never_persist_messages_nor_carry_the_password(tmp_path: Path):
    text = settings_text(config(), store_dir=tmp_path)
    assert "PersistMessages=N" in text and "NonStopSession=Y" in text and "SocketNodelay=Y" in text
    assert "hunter2" not in text and "hunter2" not in repr(config())
    assert f"DataDictionary={data_dictionary_path()}" in text
    assert "FileLog" not in text and "ScreenLog" not in text


def test_settings_validate_fields_strictly_unless_the_session_relaxes_it(tmp_path: Path):
    strict = settings_text(config(), store_dir=tmp_path)
    assert "ValidateUserDefinedFields=Y" in strict and "AllowUnknownMsgFields=N" in strict
    assert "TimeStampPrecision=3" in strict
    relaxed = settings_text(config(relax_field_validation=True), store_dir=tmp_path)
    assert "ValidateUserDefinedFields=N" in relaxed and "AllowUnknownMsgFields=Y" in relaxed
    assert config().connection_key() != config(relax_field_validation=True).connection_key()


def test_settings_carry_the_schedule_and_the_reset_policy(tmp_path: Path):
    cfg = config(start_time=time(22), end_time=time(21, 55), start_day="Sunday", end_day="Friday")
    text = settings_text(cfg, store_dir=tmp_path)
    assert "StartTime=22:00:00\nEndTime=21:55:00\nStartDay=Sunday\nEndDay=Friday" in text
    assert "NonStopSession" not in text and "ResetOnLogon=N" in text
    assert "ResetOnLogon=Y" in settings_text(config(reset_on_logon=True), store_dir=tmp_path)


def test_the_data_dictionary_comes_from_the_quickfix_package():
    path = data_dictionary_path()
    assert path.name == "FIX44.xml" and path.is_file()
    assert not (Path(__file__).resolve().parents[2] / "fix" / "FIX44.xml").exists()


def test_the_logon_back_off_doubles_per_refusal_up_to_its_cap():
    handler = SessionHandler(config(reconnect_s=5), cast(FixEngine, None))
    delays = []
    for refusals in (1, 2, 3, 4, 5, 6, 7, 40):
        handler.state.refusals = refusals
        delays.append(handler.logon_backoff_s())
    assert delays == [5, 10, 20, 40, 80, 160, LOGON_BACKOFF_CAP_S, LOGON_BACKOFF_CAP_S]
    slow = SessionHandler(config(reconnect_s=600), cast(FixEngine, None))
    slow.state.refusals = 3
    assert slow.logon_backoff_s() == 600  # never below the session's own reconnect interval
