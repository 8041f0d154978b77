from decimal import Decimal as D

import pytest
from django.urls import reverse

from brokerage import services
from brokerage.models import Posting, TradingAccount
from brokerage.streams import AccountChannel
from tests.support.users import make_role_user

pytestmark = pytest.mark.django_db


@pytest.fixture
def traded(account, market):
    market.set("EURUSD", "1.1000", "1.1002")
    services.order_submit(account=account, symbol="EURUSD", side="buy", volume=D("0.1"))
    return account


@pytest.mark.parametrize(
    "model",
    [
        "clientgroup",
        "tradingaccount",
        "order",
        "position",
        "deal",
        "ledgeraccount",
        "ledgertransaction",
        "posting",
    ],
)
def test_every_brokerage_model_has_a_working_changelist(admin_client, traded, model):
    assert admin_client.get(reverse(f"admin:brokerage_{model}_changelist")).status_code == 200


def test_postings_cannot_be_added_changed_or_deleted_in_the_admin(admin_client, traded):
    posting = Posting.objects.first()
    assert admin_client.get(reverse("admin:brokerage_posting_add")).status_code == 403
    response = admin_client.post(
        reverse("admin:brokerage_posting_change", args=[posting.pk]), {"amount": "1"}
    )
    assert response.status_code == 403
    assert admin_client.get(reverse("admin:brokerage_posting_delete", args=[posting.pk])).status_code == 403
    posting.refresh_from_db()
    assert posting.amount == D("5000")


def test_an_account_added_in_the_admin_gets_its_ledger_account(admin_client, alice, group):
    response = admin_client.post(
        reverse("admin:brokerage_tradingaccount_add"),
        {"owner": alice.pk, "group": group.pk, "status": "active"},
    )
    assert response.status_code == 302
    account = TradingAccount.objects.get()
    assert account.currency == "USD"
    assert account.ledger_account.kind == "client"
    assert account.number >= 100001


def test_the_account_stream_channel_is_for_its_owner_and_staff_who_may_view_it(
    account, alice, operator, django_user_model
):
    channel = AccountChannel()
    stranger = django_user_model.objects.create_user(username="mallory", password="a-long-password-3")
    no_role = make_role_user("staff-without-role")
    number = str(account.number)
    assert channel.group(alice, number) == f"account.{number}"
    assert channel.group(operator, number) == f"account.{number}"  # holds brokerage.view_tradingaccount
    assert channel.group(no_role, number) is None  # is_staff alone is not enough
    assert channel.group(stranger, number) is None
    assert channel.group(alice, "not-a-number") is None
    snapshot = channel.snapshot(alice, number)
    assert (snapshot["number"], snapshot["balance"], snapshot["equity"]) == (
        account.number,
        "5000.00",
        "5000.00",
    )


def group_form(admin_client, url):
    """The group's change form as the admin renders it, ready to post back (no inline rows)."""
    page = admin_client.get(url)
    data = {}
    for name, value in page.context["adminform"].form.initial.items():
        if value is None or value is False:
            continue
        data[name] = "on" if value is True else str(value)
    for inline in page.context["inline_admin_formsets"]:
        prefix = inline.formset.prefix
        data.update({f"{prefix}-TOTAL_FORMS": "0", f"{prefix}-INITIAL_FORMS": "0"})
    return data


def test_a_group_leverage_edit_in_the_admin_re_margins_open_positions(admin_client, traded, group):
    from brokerage.models import Position
    from users.models import AuditLog

    url = reverse("admin:brokerage_clientgroup_change", args=[group.pk])
    data = group_form(admin_client, url)
    data["leverage"] = "50"
    response = admin_client.post(url, data, follow=True)
    assert response.status_code == 200, response.content[:2000]
    assert "positions of 1 account(s) re-margined" in response.content.decode()
    position = Position.objects.get(account=traded)
    assert position.margin == D("220.04")  # 0.1 lot at 1.1002, leverage 50 (110.02 at 100)
    assert AuditLog.objects.filter(action="group.remargin", details__leverage=50).exists()


@pytest.mark.parametrize("leverage", ["0", "-5", "ten"])
def test_an_invalid_group_leverage_is_refused_and_changes_nothing(admin_client, traded, group, leverage):
    from brokerage.models import Position
    from users.models import AuditLog

    url = reverse("admin:brokerage_clientgroup_change", args=[group.pk])
    data = group_form(admin_client, url)
    data["leverage"] = leverage
    response = admin_client.post(url, data)
    assert response.status_code == 200  # the form again, with its error
    assert response.context["adminform"].form.errors["leverage"]
    group.refresh_from_db()
    assert group.leverage == 100
    assert Position.objects.get(account=traded).margin == D("110.02")
    assert not AuditLog.objects.filter(action__in=["group.change", "group.remargin"]).exists()
