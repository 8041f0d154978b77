import asyncio
import logging
import signal
import socket
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from fix.desk import OrderDesk
from fix.engine import FixEngine
from kernel.heap import freeze_startup_objects
from kernel.lease import Lease, LeaseLost, fence_record
from kernel.redis import async_client
from kernel.sysevents import SystemEventKind, system_event_emit

log = logging.getLogger(__name__)


class Command(BaseCommand):
    help = "Run the FIX initiator sessions (market data and A-Book orders); one active per deployment."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--session", action="append", help="Only run these FixSession names")

    def handle(self, *args: Any, **options: Any) -> None:
        only = set(options["session"]) if options["session"] else None
        freeze_startup_objects()
        asyncio.run(self.main(only))

    async def main(self, only: set[str] | None) -> None:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
        name = "fix" if only is None else "fix:" + ",".join(sorted(only))
        lease = Lease(async_client(), name, ttl_s=settings.FIX_LEASE_TTL_S, record=fence_record)
        engine = FixEngine(only=only, desk_factory=OrderDesk)
        stepped_down = False
        try:
            try:
                await lease.acquire()
                await asyncio.to_thread(_announce, SystemEventKind.PROCESS_START, name, "leader started")
                async with asyncio.TaskGroup() as tg:
                    tg.create_task(lease.keep())
                    tg.create_task(asyncio.to_thread(engine.run))
            except* LeaseLost as lost:
                log.error("runfix stepped down: %s", lost.exceptions[0])
                stepped_down = True
        except asyncio.CancelledError:
            log.info("runfix stopping")
        finally:
            engine.stop()
            await lease.release()
            await asyncio.to_thread(_announce, SystemEventKind.PROCESS_STOP, name, "stopped")
        if stepped_down:
            # The sessions' threads are gone with the engine: the supervisor starts a fresh process,
            # which stands by for the lease.
            raise SystemExit(1)


def _announce(kind: SystemEventKind, lease: str, text: str) -> None:
    system_event_emit(kind, subject=f"runfix {lease}@{socket.gethostname()}", text=text)
