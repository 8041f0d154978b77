"""The operator roles: Django groups and the permissions each one holds, in one table.

A data migration (users 0006) creates the groups from this table; `roles_sync` re-applies it after a
migration adds permissions. Every role sees what the viewer sees. `brokerage.override_negative_adjustment`
is in no role on purpose: it is granted to a person, separately, and every use of it is audited."""

from dataclasses import dataclass
from typing import Any

# Apps whose every model the viewer may look at (read only). Users and API keys are not among them.
# Every role may change their own settings (the console's "My settings" page).
VIEW_APPS = ("brokerage", "marketdata", "alerts", "fix", "portfolio")
VIEW_EXTRA = ("users.view_auditlog", "alerts.view_signals", "users.change_own_settings")


@dataclass(frozen=True)
class Role:
    name: str
    description: str
    permissions: tuple[str, ...]


VIEWER = "viewer"
DEALER = "dealer"
BACK_OFFICE = "back_office"
RISK = "risk"
ADMINISTRATOR = "administrator"

ROLES: dict[str, Role] = {
    VIEWER: Role(VIEWER, "Read only", ()),
    DEALER: Role(
        DEALER,
        "Trades for clients: places, modifies and cancels orders, closes positions",
        ("brokerage.trade_for_client",),
    ),
    BACK_OFFICE: Role(
        BACK_OFFICE,
        "Cash operations (and approving another's), account opening, status and conditions, passwords",
        (
            "brokerage.deposit",
            "brokerage.withdraw",
            "brokerage.adjust",
            "brokerage.bonus",
            "brokerage.approve_cash",
            "brokerage.open_account",
            "brokerage.change_conditions",
            "brokerage.reset_client_password",
        ),
    ),
    RISK: Role(
        RISK,
        "Client groups, leverage, routing rules, venues and FIX sessions, the kill switch",
        (
            "brokerage.set_trading_state",
            "brokerage.add_clientgroup",
            "brokerage.change_clientgroup",
            "brokerage.add_groupinstrument",
            "brokerage.change_groupinstrument",
            "brokerage.delete_groupinstrument",
            "brokerage.change_conditions",
            "fix.add_routingrule",
            "fix.change_routingrule",
            "fix.delete_routingrule",
            "fix.change_fixsession",
            "marketdata.change_venue",
            "marketdata.import_instruments",
            "marketdata.change_watchlist",
            "marketdata.change_instrument",
            "marketdata.run_backfill",
        ),
    ),
    ADMINISTRATOR: Role(
        ADMINISTRATOR,
        "Users, API keys and roles",
        (
            "users.add_user",
            "users.change_user",
            "users.view_user",
            "users.add_apikey",
            "users.change_apikey",
            "users.view_apikey",
            "users.issue_for_others",
            "auth.add_group",
            "auth.change_group",
            "auth.view_group",
            "auth.view_permission",
            "otp_totp.add_totpdevice",
            "otp_totp.change_totpdevice",
            "otp_totp.delete_totpdevice",
            "otp_totp.view_totpdevice",
            "otp_static.add_staticdevice",
            "otp_static.change_staticdevice",
            "otp_static.delete_staticdevice",
            "otp_static.view_staticdevice",
        ),
    ),
}


def _permission_rows(apps: Any, names: list[str], *, strict: bool) -> list[Any]:
    permission_model = apps.get_model("auth", "Permission")
    found = []
    for name in names:
        app_label, codename = name.split(".", 1)
        row = permission_model.objects.filter(content_type__app_label=app_label, codename=codename).first()
        if row is None:
            if strict:
                raise LookupError(f"Role permission {name} does not exist.")
            continue
        found.append(row)
    return found


def roles_migrate(apps: Any, schema_editor: Any) -> None:
    """A data migration's step: the permissions first (Django makes them only after migrate, in
    post_migrate), then the role groups from the table. Each migration that changes the table runs it.
    An earlier one, run on a new database, runs it with today's table: a permission of a model that a
    later migration makes does not exist yet then, and is granted by the later one."""
    from django.contrib.auth.management import create_permissions

    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None
    roles_sync(apps, strict=False)


def roles_sync(apps: Any, *, strict: bool = True) -> None:
    """Create or update the role groups to hold exactly the table's permissions (and the viewer's).
    `strict`: a permission of the table that does not exist is an error (else it is left out)."""
    permission_model = apps.get_model("auth", "Permission")
    group_model = apps.get_model("auth", "Group")
    viewing = list(
        permission_model.objects.filter(content_type__app_label__in=VIEW_APPS, codename__startswith="view_")
    ) + _permission_rows(apps, list(VIEW_EXTRA), strict=strict)
    for role in ROLES.values():
        group, _ = group_model.objects.get_or_create(name=role.name)
        group.permissions.set([*viewing, *_permission_rows(apps, list(role.permissions), strict=strict)])


def role_permissions(role: str) -> set[str]:
    """The permissions a role's group holds, as `app.codename` (for checks and tests)."""
    from django.contrib.auth.models import Group

    group = Group.objects.get(name=role)
    return {
        f"{app}.{codename}"
        for app, codename in group.permissions.values_list("content_type__app_label", "codename")
    }
