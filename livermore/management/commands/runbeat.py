import asyncio
import contextlib
import signal
import sys
from typing import Any

from celery.beat import Service
from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import connections

from kernel.lease import Lease, fence_record
from kernel.redis import async_client
from livermore.celery import app


class Command(BaseCommand):
    help = "Run celery beat (DatabaseScheduler) under a Redis lease so exactly one beat runs."

    def handle(self, *args: Any, **options: Any) -> None:
        sys.exit(asyncio.run(self.main()))

    async def main(self) -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        lease = Lease(async_client(), "beat", ttl_s=settings.MARKET_LEASE_TTL_S, record=fence_record)
        acquire = asyncio.create_task(lease.acquire())
        stopped = asyncio.create_task(stop.wait())
        await asyncio.wait({acquire, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if stop.is_set():
            acquire.cancel()
            return 0
        # Beat runs in a thread of this process and is stopped by its own flag. `celery beat` as a
        # child process stops on SIGTERM by raising SystemExit from a signal handler, wherever the
        # interpreter happens to be: inside a destructor that is printed and ignored.
        service = Service(app=app, scheduler_cls=app.conf.beat_scheduler)
        beat = asyncio.create_task(asyncio.to_thread(self.run_beat, service))
        keep = asyncio.create_task(lease.keep())
        await asyncio.wait({keep, beat, stopped}, return_when=asyncio.FIRST_COMPLETED)
        service.stop()  # stopping, or the lease was lost: never two beats at once
        await asyncio.wait({beat})  # the scheduler's sleep is at most its max interval (5 s)
        for task in (keep, stopped):
            task.cancel()
        with contextlib.suppress(Exception):
            await lease.release()
        failed = [t.exception() for t in (keep, beat) if t.done() and not t.cancelled() and t.exception()]
        for exc in failed:
            self.stderr.write(f"beat stopped: {exc!r}")
        return 0 if stop.is_set() and not failed else 1

    @staticmethod
    def run_beat(service: Service) -> None:
        try:
            service.start()
        finally:
            connections.close_all()
