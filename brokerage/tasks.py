from celery import shared_task

from brokerage import services


@shared_task(ignore_result=True)
def orders_expire() -> int:
    return services.orders_expire()


@shared_task(ignore_result=True)
def swaps_accrue() -> int:
    return services.swaps_accrue()


@shared_task(ignore_result=True)
def trading_states_watch() -> int:
    return len(services.trading_states_watch())
