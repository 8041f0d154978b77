from celery import shared_task

from alerts import services
from kernel.sysevents import SystemEvent


@shared_task(ignore_result=True)
def bar_closed(symbol: str, timeframe: str, start: int) -> int:
    return len(services.bar_close_handle(symbol=symbol, timeframe=timeframe, start=start))


@shared_task(ignore_result=True)
def notification_deliver(notification_id: int) -> None:
    retry_in = services.notification_deliver(notification_id=notification_id)
    if retry_in is not None:
        notification_deliver.apply_async((notification_id,), countdown=retry_in)


@shared_task(ignore_result=True)
def notifications_requeue() -> int:
    return services.notifications_requeue_due()


@shared_task(ignore_result=True)
def alert_rules_expire() -> int:
    return services.alert_rules_expire()


@shared_task(ignore_result=True)
def system_event_record(event: SystemEvent) -> None:
    services.system_event_record(event=event)


@shared_task(ignore_result=True)
def dead_letters_check() -> int:
    return services.dead_letters_check()
