from celery import shared_task

from .services import idempotency_keys_purge as idempotency_keys_purge_service


@shared_task(ignore_result=True)
def idempotency_keys_purge() -> int:
    return idempotency_keys_purge_service()
