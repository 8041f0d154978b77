from celery import shared_task
from django.conf import settings

from fix.services import fix_messages_prune


@shared_task(ignore_result=True)
def fix_message_prune() -> int:
    return fix_messages_prune(
        keep_days=settings.FIX_MESSAGE_KEEP_DAYS, keep_per_session=settings.FIX_MESSAGE_KEEP_PER_SESSION
    )
