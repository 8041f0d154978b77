"""The alerts outbox's figures read at scrape time (settings.METRICS_COLLECTORS)."""

from collections.abc import Iterator
from datetime import timedelta

from django.db.models import Count, Q
from django.utils import timezone
from prometheus_client.core import GaugeMetricFamily, Metric

from alerts.models import Notification


def outbox_metrics() -> Iterator[Metric]:
    counts = Notification.objects.aggregate(
        pending=Count("pk", filter=Q(status=Notification.Status.PENDING)),
        failed=Count(
            "pk",
            filter=Q(status=Notification.Status.FAILED, created_at__gte=timezone.now() - timedelta(days=1)),
        ),
    )
    yield GaugeMetricFamily(
        "livermore_outbox_pending", "Outbox rows waiting to be sent", value=counts["pending"]
    )
    yield GaugeMetricFamily(
        "livermore_outbox_dead_letters", "Outbox rows that failed in the last day", value=counts["failed"]
    )
