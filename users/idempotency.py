"""`Idempotency-Key` for POST endpoints: a retried request gets the first response back.

Decorate a DRF view handler with `@idempotent`. Without the header the handler runs as usual. With it,
the key row (users.IdempotencyKey, unique per user) is inserted first, in the transaction that runs
the handler: a concurrent duplicate waits on the unique index until the first commits, then replays
the stored status and body. The same key with another method, path or body is refused with 409
`idempotency_key_reused`. Client errors (4xx) are stored like successes; an unhandled exception rolls
the key back so the client may retry. Keys expire after settings.IDEMPOTENCY_KEY_TTL.
"""

import functools
import hashlib
import json
from collections.abc import Callable
from functools import cache
from typing import Any

from django.conf import settings
from django.db import transaction
from django.http.request import RawPostDataException
from django.utils import timezone
from rest_framework import status
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from kernel import sql
from kernel.errors import ServiceError
from users.authentication import request_user
from users.models import IdempotencyKey

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
MAX_KEY_LENGTH = 255

Handler = Callable[..., Response]


def request_fingerprint(request: Request) -> str:
    """SHA-256 of method, path and body; a JSON body is canonicalised so key order does not matter."""
    try:
        body = request._request.body
    except RawPostDataException:  # a multipart body was streamed by the parser
        body = json.dumps(request.data, default=str).encode()
    try:
        canonical = json.dumps(json.loads(body), sort_keys=True, separators=(",", ":")).encode()
    except ValueError:
        canonical = body
    digest = hashlib.sha256(f"{request.method} {request.path}\n".encode())
    digest.update(canonical)
    return digest.hexdigest()


def _key_from(request: Request) -> str | None:
    key = request.headers.get(HEADER)
    if key is None:
        return None
    key = key.strip()
    if not key or len(key) > MAX_KEY_LENGTH or not key.isprintable():
        raise ServiceError(
            "invalid_idempotency_key",
            f"{HEADER} must be 1 to {MAX_KEY_LENGTH} printable characters.",
            status_code=status.HTTP_400_BAD_REQUEST,
        )
    return key


def _replay(record: IdempotencyKey, fingerprint: str) -> Response:
    if record.request_hash != fingerprint:
        raise ServiceError(
            "idempotency_key_reused",
            f"This {HEADER} was already used for a different request.",
            status_code=status.HTTP_409_CONFLICT,
        )
    return Response(record.response_body, status=record.response_status, headers={REPLAYED_HEADER: "true"})


@cache
def _claim_sql() -> str:
    table = sql.quote(IdempotencyKey._meta.db_table)
    return (
        f"INSERT INTO {table} (user_id, key, method, path, request_hash, created_at)"  # noqa: S608
        " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (user_id, key) DO UPDATE SET"
        " method = EXCLUDED.method, path = EXCLUDED.path, request_hash = EXCLUDED.request_hash,"
        " response_status = NULL, response_body = NULL, created_at = EXCLUDED.created_at"
        f" WHERE {table}.created_at < %s RETURNING id"
    )


def idempotent_run(*, request: Request, key: str, run: Callable[[], Response]) -> Response:
    """Claim the key and run, in one transaction. The claim is one statement: it inserts the key, or
    takes over an expired one, or (the key is live) returns nothing, after waiting for a concurrent
    first request to commit, and the stored response is replayed. A 5xx leaves the handler by
    exception (_ServerError) and rolls the claim back with everything else."""
    user = request_user(request)
    fingerprint = request_fingerprint(request)
    now = timezone.now()
    with transaction.atomic():
        claimed = sql.execute(
            _claim_sql(),
            [
                user.pk,
                key,
                request.method or "",
                request.path[:2000],
                fingerprint,
                now,
                now - settings.IDEMPOTENCY_KEY_TTL,
            ],
        ).fetchone()
        if claimed is None:
            return _replay(IdempotencyKey.objects.get(user=user, key=key), fingerprint)
        response = run()
        if response.status_code >= 500:
            raise _ServerError(response)
        IdempotencyKey.objects.filter(pk=claimed[0]).update(
            response_status=response.status_code,
            response_body=json.loads(JSONRenderer().render(response.data) or b"null"),
        )
    return response


class _ServerError(Exception):
    """Carries a 5xx response out of the transaction so the key is not kept."""

    def __init__(self, response: Response) -> None:
        self.response = response


def idempotent(handler: Handler) -> Handler:
    """Decorator for a DRF view method (post) of an authenticated endpoint."""

    @functools.wraps(handler)
    def wrapper(view: APIView, request: Request, *args: Any, **kwargs: Any) -> Response:
        key = _key_from(request)
        if key is None or not request.user.is_authenticated:
            return handler(view, request, *args, **kwargs)

        def run() -> Response:
            try:
                return handler(view, request, *args, **kwargs)
            except Exception as exc:
                # Render API errors here, inside the transaction, so a 4xx is stored and replayed.
                return view.handle_exception(exc)

        try:
            return idempotent_run(request=request, key=key, run=run)
        except _ServerError as exc:
            return exc.response

    return wrapper
