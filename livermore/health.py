"""/healthz: the process answers. /readyz: the database and Redis answer, a market loop holds its
leader lease (with the fence number it writes under), and a fresh quote is there (its age counted
to the time of the request, so a dead market process makes the web not ready). 503 with the same
JSON when any check fails."""

import time

from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse

from kernel.redis import key, mget
from marketdata.selectors import feed_health

HEALTHZ_BODY = {"status": "ok"}


def healthz(request: HttpRequest) -> JsonResponse:
    """What the test client sees; a web process answers /healthz in livermore/asgi_threads.py, off
    the request threads."""
    return JsonResponse(HEALTHZ_BODY)


def readyz(request: HttpRequest) -> JsonResponse:
    checks: dict[str, dict[str, object]] = {}
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        checks["database"] = {"ok": True}
    except Exception as exc:
        checks["database"] = {"ok": False, "error": type(exc).__name__}
    try:
        rows = feed_health()
        checks["redis"] = {"ok": True}
        fresh = [
            r
            for r in rows
            # A quiet book on a live connection is fresh: judged on the connection's silence.
            if r["state"] == "selected" and r["silent_ms"] <= settings.READY_QUOTE_MAX_AGE_S * 1000
        ]
        checks["quotes"] = {"ok": bool(fresh), "fresh_symbols": len(fresh)}
        holder, fence = mget([key("lease", "market"), key("fence", "market")])
        checks["market_leader"] = {"ok": holder is not None, "fence": int(fence) if fence else None}
    except Exception as exc:
        checks["redis"] = {"ok": False, "error": type(exc).__name__}
        checks["quotes"] = {"ok": False, "error": "redis unavailable"}
        checks["market_leader"] = {"ok": False, "error": "redis unavailable"}
    ready = all(c["ok"] for c in checks.values())
    return JsonResponse(
        {"status": "ready" if ready else "not ready", "checks": checks, "ts": time.time()},
        status=200 if ready else 503,
    )
