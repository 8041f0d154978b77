"""The instrument, the group's conditions and the account's identity an order needs are kept per
process under their data versions (brokerage.selectors): read once per version, and a committed change
holds from the next order on, however it was made, once its version has moved."""

from decimal import Decimal as D
from typing import Any

import pytest
from django.db import connection
from rest_framework.test import APIClient

from brokerage import services
from brokerage.models import ClientGroup, Deal, GroupInstrument, Order, Position, TradingAccount
from brokerage.selectors import GROUPS_VERSION, account_identity, instrument_by_symbol
from kernel import versions
from kernel.errors import ServiceError
from kernel.redis import sync_client
from marketdata.models import Instrument
from marketdata.selectors import MARKET_VERSION
from tests.support.trading import open_account
from users.models import ApiKey, User
from users.services import api_key_revoke

from .conftest import Market, client_for, set_commission

pytestmark = pytest.mark.django_db(transaction=True)  # commits: the versions move on as in production


def buy(account: TradingAccount) -> Order:
    return services.order_submit(account=account, symbol="EURUSD", side="buy", volume=D("0.1"))


def commission_of(order: Order) -> D:
    return Deal.objects.get(order=order).commission


def test_an_order_reads_no_instrument_or_group_rows_while_their_versions_stand(
    account: TradingAccount, market: Market, group: ClientGroup, instruments: dict[str, Instrument]
) -> None:
    market.set("EURUSD", "1.1000", "1.1002")
    set_commission(group, instruments["EURUSD"], "7")
    buy(account)  # reads and keeps them: the order's instrument, by symbol, and its group
    buy(account)  # and the instrument of the position the first opened, by id (its exposure)
    seen: list[str] = []

    def wrapper(execute: Any, query: str, params: Any, many: bool, context: Any) -> Any:
        seen.append(query)
        return execute(query, params, many, context)

    with connection.execute_wrapper(wrapper):
        order = buy(account)
    assert commission_of(order) == D("-0.70")
    tables = ("marketdata_instrument", "brokerage_clientgroup", "brokerage_groupinstrument")
    assert not [q for q in seen if any(t in q for t in tables)]


def test_a_saved_group_or_setting_holds_from_the_next_order_on(
    account: TradingAccount, market: Market, group: ClientGroup, instruments: dict[str, Instrument]
) -> None:
    market.set("EURUSD", "1.1000", "1.1002")
    assert commission_of(buy(account)) == D("0.00")
    set_commission(group, instruments["EURUSD"], "7")  # saved, as the admin saves: the version moves
    assert commission_of(buy(account)) == D("-0.70")
    group.leverage = 50
    group.save()
    assert Position.objects.get(deals__order=buy(account)).margin == D("220.04")
    GroupInstrument.objects.get(group=group).delete()
    assert commission_of(buy(account)) == D("0.00")


def test_a_change_with_no_signal_holds_once_its_version_moves(
    account: TradingAccount, market: Market, group: ClientGroup, instruments: dict[str, Instrument]
) -> None:
    """As another process's write that bypasses the model signals: the cached rows serve until the
    data version moves on (the writer's bump_on_commit), and the change holds from then on."""
    market.set("EURUSD", "1.1000", "1.1002")
    set_commission(group, instruments["EURUSD"], "7")
    assert commission_of(buy(account)) == D("-0.70")

    GroupInstrument.objects.filter(group=group).update(commission_per_lot=D("3"))
    ClientGroup.objects.filter(pk=group.pk).update(leverage=50)
    Instrument.objects.filter(symbol="EURUSD").update(tradable=False)
    order = buy(account)  # versions unchanged: the kept rows
    assert commission_of(order) == D("-0.70")
    assert Position.objects.get(deals__order=order).margin == D("110.02")

    versions.bump_on_commit(GROUPS_VERSION)
    order = buy(account)
    assert commission_of(order) == D("-0.30")
    assert Position.objects.get(deals__order=order).margin == D("220.04")

    versions.bump_on_commit(MARKET_VERSION)
    with pytest.raises(ServiceError) as refused:
        buy(account)
    assert refused.value.code == "instrument_not_tradable"


