"""Leader failover on the real market processes: two `runmarket` (a leader and a standby) on a
private redis-server. The leader is SIGKILLed, or frozen with SIGSTOP past its lease and woken once
the standby leads: the standby takes over within the lease's TTL, no (symbol, seq) is stored twice,
and the old leader sends no frame after the takeover."""

import itertools
import json
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, cast

import pytest
from channels_redis.pubsub import RedisPubSubChannelLayer
from django.db import connection

from marketdata.demo import demo_seed
from tests.support.servers import PrivateRedis, private_redis
from tests.support.stack import ROOT, stack_env
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

TTL_S = 4.0


def duplicate_seqs() -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM (SELECT 1 FROM marketdata_tick GROUP BY symbol, seq HAVING count(*) > 1) d"
        )
        return int(cursor.fetchone()[0])


class Market:
    def __init__(self, tmp_path: Path, name: str, env: dict[str, str]) -> None:
        self.log = tmp_path / f"{name}.log"
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "manage.py", "runmarket"],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


class Frames:
    """Every quote frame the market processes send to the stream, in the order Redis delivers them."""

    def __init__(self, server: PrivateRedis, prefix: str) -> None:
        self.layer = RedisPubSubChannelLayer(hosts=[server.url], prefix=f"{prefix}:ch")
        self.pubsub = server.client().pubsub(ignore_subscribe_messages=True)
        self.pubsub.psubscribe(f"{prefix}:ch*")
        self.seqs: dict[str, list[int]] = defaultdict(list)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        while not self.stop.is_set():
            message = self.pubsub.get_message(timeout=0.2)
            if message is None:
                continue
            body: dict[str, Any] = self.layer.deserialize(message["data"])
            for env in body.get("envelopes", [body]):
                if env.get("event") == "quote" and env.get("targets", [[""]])[0][0].startswith("quotes."):
                    self.seqs[env["key"]].append(env["seq"])

    def regressions(self) -> int:
        """Frames whose seq is not above the symbol's previous frame (an old leader's)."""
        return sum(1 for seqs in self.seqs.values() for a, b in itertools.pairwise(seqs) if b <= a)

    def count(self) -> int:
        return sum(len(s) for s in self.seqs.values())


def lease_holder(server: PrivateRedis, prefix: str) -> str:
    raw = cast(bytes | None, server.client().get(f"{prefix}:lease:market"))
    return raw.decode() if raw else ""


def ticker_seq(server: PrivateRedis, prefix: str) -> int:
    raw = cast(bytes | None, server.client().get(f"{prefix}:ticker:EURUSD"))
    return int(json.loads(raw)["seq"]) if raw else 0


def start_pair(tmp_path: Path, server: PrivateRedis) -> tuple[Market, Market, str]:
    env = stack_env(REDIS_URL=server.url, CELERY_BROKER_URL=server.url, MARKET_LEASE_TTL_S=str(TTL_S))
    prefix = env["REDIS_PREFIX"]
    leader = Market(tmp_path, "leader", env)
    wait_until(lambda: f":{leader.process.pid}:" in lease_holder(server, prefix), timeout_s=60)
    wait_until(lambda: ticker_seq(server, prefix) > 0, timeout_s=30)
    standby = Market(tmp_path, "standby", env)
    wait_until(lambda: "waiting" in standby.output(), timeout_s=60)
    return leader, standby, prefix


def test_a_killed_leader_is_replaced_within_its_ttl_with_no_seq_stored_twice(
    tmp_path: Path, tick_table: None
) -> None:
    demo_seed()
    with private_redis(tmp_path) as server:
        leader, standby, prefix = start_pair(tmp_path, server)
        frames = Frames(server, prefix)
        try:
            time.sleep(1.5)
            seq_at_kill = ticker_seq(server, prefix)
            leader.process.kill()
            killed = time.monotonic()
            wait_until(lambda: f":{standby.process.pid}:" in lease_holder(server, prefix), timeout_s=15)
            wait_until(lambda: ticker_seq(server, prefix) > seq_at_kill, timeout_s=15)
            failover_s = time.monotonic() - killed
            time.sleep(1.5)
            assert standby.stop() == 0, standby.output()[-3000:]
        finally:
            frames.stop.set()
            leader.stop()
            standby.stop()
        frames.thread.join(2)
    print(
        f"SIGKILL failover: quotes again {failover_s:.2f}s after the kill (TTL {TTL_S}s); "
        f"frames {frames.count()}, out of order {frames.regressions()}, duplicate seqs {duplicate_seqs()}"
    )
    assert failover_s < 5
    assert duplicate_seqs() == 0
    assert frames.regressions() == 0


def test_a_leader_frozen_past_its_lease_writes_and_sends_nothing_when_it_wakes(
    tmp_path: Path, tick_table: None
) -> None:
    demo_seed()
    with private_redis(tmp_path) as server:
        leader, standby, prefix = start_pair(tmp_path, server)
        frames = Frames(server, prefix)
        try:
            time.sleep(1.5)
            seq_at_stop = ticker_seq(server, prefix)
            leader.process.send_signal(signal.SIGSTOP)
            stopped = time.monotonic()
            wait_until(lambda: f":{standby.process.pid}:" in lease_holder(server, prefix), timeout_s=15)
            wait_until(lambda: ticker_seq(server, prefix) > seq_at_stop, timeout_s=15)
            failover_s = time.monotonic() - stopped
            time.sleep(1.0)
            leader.process.send_signal(signal.SIGCONT)
            wait_until(lambda: "stepped down" in leader.output(), timeout_s=10)
            time.sleep(2.0)
            assert f":{standby.process.pid}:" in lease_holder(server, prefix)
            assert leader.process.poll() is None  # it stands by again
            assert standby.stop() == 0, standby.output()[-3000:]
            assert leader.stop() == 0, leader.output()[-3000:]
        finally:
            frames.stop.set()
            leader.stop()
            standby.stop()
        frames.thread.join(2)
    print(
        f"SIGSTOP failover: quotes again {failover_s:.2f}s after the freeze (TTL {TTL_S}s); "
        f"frames {frames.count()}, out of order {frames.regressions()}, duplicate seqs {duplicate_seqs()}"
    )
    assert failover_s < 5
    assert frames.regressions() == 0
    assert duplicate_seqs() == 0
