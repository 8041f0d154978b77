from celery import shared_task

from .models import CoinbaseLink
from .selectors import coinbase_links_to_sync
from .services import portfolio_sync


@shared_task(ignore_result=True)
def sync_portfolio(link_id: int) -> str:
    link = CoinbaseLink.objects.filter(pk=link_id, enabled=True).first()
    if link is None:
        return "gone"
    return portfolio_sync(link=link).status


@shared_task(ignore_result=True)
def sync_all_portfolios() -> int:
    """Beat job: one sync task per enabled Coinbase link."""
    link_ids = coinbase_links_to_sync()
    for link_id in link_ids:
        sync_portfolio.delay_on_commit(link_id)
    return len(link_ids)
