import signal
import threading
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from fix.models import FixSession
from fix.simulator import LPSimulator, SimulatorOptions
from marketdata.models import Venue


def simulator_options(session: FixSession, *, prices_from: str, **behaviour: Any) -> SimulatorOptions:
    """The simulator's options for serving `session` (its port, the CompIDs swapped, its credentials),
    walking the prices of the simulator venue `prices_from` under the session venue's symbol names."""
    venue = Venue.objects.filter(code=prices_from).first()
    specs = venue.config if venue is not None else {}
    names = {}
    if session.venue is not None:
        names = dict(session.venue.symbols.values_list("instrument__symbol", "venue_symbol"))
    return SimulatorOptions(
        host=session.host,
        port=session.port,
        sender_comp_id=session.target_comp_id,
        target_comp_id=session.sender_comp_id,
        username=session.username,
        password=session.password,
        symbols={names.get(sym, sym): spec for sym, spec in specs.get("symbols", {}).items()},
        store_dir=Path(settings.FIX_STORE_DIR) / f"simulator-{session.name}",
        **behaviour,
    )


class Command(BaseCommand):
    help = (
        "Run the FIX 4.4 LP simulator (an acceptor) for a FixSession row: it listens on the session's "
        "port with the CompIDs swapped and expects the session's credentials."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--session", default="lpsim", help="FixSession name to serve (default lpsim)")
        parser.add_argument("--prices-from", default="sim", help="Simulator venue whose price specs to walk")
        parser.add_argument("--interval-ms", type=float, default=250)
        parser.add_argument("--fill-delay-ms", type=float, default=0)
        parser.add_argument("--partial-fills", type=int, default=1, help="Fill each order in N pieces")
        parser.add_argument("--reject-every", type=int, default=0, help="Reject every Nth order (0: never)")
        parser.add_argument("--reject-symbol", action="append", default=[], help="Always reject this symbol")
        parser.add_argument("--md-reject-symbol", action="append", default=[], help="Reject its market data")

    def handle(self, *args: Any, **options: Any) -> None:
        session = FixSession.objects.select_related("venue").filter(name=options["session"]).first()
        if session is None:
            raise CommandError(f"no FixSession named {options['session']!r} (run manage.py seed)")
        sim = LPSimulator(
            simulator_options(
                session,
                prices_from=options["prices_from"],
                interval_ms=options["interval_ms"],
                fill_delay_ms=options["fill_delay_ms"],
                partial_fills=options["partial_fills"],
                reject_every=options["reject_every"],
                reject_symbols=frozenset(options["reject_symbol"]),
                md_reject_symbols=frozenset(options["md_reject_symbol"]),
            )
        )
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        sim.start()
        self.stdout.write(f"LP simulator for session {session.name} on {session.host}:{session.port}")
        try:
            stop.wait()
        finally:
            sim.stop()
