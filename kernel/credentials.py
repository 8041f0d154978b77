"""Credentials that go only where they belong.

- A credential named by an operator as an environment variable (a FIX session's `password_env`)
  must carry ENV_SECRET_PREFIX, so that no setting can point one at the server's own secrets
  (SECRET_KEY, DATABASE_URL, JWT_SIGNING_KEY, ...) and send them to a counterparty.
- A model whose credentials are sent to a destination it stores (a host and port, URLs) clears them
  when that destination changes, unless new ones are entered in the same save: a credential can never
  be redirected to another server.
"""

import os
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar

from django.core.exceptions import ValidationError
from django.db import models

ENV_SECRET_PREFIX = "LIVERMORE_SECRET_"  # noqa: S105  a name prefix, not a secret


def env_secret_name_errors(name: str) -> list[str]:
    if not name.startswith(ENV_SECRET_PREFIX) or len(name) == len(ENV_SECRET_PREFIX):
        return [f"Only environment variables named {ENV_SECRET_PREFIX}<NAME> may hold a credential."]
    return []


def validate_env_secret_name(name: str) -> None:
    if name and (errors := env_secret_name_errors(name)):
        raise ValidationError(errors)


def secret_from_env(name: str) -> str:
    """The credential in environment variable `name`; ValueError if the name lacks the prefix."""
    if errors := env_secret_name_errors(name):
        raise ValueError(errors[0])
    return os.environ.get(name, "")


class DestinationBoundCredentials(models.Model):
    """Clears `credential_fields` (text) on a save that changes `destination()` but not the credentials."""

    credential_fields: ClassVar[Sequence[str]] = ()
    _saved_destination: Any = None
    _saved_credentials: tuple[Any, ...] | None = None

    class Meta:
        abstract = True

    def save(self, *args: Any, **kwargs: Any) -> None:
        moved = self._saved_credentials is not None and self.destination() != self._saved_destination
        if moved and self._credentials() == self._saved_credentials:
            for name in self.credential_fields:
                setattr(self, name, "")
            if kwargs.get("update_fields") is not None:
                kwargs["update_fields"] = {*kwargs["update_fields"], *self.credential_fields}
        super().save(*args, **kwargs)
        self._remember_destination()

    def destination(self) -> Any:
        """Everything that says where the credentials are sent; compared with ==."""
        raise NotImplementedError

    @classmethod
    def from_db(cls, db: str | None, field_names: Iterable[str], values: Iterable[Any]) -> Any:
        instance = super().from_db(db, field_names, values)  # type: ignore[arg-type]
        if not instance.get_deferred_fields():
            instance._remember_destination()
        return instance

    def _credentials(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in self.credential_fields)

    def _remember_destination(self) -> None:
        self._saved_destination = self.destination()
        self._saved_credentials = self._credentials()
