import pytest

from portfolio.models import CoinbaseLink
from portfolio.services import coinbase_link_set
from tests.fakes.coinbase import CoinbaseKey
from tests.fakes.fixtures import celery_worker, coinbase_key, coinbase_rest
from tests.support.users import make_client
from users.models import User

__all__ = ["celery_worker", "coinbase_key", "coinbase_rest"]


@pytest.fixture
def trader(db: None) -> User:
    """A client with a Coinbase account."""
    return make_client("trader")


@pytest.fixture
def link(trader: User, coinbase_key: CoinbaseKey) -> CoinbaseLink:
    return coinbase_link_set(
        user=trader, api_key_name=coinbase_key.name, private_key_pem=coinbase_key.private_pem
    )
