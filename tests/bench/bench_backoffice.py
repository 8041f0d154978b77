"""Back-office deposits through the HTTP API, served as `make run` serves it.

A back-office operator's bot (an API key of a user in the back_office role) deposits to client
accounts at a steady (open-loop) RATE per second for STEADY_S seconds, each deposit with its own
Idempotency-Key and bank reference, below the four-eyes threshold so each is applied at once:

- backoffice_deposit_api_p99_ms: the 99th percentile latency of those deposits.

Same shared set-up as the order API benchmark: a database and Redis prefix of its own, the Procfile's
`web` process on a free port, the load from another process.
"""

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from tests.bench.bench_order_api import (  # noqa: E402
    HttpClient,
    bench_env,
    fresh_database,
    latency_summary,
    open_loop,
    web_and_client,
)
from tests.bench.metric import emit  # noqa: E402

ACCOUNTS = 32
RATE = 20
WARMUP = 20
STEADY_S = 15.0
TIMEOUT_S = 30.0


def _setup(env: dict[str, str]) -> dict[str, Any]:
    fresh_database(env)
    from decimal import Decimal

    from django.contrib.auth.models import Group

    from brokerage import services
    from brokerage.models import ClientGroup
    from users.models import ApiKey, User
    from users.roles import BACK_OFFICE

    group = ClientGroup.objects.create(name="bench", currency="USD", leverage=100)
    numbers = []
    for i in range(ACCOUNTS):
        user = User.objects.create_user(f"client{i}", password=None)
        account = services.account_open(owner=user, group=group)
        services.account_deposit(account=account, amount=Decimal("1000"))
        numbers.append(account.number)
    operator = User.objects.create_user("backoffice-bot", password=None, is_staff=True)
    operator.groups.add(Group.objects.get(name=BACK_OFFICE))
    _, raw = ApiKey.issue(user=operator, name="bench")
    from django.db import connections

    connections.close_all()
    return {"numbers": numbers, "key": raw}


async def _deposit(client: HttpClient, number: int, key: str, n: int) -> tuple[float | None, str]:
    body = json.dumps({"amount": "100.00", "method": "bank", "external_ref": f"bench-{n}"}).encode()
    headers = {"Authorization": f"Api-Key {key}", "Idempotency-Key": f"bench-{n}"}
    started = time.perf_counter()
    try:
        status, payload = await asyncio.wait_for(
            client.post(f"/api/v1/backoffice/accounts/{number}/deposit", body, headers), timeout=TIMEOUT_S
        )
    except TimeoutError:
        return None, "timeout"
    if status != 201:
        return None, f"{status} {payload[:200]!r}"
    return time.perf_counter() - started, ""


async def _load(base: str, numbers: list[int], key: str) -> dict[str, Any]:
    clients = [HttpClient(base) for _ in range(4)]
    errors: list[str] = []
    latencies: list[float] = []
    try:
        for n in range(WARMUP):
            await _deposit(clients[0], numbers[n % len(numbers)], key, -1 - n)

        async def one(n: int) -> None:
            elapsed, error = await _deposit(clients[n % len(clients)], numbers[n % len(numbers)], key, n)
            if elapsed is None:
                errors.append(error)
                latencies.append(TIMEOUT_S)  # a failed deposit counts as the slowest possible
            else:
                latencies.append(elapsed)

        await open_loop(RATE, int(RATE * STEADY_S), one)
    finally:
        for client in clients:
            client.close()
    return latency_summary(latencies, errors)


def _client_main() -> None:
    config = json.loads(sys.stdin.read())
    print(json.dumps(asyncio.run(_load(config["base"], config["numbers"], config["key"]))))


def main() -> int:
    env = bench_env("backoffice")
    config = _setup(env)
    result = web_and_client(env, __file__, config)
    if result is None:
        return 1
    if result["failed"]:
        sys.stderr.write(f"failed deposits: {result['failed']}/{result['sent']}: {result['errors']}\n")
    sys.stderr.write(f"p50 {result['p50_ms']:.2f} ms over {result['sent']} deposits\n")
    emit("backoffice_deposit_api_p99_ms", result["p99_ms"], "ms", "<= 50")
    return 0


if __name__ == "__main__":
    if "--client" in sys.argv:
        _client_main()
    else:
        sys.exit(main())
