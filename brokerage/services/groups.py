"""Client groups as an operator edits them: the group, its per-instrument settings, deletion; each
change audited in the same transaction."""

from collections.abc import Iterable, Sequence

from django.db import transaction

from users.models import User
from users.services import audit_record

from ..models import ClientGroup, GroupInstrument
from .accounts import GroupRemargin, group_positions_remargin


@transaction.atomic
def group_save(
    *, group: ClientGroup, created: bool, changes: dict[str, str], actor: User
) -> GroupRemargin | None:
    """Save an operator's new or edited group (`changes`: the edited fields' new values); audited.
    A leverage edit re-margins the positions of the accounts following the group (its result)."""
    group.save()
    audit_record(
        actor=actor,
        action="group.create" if created else "group.change",
        target=group,
        details={"changes": changes},
    )
    if created or "leverage" not in changes:
        return None
    return group_positions_remargin(group=group, actor=actor)


@transaction.atomic
def group_instruments_save(
    *,
    group: ClientGroup,
    new: Sequence[GroupInstrument],
    changed: Sequence[tuple[GroupInstrument, Sequence[str]]],
    deleted: Sequence[GroupInstrument],
    actor: User,
) -> None:
    """Apply an operator's edits of a group's per-instrument settings; each one audited."""
    for obj in deleted:
        audit_record(actor=actor, action="group_instrument.delete", target=obj, details={"group": group.name})
        obj.delete()
    for obj, _ in changed:
        obj.save()
    for obj in new:
        obj.save()
    for obj in new:
        audit_record(actor=actor, action="group_instrument.create", target=obj, details={"group": group.name})
    for obj, fields in changed:
        audit_record(
            actor=actor,
            action="group_instrument.change",
            target=obj,
            details={"group": group.name, "changes": {name: str(getattr(obj, name)) for name in fields}},
        )


@transaction.atomic
def groups_delete(*, groups: Iterable[ClientGroup], actor: User) -> None:
    """Delete groups no account uses (the admin refuses protected ones first); each one audited."""
    for group in groups:
        audit_record(actor=actor, action="group.delete", target=group)
        group.delete()
