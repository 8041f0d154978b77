"""GET /metrics: the Prometheus exposition of every process's figures (kernel.metrics), for a scraper
holding METRICS_TOKEN (Authorization: Bearer); the Celery queue depth, read at scrape time."""

import hmac
from collections.abc import Iterator

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.core import GaugeMetricFamily, Metric

from kernel.errors import error_body
from kernel.metrics import metrics_text
from kernel.redis import sync_client

# kombu's Redis transport keeps priorities 3, 6 and 9 of a queue in lists of their own
PRIORITY_SEPARATOR = "\x06\x16"
PRIORITY_STEPS = (0, 3, 6, 9)


@require_GET
def metrics_view(request: HttpRequest) -> HttpResponse:
    token = settings.METRICS_TOKEN
    if not token:
        return JsonResponse(
            error_body("not_configured", "Metrics are off: METRICS_TOKEN is not set."), status=404
        )
    scheme, _, offered = request.headers.get("Authorization", "").partition(" ")
    if scheme != "Bearer" or not hmac.compare_digest(offered.strip().encode(), token.encode()):
        return JsonResponse(error_body("not_authenticated", "A valid metrics token is required."), status=401)
    return HttpResponse(metrics_text(), content_type=CONTENT_TYPE_LATEST)


def celery_queue_metrics() -> Iterator[Metric]:
    queue = settings.CELERY_TASK_DEFAULT_QUEUE
    prefix = settings.CELERY_BROKER_TRANSPORT_OPTIONS["global_keyprefix"]
    redis = sync_client()
    names = [f"{prefix}{queue}" + (f"{PRIORITY_SEPARATOR}{step}" if step else "") for step in PRIORITY_STEPS]
    pipe = redis.pipeline(transaction=False)
    for name in names:
        pipe.llen(name)
    depth = sum(int(n) for n in pipe.execute())
    family = GaugeMetricFamily(
        "livermore_celery_queue_depth", "Tasks waiting in the broker", labels=["queue"]
    )
    family.add_metric([queue], depth)
    yield family
