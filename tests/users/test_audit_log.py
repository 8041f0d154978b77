import pytest
from django.db import DatabaseError, connection, transaction
from django.http import HttpRequest, HttpResponse
from django.test import RequestFactory

from kernel.clientip import ClientAddressMiddleware
from users.models import AuditLog, User
from users.services import audit_record

pytestmark = pytest.mark.django_db


@pytest.fixture
def entry(alice: User) -> AuditLog:
    return audit_record(actor=alice, action="account.deposit", details={"amount": "100"})


def test_the_database_refuses_to_update_an_audit_entry(entry: AuditLog) -> None:
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        AuditLog.objects.filter(pk=entry.pk).update(action="account.nothing")
    with (
        pytest.raises(DatabaseError, match="append-only"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute("UPDATE users_auditlog SET details = '{}' WHERE id = %s", [entry.pk])
    entry.refresh_from_db()
    assert (entry.action, entry.details) == ("account.deposit", {"amount": "100"})


def test_the_database_refuses_to_delete_an_audit_entry(entry: AuditLog) -> None:
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        AuditLog.objects.filter(pk=entry.pk).delete()
    assert AuditLog.objects.filter(pk=entry.pk).exists()


def test_an_entry_records_the_client_address_of_the_request(alice: User, rf: RequestFactory) -> None:
    def view(request: HttpRequest) -> HttpResponse:
        audit_record(actor=alice, action="account.deposit")
        return HttpResponse()

    ClientAddressMiddleware(view)(rf.post("/", REMOTE_ADDR="198.51.100.23"))
    assert AuditLog.objects.get().ip_address == "198.51.100.23"
    assert audit_record(actor=alice, action="account.deposit").ip_address is None