def test_an_unknown_symbol_is_known_once_its_instrument_is_saved(instruments: dict[str, Instrument]) -> None:
    assert instrument_by_symbol("EURUSX") is None  # kept: unknown while the version stands
    added = instruments["EURUSD"]
    added.pk, added.symbol = None, "EURUSX"
    added.save()  # the market data version moves
    found = instrument_by_symbol("EURUSX")
    assert found is not None and found.pk == added.pk


def test_an_account_opened_after_its_number_was_asked_for_is_found(alice: User, group: ClientGroup) -> None:
    assert account_identity(4_000_001) is None  # kept: unknown while the version stands
    opened = services.account_open(owner=alice, group=group, number=4_000_001)  # the version moves
    assert account_identity(4_000_001) == (opened.pk, alice.pk)


def test_an_order_through_the_api_holds_the_accounts_owner_as_saved(
    alice: User, bob: User, group: ClientGroup, market: Market
) -> None:
    market.set("EURUSD", "1.1000", "1.1002")
    account = open_account(alice, group)
    path = f"/api/v1/accounts/{account.number}/orders"
    body = {"symbol": "EURUSD", "side": "buy", "volume": "0.1"}
    placed = client_for(alice).post(path, body, format="json")
    assert placed.status_code == 201  # the account's identity is kept now
    assert Order.objects.get(pk=placed.json()["id"]).account_id == account.pk

    account.owner = bob
    account.save()  # the accounts' version moves
    refused = client_for(alice).post(path, body, format="json")
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "forbidden_account"
    assert client_for(bob).post(path, body, format="json").status_code == 201
    assert client_for(bob).post("/api/v1/accounts/4000002/orders", body, format="json").status_code == 404


def _redis_calls(command: str) -> int:
    stats = sync_client().info("commandstats").get(f"cmdstat_{command}", {})
    return int(stats.get("calls", 0))


@pytest.mark.parametrize("auth", ["session", "api key"])
def test_an_order_through_the_api_reads_the_versions_of_its_account_and_caches_with_its_rates(
    alice: User, group: ClientGroup, market: Market, auth: str
) -> None:
    """The account's identity (selectors.account_identity) and the instrument, group and routing the
    order deals with are kept under versions that the order reads together, in the round trip that
    checks the caller's rates (kernel.throttling), with an API key's own versions: no MGET."""
    market.set("EURUSD", "1.1000", "1.1002")
    account = open_account(alice, group)
    api, path = client_for(alice), f"/api/v1/accounts/{account.number}/orders"
    if auth == "api key":
        api = APIClient()
        api.credentials(HTTP_AUTHORIZATION=f"Api-Key {ApiKey.issue(user=alice, name='bot')[1]}")
    body = {"symbol": "EURUSD", "side": "buy", "volume": "0.1"}
    assert api.post(path, body, format="json").status_code == 201  # the caches and the key are kept now
    before = _redis_calls("mget"), _redis_calls("evalsha")
    assert api.post(path, body, format="json").status_code == 201
    assert (_redis_calls("mget") - before[0], _redis_calls("evalsha") - before[1]) == (0, 1)


def test_an_order_with_a_key_revoked_since_it_was_kept_is_refused_and_the_next_key_deals(
    alice: User, group: ClientGroup, market: Market
) -> None:
    """The key's versions moved on: the rates' script reads the order's caches' versions all the same
    (kernel.throttling), the key is looked up again and refused, and the next request deals."""
    market.set("EURUSD", "1.1000", "1.1002")
    account = open_account(alice, group)
    path = f"/api/v1/accounts/{account.number}/orders"
    body = {"symbol": "EURUSD", "side": "buy", "volume": "0.1"}
    (key, raw), (_, other_raw) = ApiKey.issue(user=alice, name="bot"), ApiKey.issue(user=alice, name="other")
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Api-Key {raw}")
    assert api.post(path, body, format="json").status_code == 201  # kept
    api_key_revoke(user=alice, key_id=key.pk)
    refused = api.post(path, body, format="json")
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"
    api.credentials(HTTP_AUTHORIZATION=f"Api-Key {other_raw}")
    assert api.post(path, body, format="json").status_code == 201
    assert Order.objects.filter(account=account).count() == 2
