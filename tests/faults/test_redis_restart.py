"""A Redis restart under load, on the real processes (`web` and `market` under the supervisor) and a
private redis-server that the test kills and starts again, empty, two seconds later."""

import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.db import connection

from marketdata.demo import demo_seed
from tests.support.servers import private_redis
from tests.support.stack import Stack, run_stack
from tests.support.users import PASSWORD

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

OUTAGE_S = 2.0


def ticks_since(ts: float) -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM marketdata_tick WHERE ts > to_timestamp(%s)", [ts])
        return int(cursor.fetchone()[0])


def duplicate_seqs() -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM (SELECT 1 FROM marketdata_tick GROUP BY symbol, seq HAVING count(*) > 1) d"
        )
        return int(cursor.fetchone()[0])


class Load:
    """Clients polling while the fault happens: /healthz, and a REST read that needs no Redis."""

    def __init__(self, stack: Stack, token: str) -> None:
        self.stack, self.token = stack, token
        self.requests = {"healthz": 0, "accounts": 0}
        self.failed: dict[str, list[Any]] = {"healthz": [], "accounts": []}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        headers = {"Authorization": f"Bearer {self.token}"}
        with httpx.Client(base_url=self.stack.url, timeout=5) as client:
            while not self.stop.is_set():
                for name, path, request_headers in (
                    ("healthz", "/healthz", {}),
                    ("accounts", "/api/v1/accounts", headers),
                ):
                    self.requests[name] += 1
                    status: int | str
                    try:
                        status = client.get(path, headers=request_headers).status_code
                    except httpx.HTTPError as exc:
                        status = repr(exc)
                    if status != 200:
                        self.failed[name].append(status)
                time.sleep(0.05)


def test_a_two_second_redis_restart_stops_no_process_and_the_desk_recovers(
    tmp_path: Path, tick_table: None, alice: Any
) -> None:
    demo_seed()
    with (
        private_redis(tmp_path) as redis_server,
        run_stack(
            tmp_path,
            "web",
            "market",
            REDIS_URL=redis_server.url,
            CELERY_BROKER_URL=redis_server.url,
        ) as stack,
    ):
        stack.wait_http("/readyz", timeout=60)
        token = httpx.post(
            stack.url + "/api/v1/auth/token", json={"username": "alice", "password": PASSWORD}
        ).json()["access"]
        load = Load(stack, token)
        load.thread.start()
        time.sleep(2)
        redis_server.kill()
        killed = time.time()
        time.sleep(OUTAGE_S)
        redis_server.start()
        back = time.monotonic()
        stack.wait_http("/readyz", timeout=30)  # fresh quotes in the ticker cache again
        recovered_s = time.monotonic() - back
        time.sleep(2)
        load.stop.set()
        load.thread.join(10)
        recorded_after = ticks_since(killed + OUTAGE_S + 0.5)
        stack.stop()
        output = stack.output()
    print(
        f"redis restart: ready again {recovered_s:.2f}s after Redis returned; "
        f"requests {load.requests}, failed {load.failed}; ticks recorded after {recorded_after}"
    )
    for name in ("web", "market"):
        assert output.count(f"{name}.1 started") == 1, output[-4000:]  # nothing exited and restarted
    assert recovered_s < 5
    assert load.failed == {"healthz": [], "accounts": []}
    assert recorded_after > 0
    assert duplicate_seqs() == 0
    assert "stepped down" not in output
