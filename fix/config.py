"""QuickFIX settings built in memory from a session's row: nothing here touches a file, and the
password is never part of them (it is added to the Logon in `toAdmin`)."""

import importlib.metadata
from dataclasses import dataclass, field
from datetime import time
from functools import cache
from pathlib import Path


@dataclass(frozen=True)
class SessionConfig:
    """A plain snapshot of an enabled FixSession row, as runfix and the simulator use it."""

    id: int
    name: str
    sender_comp_id: str
    target_comp_id: str
    host: str
    port: int
    begin_string: str = "FIX.4.4"
    heartbeat_s: int = 30
    reconnect_s: int = 5
    tls: bool = False
    tls_ca_file: str = ""
    market_data: bool = True
    trading: bool = True
    venue_code: str = ""
    start_time: time | None = None
    end_time: time | None = None
    start_day: str = ""
    end_day: str = ""
    reset_on_logon: bool = False
    username: str = ""
    password: str = field(default="", repr=False)
    account: str = ""
    log_market_data: bool = False
    # accept fields the FIX 4.4 dictionary does not define for the message (else a session Reject)
    relax_field_validation: bool = False
    # Sequence numbers to start from (set by an operator for a cut-over), written to the store first.
    next_sender_seq: int | None = None
    next_target_seq: int | None = None
    # (venue symbol, instrument symbol) pairs to subscribe: changes apply without a reconnect
    symbols: tuple[tuple[str, str], ...] = ()

    def connection_key(self) -> tuple[object, ...]:
        """What the QuickFIX initiator is built from: a change here means a reconnect."""
        return (
            self.begin_string,
            self.sender_comp_id,
            self.target_comp_id,
            self.host,
            self.port,
            self.heartbeat_s,
            self.reconnect_s,
            self.tls,
            self.tls_ca_file,
            self.start_time,
            self.end_time,
            self.start_day,
            self.end_day,
            self.reset_on_logon,
            self.relax_field_validation,
        )


@cache
def data_dictionary_path() -> Path:
    """FIX44.xml as shipped inside the installed quickfix distribution."""
    dist = importlib.metadata.distribution("quickfix")
    for file in dist.files or ():
        if file.name == "FIX44.xml":
            return Path(str(dist.locate_file(file))).resolve()
    raise FileNotFoundError("FIX44.xml not found in the quickfix distribution")


def _yn(flag: bool) -> str:
    return "Y" if flag else "N"


def settings_text(cfg: SessionConfig, *, store_dir: Path, acceptor: bool = False) -> str:
    """The [DEFAULT] + [SESSION] text for quickfix.SessionSettings.setFromString."""
    lines = [
        "[DEFAULT]",
        f"ConnectionType={'acceptor' if acceptor else 'initiator'}",
        f"FileStorePath={store_dir}",
        # Never keep sent messages: a ResendRequest is answered with a gap fill, so a stale
        # order is never re-sent, and the Logon (with its password) never reaches the disk. What
        # a gap fill covered is re-issued by runfix where that is safe (fix.engine.Recovery).
        "PersistMessages=N",
        "UseDataDictionary=Y",
        f"DataDictionary={data_dictionary_path()}",
        # QuickFIX's acceptance-test behaviour: a field the dictionary does not define for the
        # message (user-defined ones included) gets a session Reject, unless the session relaxes it
        f"ValidateUserDefinedFields={_yn(not cfg.relax_field_validation)}",
        f"AllowUnknownMsgFields={_yn(cfg.relax_field_validation)}",
        "LogonTimeout=5",
        "LogoutTimeout=2",
        f"ResetOnLogon={_yn(cfg.reset_on_logon)}",
        "ResetOnLogout=N",
        "ResetOnDisconnect=N",
        "RefreshOnLogon=Y",
        "SendRedundantResendRequests=N",
        # small messages back to back (an ack then a fill) must not wait on Nagle + delayed ACK
        "SocketNodelay=Y",
        # FIX 4.4 UTCTimestamps carry at most milliseconds (finer precision came with FIX 5.0)
        "TimeStampPrecision=3",
        "[SESSION]",
        f"BeginString={cfg.begin_string}",
        f"SenderCompID={cfg.sender_comp_id}",
        f"TargetCompID={cfg.target_comp_id}",
    ]
    if cfg.start_time is not None and cfg.end_time is not None:
        lines += [f"StartTime={cfg.start_time:%H:%M:%S}", f"EndTime={cfg.end_time:%H:%M:%S}"]
        if cfg.start_day and cfg.end_day:
            lines += [f"StartDay={cfg.start_day}", f"EndDay={cfg.end_day}"]
    else:
        lines.append("NonStopSession=Y")
    if acceptor:
        lines += [f"SocketAcceptHost={cfg.host}", f"SocketAcceptPort={cfg.port}"]
    else:
        lines += [
            f"SocketConnectHost={cfg.host}",
            f"SocketConnectPort={cfg.port}",
            f"HeartBtInt={cfg.heartbeat_s}",
            f"ReconnectInterval={cfg.reconnect_s}",
        ]
    return "\n".join(lines) + "\n"
