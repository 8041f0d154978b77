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
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.http.request import RawPostDataException
from django.utils import timezone
from rest_framework import status
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

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


def idempotent_run(*, request: Request, key: str, run: Callable[[], Response]) -> Response:
    user = request_user(request)
    fingerprint = request_fingerprint(request)
    cutoff = timezone.now() - settings.IDEMPOTENCY_KEY_TTL
    with transaction.atomic():
        IdempotencyKey.objects.filter(user=user, key=key, created_at__lt=cutoff).delete()
        try:
            with transaction.atomic():
                record = IdempotencyKey.objects.create(
                    user=user,
                    key=key,
                    method=request.method or "",
                    path=request.path[:2000],
                    request_hash=fingerprint,
                )
        except IntegrityError:
            # Blocked until the first request committed; its row is now visible.
            return _replay(IdempotencyKey.objects.get(user=user, key=key), fingerprint)
        with transaction.atomic():
            response = run()
            if response.status_code >= 500:
                raise _ServerError(response)
        record.response_status = response.status_code
        record.response_body = json.loads(JSONRenderer().render(response.data) or b"null")
        record.save(update_fields=["response_status", "response_body"])
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
