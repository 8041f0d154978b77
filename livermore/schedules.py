"""Every periodic job, defined once here; `manage.py seed` writes them into django-celery-beat,
where operators can pause or retime them in the admin without a deploy."""

from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import transaction
from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask


@dataclass(frozen=True)
class Job:
    """Runs every `every_s` seconds, or at the times of `crontab` ("minute hour day month weekday", UTC)."""

    name: str
    task: str
    every_s: int = 0
    crontab: str = ""

    def schedule(self) -> dict[str, Any]:
        if self.crontab:
            minute, hour, day_of_month, month_of_year, day_of_week = self.crontab.split()
            crontab, _ = CrontabSchedule.objects.get_or_create(
                minute=minute,
                hour=hour,
                day_of_month=day_of_month,
                month_of_year=month_of_year,
                day_of_week=day_of_week,
                timezone="UTC",
            )
            return {"crontab": crontab}
        interval, _ = IntervalSchedule.objects.get_or_create(
            every=self.every_s, period=IntervalSchedule.SECONDS
        )
        return {"interval": interval}


JOBS = [
    Job("feed health snapshot", "marketdata.tasks.feed_health_snapshot", 60),
    Job("tick retention", "marketdata.tasks.tick_retention", 3600),
    Job("backfill recent candles", "marketdata.tasks.backfill_recent_candles", 3600),
    Job("portfolio sync", "portfolio.tasks.sync_all_portfolios", 300),
    Job("idempotency keys purge", "users.tasks.idempotency_keys_purge", 3600),
    Job("expire pending orders", "brokerage.tasks.orders_expire", 60),
    Job("kill switch watch", "brokerage.tasks.trading_states_watch", 10),
    Job("accrue swaps", "brokerage.tasks.swaps_accrue", crontab=f"0 {settings.SWAP_ROLLOVER_HOUR_UTC} * * *"),
    Job("alert notifications requeue", "alerts.tasks.notifications_requeue", 5),
    Job("expire alert rules", "alerts.tasks.alert_rules_expire", 60),
    Job("dead letters check", "alerts.tasks.dead_letters_check", 3600),
    Job("prune FIX message log", "fix.tasks.fix_message_prune", 3600),
]


@transaction.atomic
def periodic_tasks_sync() -> None:
    """Create missing jobs and fix their task names; keep operator edits to schedules and enablement."""
    for job in JOBS:
        if not PeriodicTask.objects.filter(name=job.name).exists():
            PeriodicTask.objects.create(name=job.name, task=job.task, **job.schedule())
        PeriodicTask.objects.filter(name=job.name).exclude(task=job.task).update(task=job.task)
