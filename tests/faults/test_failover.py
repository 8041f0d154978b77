"""Leader failover on the real market processes: two `runmarket` (a leader and a standby) on a
private redis-server. The leader is SIGKILLed, or frozen with SIGSTOP past its lease and woken once
the standby leads: the standby takes over within the lease's TTL, no (symbol, seq) is stored twice,
and the old leader sends no frame after the takeover."""

import signal
import time
from pathlib import Path

import pytest

from marketdata.demo import demo_seed
from tests.faults.processes import TTL_S, Frames, duplicate_seqs, lease_holder, start_pair, ticker_seq
from tests.support.servers import private_redis
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


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
