"""Clients log in with their trading account number as well as their username."""

from typing import Any

from django.contrib.auth.backends import BaseBackend, ModelBackend
from django.http import HttpRequest

from users.models import User

from .models import TradingAccount


class AccountNumberBackend(ModelBackend):
    """`username` may be the number of one of the client's trading accounts (clients only: an
    operator logs in by name). It only authenticates: permissions come from the users backend."""

    get_user_permissions = BaseBackend.get_user_permissions
    get_group_permissions = BaseBackend.get_group_permissions
    get_all_permissions = BaseBackend.get_all_permissions
    has_perm = BaseBackend.has_perm

    def authenticate(
        self,
        request: HttpRequest | None,
        username: str | None = None,
        password: str | None = None,
        **kwargs: Any,
    ) -> User | None:
        if not username or not password or not username.isdigit() or len(username) > 18:
            return None
        account = TradingAccount.objects.select_related("owner").filter(number=int(username)).first()
        if account is None or account.owner.is_staff:
            return None
        owner = account.owner
        if owner.check_password(password) and self.user_can_authenticate(owner):
            return owner
        return None
