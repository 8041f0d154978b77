"""The market processes of the fault tests: `runmarket` leaders and standbys on a private
redis-server, the quote frames they send, and what they stored."""

import itertools
import json
import signal
import subprocess
import sys
import threading
from collections import defaultdict
from pathlib import Path
from typing import Any, cast

from channels_redis.pubsub import RedisPubSubChannelLayer
from django.db import connection

from tests.support.servers import PrivateRedis
from tests.support.stack import ROOT, stack_env
from tests.support.waiting import wait_until

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


def market_env(server: PrivateRedis, ttl_s: float = TTL_S) -> dict[str, str]:
    return stack_env(REDIS_URL=server.url, CELERY_BROKER_URL=server.url, MARKET_LEASE_TTL_S=str(ttl_s))


def start_leader(tmp_path: Path, server: PrivateRedis, env: dict[str, str], name: str = "leader") -> Market:
    """A runmarket that holds the lease and has published a quote."""
    prefix = env["REDIS_PREFIX"]
    leader = Market(tmp_path, name, env)
    wait_until(lambda: f":{leader.process.pid}:" in lease_holder(server, prefix), timeout_s=60)
    wait_until(lambda: ticker_seq(server, prefix) > 0, timeout_s=30)
    return leader


def start_pair(tmp_path: Path, server: PrivateRedis, ttl_s: float = TTL_S) -> tuple[Market, Market, str]:
    env = market_env(server, ttl_s)
    prefix = env["REDIS_PREFIX"]
    leader = start_leader(tmp_path, server, env)
    standby = Market(tmp_path, "standby", env)
    wait_until(lambda: "waiting" in standby.output(), timeout_s=60)
    return leader, standby, prefix
