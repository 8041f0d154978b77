import asyncio
import faulthandler
import logging
import signal
import socket
import sys
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from kernel.heap import freeze_startup_objects
from kernel.lease import Lease, LeaseLost, fence_record
from kernel.redis import async_client
from kernel.sysevents import SystemEventKind, system_event_emit
from marketdata.loop import MarketLoop
from marketdata.selectors import venues_simulated_enabled

log = logging.getLogger(__name__)


def _print_tasks() -> None:
    for task in asyncio.all_tasks():
        print(f"{task!r}", file=sys.stderr)
        task.print_stack(file=sys.stderr)


class Command(BaseCommand):
    help = "Run the market loop: venue adapters, LP manager, quote publishing (one active per deployment)."

    def handle(self, *args: Any, **options: Any) -> None:
        if not settings.LIVERMORE_DEMO and (simulated := venues_simulated_enabled()):
            raise CommandError(
                f"Refusing to start: simulated venue(s) {', '.join(simulated)} enabled and this deployment"
                " is live. Disable them in the admin, or set LIVERMORE_DEMO=true if it is a demo."
            )
        freeze_startup_objects()
        asyncio.run(self.main())

    async def main(self) -> None:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
        # `kill -USR1 <pid>` prints every thread's stack, then every asyncio task's, to stderr: what a
        # stuck process is doing (the threads even while the event loop itself is blocked).
        loop.add_signal_handler(signal.SIGUSR1, _print_tasks)
        faulthandler.register(signal.SIGUSR1, all_threads=True, chain=True)
        lease = Lease(async_client(), "market", ttl_s=settings.MARKET_LEASE_TTL_S, record=fence_record)
        try:
            while True:
                await lease.acquire()
                await asyncio.to_thread(_announce, SystemEventKind.PROCESS_START, "leader started")
                try:
                    async with asyncio.TaskGroup() as tg:
                        tg.create_task(lease.keep())
                        tg.create_task(MarketLoop(leading=lease.valid, fence=(lease.name, lease.fence)).run())
                except* LeaseLost as lost:
                    # Stepped down (the loop stopped and flushed): stand by for the lease again.
                    log.error("market loop stepped down: %s", lost.exceptions[0])
                    await asyncio.to_thread(_announce, SystemEventKind.PROCESS_STOP, "stepped down")
        except asyncio.CancelledError:
            log.info("market loop stopping")
        finally:
            await lease.release()
            await asyncio.to_thread(_announce, SystemEventKind.PROCESS_STOP, "stopped")


def _announce(kind: SystemEventKind, text: str) -> None:
    system_event_emit(kind, subject=f"runmarket@{socket.gethostname()}", text=text)
