"""A property-based pass over the live OpenAPI schema (schemathesis), in process through the WSGI app,
as anonymous, a trader and an operator: no server error, and every response conforms to the schema
(its status code documented, its body matching the documented shape, errors included)."""

from collections.abc import Callable
from typing import Any

import pytest
import schemathesis
from django.core.wsgi import get_wsgi_application
from hypothesis import HealthCheck, given, settings
from hypothesis.stateful import run_state_machine_as_test
from rest_framework_simplejwt.tokens import RefreshToken
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance

from brokerage.models import ClientGroup, TradingAccount
from tests.support.trading import open_account
from tests.support.users import make_client, make_operator
from users.models import User

pytestmark = pytest.mark.django_db(transaction=True)

CHECKS = [not_a_server_error, status_code_conformance, response_schema_conformance]
EXAMPLES_PER_OPERATION = 2
STATEFUL_STEPS = 8


def _headers(user: User | None) -> dict[str, str]:
    if user is None:
        return {}
    return {"Authorization": f"Bearer {RefreshToken.for_user(user).access_token}"}


@pytest.fixture
def api() -> Any:
    return schemathesis.openapi.from_wsgi("/api/v1/schema", get_wsgi_application())


@pytest.fixture(params=["anonymous", "trader", "operator"])
def headers(request: pytest.FixtureRequest, settings: Any) -> dict[str, str]:
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_CLASSES": []}
    trader = make_client("trader")
    group = ClientGroup.objects.create(name="standard", currency="USD", leverage=100)
    account: TradingAccount = open_account(trader, group)
    assert account.pk is not None
    users: dict[str, Callable[[], User | None]] = {
        "anonymous": lambda: None,
        "trader": lambda: trader,
        "operator": make_operator,
    }
    return _headers(users[request.param]())


def test_every_operation_answers_within_its_schema(api: Any, headers: dict[str, str]) -> None:
    failures: list[str] = []
    for result in api.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def check(case: Any) -> None:
            case.call_and_validate(headers=headers, checks=CHECKS)

        try:
            check()
        except Exception as exc:  # collect every operation's failure, then report them together
            failures.append(f"{operation.label}: {exc}")
    assert not failures, "\n\n".join(failures)


def test_stateful_links_hold(api: Any, headers: dict[str, str]) -> None:
    base = api.as_state_machine()

    class Machine(base):  # type: ignore[misc, valid-type]
        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            return {"headers": headers}

        def validate_response(self, response: Any, case: Any, **kwargs: Any) -> None:
            case.validate_response(response, checks=CHECKS)

    run_state_machine_as_test(
        Machine,
        settings=settings(
            max_examples=4,
            stateful_step_count=STATEFUL_STEPS,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        ),
    )
