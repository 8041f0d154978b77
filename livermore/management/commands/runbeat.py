import asyncio
import contextlib
import signal
import sys
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand

from livermore.lease import Lease
from livermore.redis import async_client


class Command(BaseCommand):
    help = "Run celery beat (DatabaseScheduler) under a Redis lease so exactly one beat runs."

    def handle(self, *args: Any, **options: Any) -> None:
        sys.exit(asyncio.run(self.main()))

    async def main(self) -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        lease = Lease(async_client(), "beat", ttl_s=settings.MARKET_LEASE_TTL_S)
        acquire = asyncio.create_task(lease.acquire())
        stopped = asyncio.create_task(stop.wait())
        await asyncio.wait({acquire, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if stop.is_set():
            acquire.cancel()
            return 0
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "celery",
            "-A",
            "livermore",
            "beat",
            "--loglevel=INFO",
        )
        keep = asyncio.create_task(lease.keep())
        exited = asyncio.create_task(child.wait())
        await asyncio.wait({keep, exited, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if child.returncode is None:  # stopping, or the lease was lost: never two beats at once
            child.terminate()
            await child.wait()
        for task in (keep, stopped):
            task.cancel()
        with contextlib.suppress(Exception):
            await lease.release()
        return 0 if stop.is_set() else (child.returncode or 1)
