"""The market loop: adapters -> LP manager -> publisher, tick recorder, candles and quote listeners.
One per deployment. Nothing here blocks the event loop: the database is read through sync_to_async
and written from the recorder's and the candle stage's own threads."""

import asyncio
import dataclasses
import json
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import cast

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import close_old_connections, connection, connections
from django.utils.module_loading import import_string

from kernel import metrics
from kernel.aio import cancel_and_wait
from kernel.db import database_conninfo
from kernel.errors import ServiceError
from kernel.redis import async_client, key
from kernel.sysevents import SystemEventKind, system_event_emit
from marketdata.adapters import adapter_class
from marketdata.adapters.base import Adapter, VenueConfig
from marketdata.lpmanager import LPManager, Output, VenueSettings
from marketdata.models import VenueSymbol
from marketdata.outputs import CandleStage, OrderBookCache
from marketdata.publisher import QuotePublisher, ticker_key
from marketdata.quotes import Quote, Trade, now_ns
from marketdata.selectors import instrument_symbols, venue_configs, warm_up_targets
from marketdata.services import candles_warm_up
from marketdata.ticks import TickRecorder, last_seqs

log = logging.getLogger(__name__)

HEALTH_KEY = "feed-health"
VENUES_KEY = "venue-health"  # per venue: adapter state, reconnects, last error
RECORDER_KEY = "tick-recorder"
WARM_UP_WORKERS = 4
SEQ_KEY = "quote-seq"  # symbol -> last published seq, no TTL: numbering survives a restart


def _connection_fields(config: VenueConfig) -> VenueConfig:
    """What an adapter's connection depends on: priorities, staleness and the demo flag change
    without a reconnect."""
    return dataclasses.replace(config, priority=0, stale_after_ms=0, symbol_priority={}, simulated=False)


def venue_settings(config: VenueConfig) -> VenueSettings:
    """What the LP manager selects on, from a venue's config."""
    return VenueSettings(
        priority=config.priority,
        stale_after_ms=_stale_after_ms(config),
        simulated=config.simulated,
        symbol_priority=dict(config.symbol_priority),
        symbols=frozenset(config.symbols.values()),
    )


def _system_event(kind: str, subject: str, text: str) -> None:
    if kind == "venue.failover":
        metrics.FAILOVERS.labels(symbol=subject).inc()
    else:
        up = kind == "venue.up"
        metrics.VENUE_UP.labels(venue=subject).set(1 if up else 0)
        metrics.VENUE_TRANSITIONS.labels(venue=subject, state="up" if up else "down").inc()
    system_event_emit(SystemEventKind(kind), subject=subject, text=text)


def _stale_after_ms(config: VenueConfig) -> int:
    """The venue's staleness window, never shorter than its kind's liveness period: a venue whose
    heartbeats come every 5 s (OANDA) is not stale after 4 s of a quiet book."""
    try:
        floor = adapter_class(config.kind).min_stale_after_ms
    except (KeyError, ImportError):
        return config.stale_after_ms
    return max(config.stale_after_ms, floor)


def _stored_seqs(symbols: list[str]) -> dict[str, int]:
    with connection.cursor() as cursor:
        return last_seqs(cursor, symbols)


def _venue_configs() -> list[VenueConfig]:
    close_old_connections()  # a long-lived thread: drop a connection a database restart broke
    return venue_configs()


class MarketLoop:
    def __init__(
        self,
        *,
        check_interval_s: float = 0.1,
        reload_interval_s: float = 2.0,
        extra_outputs: list[Output] | None = None,
        leading: Callable[[], bool] = lambda: True,
        fence: tuple[str, int] = ("market", 0),
    ) -> None:
        # `leading`: this process's leader lease is still valid on its own clock (runmarket's lease).
        # A process frozen past its lease (SIGSTOP, a VM pause) that wakes up numbers, publishes
        # and records nothing until it renews, or steps down. `fence` (the lease's name and fence
        # number) goes with every write: Redis and PostgreSQL refuse it once a newer leader's is
        # recorded, whatever this process's clock says.
        self.publisher = QuotePublisher(leading=leading, fence=fence)
        self.recorder = TickRecorder(
            database_conninfo(),
            flush_interval_s=settings.TICK_FLUSH_INTERVAL_S,
            max_buffer=settings.TICK_BUFFER_MAX,
            days_back=settings.TICK_RETENTION_DAYS,
            fence=fence,
        )
        self.candles = CandleStage(fence=fence)
        self.books = OrderBookCache()
        self.listeners: list[Output] = [import_string(path) for path in settings.QUOTE_LISTENERS]
        self.manager = LPManager(
            {},
            outputs=[self.publisher, self.recorder, self.candles, *self.listeners, *(extra_outputs or [])],
            allow_simulated=settings.LIVERMORE_DEMO,
            leading=leading,
            events=_system_event,
        )
        self.check_interval_s = check_interval_s
        self.max_future_ns = int(settings.QUOTE_MAX_FUTURE_S * 1_000_000_000)
        self.reload_interval_s = reload_interval_s
        self.adapters: dict[str, tuple[VenueConfig, Adapter, asyncio.Task[None]]] = {}
        self.broken: dict[str, VenueConfig] = {}  # venues whose adapter could not be built
        self.refused: set[str] = set()  # simulated venues a live deployment does not run
        self.trades_unselected = 0  # trades of a venue not selected for their symbol: not in bars
        # History: at start and after a venue's reconnect, backfill what is missing so every
        # instrument has CANDLE_WARMUP_BARS closed bars per timeframe. One at a time, in a thread.
        self.warmup_bars = settings.CANDLE_WARMUP_BARS
        self.history = ThreadPoolExecutor(max_workers=1, thread_name_prefix="history")
        self.history_tasks: set[asyncio.Task[None]] = set()
        self.history_stop = threading.Event()
        self.connects_seen: dict[str, int] = {}
        self.last_message_seen: dict[str, int] = {}  # per venue, at the previous check (epoch ns)
        self.gaps: dict[str, int] = {}  # venue -> start of a gap not yet backfilled (epoch ns)
        self.gap_fill: asyncio.Task[None] | None = None
        self.warmed_up = asyncio.Event()  # the start's warm-up ended (done or failed)
        self.warm_up_s: float | None = None
        self.warm_ups = 0

    def on_quote(self, quote: Quote) -> None:
        """The adapters' sink. A quote stamped too far ahead of its receipt is refused as malformed:
        it would close every open bar early and make all later quotes late."""
        if quote.venue_ts - quote.recv_ts > self.max_future_ns:
            entry = self.adapters.get(quote.venue)
            if entry is not None:
                entry[1].malformed(quote, ValueError("venue timestamp in the future"))
            else:
                log.warning("venue=%s quote refused: venue timestamp in the future: %r", quote.venue, quote)
            return
        self.books(quote)
        self.manager.on_quote(quote)

    def on_trade(self, trade: Trade) -> None:
        """The adapters' trade sink. Only the selected venue's trades make a symbol's bars: on a
        failover the next venue's trades (or mid, if it has no trade feed) continue the series, and
        the bar in progress at the switch is marked partial (see marketdata/candles.py)."""
        if trade.venue_ts - trade.recv_ts > self.max_future_ns:
            entry = self.adapters.get(trade.venue)
            if entry is not None:
                entry[1].malformed(trade, ValueError("venue timestamp in the future"))
            return
        if self.manager.selected.get(trade.symbol) != trade.venue:
            self.trades_unselected += 1
            return
        self.candles.on_trade(trade)

    async def run(self) -> None:
        try:
            await self.restore()
        except Exception:
            log.exception("state of the previous run not restored")
        self.recorder.start()
        self.schedule_warm_up(None)
        jobs = [
            asyncio.create_task(self.publisher.run(), name="publisher"),
            asyncio.create_task(self.candles.run(), name="candles"),
            asyncio.create_task(self._every(self.check_interval_s, self.manager.check), name="check"),
            asyncio.create_task(self._every(self.reload_interval_s, self.reload), name="reload"),
            asyncio.create_task(self._every(1.0, self.tick), name="tick"),
        ]
        try:
            # The jobs run until cancelled; the first to fail ends the loop (and the process).
            done, _ = await asyncio.wait(jobs, return_when=asyncio.FIRST_EXCEPTION)
            for job in done:
                job.result()
        finally:
            # Not a TaskGroup: it cancels its tasks once, and one job that swallowed that (a shutdown
            # seen hanging under load) would keep the process from stopping and flushing.
            await cancel_and_wait(*jobs)
            await self.shutdown()

    async def restore(self) -> None:
        """Pick up where the previous run stopped: per-symbol seq numbers, then open candles.

        Seq numbers continue after the highest of the stored ticks, the saved numbers and the
        ticker cache: a Redis that restarted empty never makes them go backwards."""
        symbols = await sync_to_async(instrument_symbols)()
        try:
            self.manager.seed_seq(await sync_to_async(_stored_seqs)(symbols))
        except Exception:
            log.exception("seq numbers of the stored ticks not read")
        try:
            self.manager.seed_seq(await self._cached_seqs(symbols))
        except Exception:
            log.exception("seq numbers in Redis not read: numbering continues from the stored ticks")
        try:
            await self.candles.restore(symbols, now_ns())
        except Exception:
            log.exception("open candles not restored: the current bars start from the first quote")

    async def _cached_seqs(self, symbols: list[str]) -> dict[str, int]:
        redis = async_client()
        tickers = await redis.mget([ticker_key(s) for s in symbols]) if symbols else []
        saved = await cast("Awaitable[dict[bytes, bytes]]", redis.hgetall(key(SEQ_KEY)))
        seqs = {k.decode(): int(v) for k, v in saved.items()}
        for symbol, raw in zip(symbols, tickers):
            if raw:
                seqs[symbol] = max(seqs.get(symbol, 0), int(json.loads(raw)["seq"]))
        return seqs

    def schedule_warm_up(
        self, venue_codes: set[str] | None, gap_from: int | None = None
    ) -> asyncio.Task[None] | None:
        """Warm up every instrument (None: at start) or those quoted by `venue_codes` after a
        reconnect gap that began at `gap_from` (epoch s), in the history thread; the hourly beat
        backfill keeps them current after."""
        if self.warmup_bars <= 0:
            self.warmed_up.set()
            return None
        task = asyncio.create_task(self.warm_up(venue_codes, gap_from), name="warm-up")
        self.history_tasks.add(task)
        task.add_done_callback(self.history_tasks.discard)
        return task

    async def warm_up(self, venue_codes: set[str] | None, gap_from: int | None = None) -> None:
        began = time.monotonic()
        try:
            await asyncio.get_running_loop().run_in_executor(
                self.history, self._warm_up, venue_codes, gap_from
            )
        except Exception:
            log.exception("candle warm-up failed (venues %s)", venue_codes or "all")
        finally:
            self.warm_ups += 1
            if venue_codes is None:
                self.warm_up_s = time.monotonic() - began
                self.warmed_up.set()

    def _warm_up(self, venue_codes: set[str] | None, gap_from: int | None) -> None:
        close_old_connections()
        targets = warm_up_targets(venue_codes=venue_codes)
        # A few instruments at a time: most of a fetch is waiting on the venue and the database.
        # Each client still honours its venue's 429s and Retry-After.
        with ThreadPoolExecutor(max_workers=WARM_UP_WORKERS, thread_name_prefix="history-fetch") as pool:
            list(pool.map(lambda vs: self._warm_up_one(vs, gap_from), targets))
        log.info("candle warm-up of %d instrument(s) done (venues %s)", len(targets), venue_codes or "all")

    def _warm_up_one(self, vs: VenueSymbol, gap_from: int | None) -> None:
        if self.history_stop.is_set():
            return
        try:
            have = candles_warm_up(
                instrument=vs.instrument, venue=vs.venue, bars=self.warmup_bars, gap_from=gap_from
            )
        except ServiceError as exc:
            log.warning("venue=%s warm-up of %s failed: %s", vs.venue.code, vs.instrument.symbol, exc)
            return
        except Exception:
            log.exception("venue=%s warm-up of %s failed", vs.venue.code, vs.instrument.symbol)
            return
        finally:
            connections.close_all()  # this pool's threads end with the warm-up
        short = {tf: n for tf, n in have.items() if n < self.warmup_bars}
        if short:
            log.warning(
                "venue=%s warm-up of %s: fewer than %d bars on %s",
                vs.venue.code,
                vs.instrument.symbol,
                self.warmup_bars,
                short,
            )

    def check_reconnects(self) -> None:
        """A venue that connected again after a gap: backfill the hole in its instruments' bars.
        Gaps seen while a gap fill runs wait for it and go in the next one (a flapping venue
        does not queue a fill per reconnect)."""
        now = now_ns()
        for code, (_, adapter, _) in self.adapters.items():
            connects = adapter.stats.connects
            seen = self.connects_seen.get(code, 0)
            if connects > seen:
                self.connects_seen[code] = connects
                if seen > 0:
                    # The last message before the drop, as seen at the previous check.
                    began = self.last_message_seen.get(code) or now
                    self.gaps[code] = min(self.gaps.get(code, began), began)
            self.last_message_seen[code] = adapter.stats.last_message_ns
        if self.gaps and (self.gap_fill is None or self.gap_fill.done()):
            codes, gap_from = set(self.gaps), min(self.gaps.values())
            self.gaps.clear()
            log.info("venues %s reconnected: backfilling their gap", ", ".join(sorted(codes)))
            self.gap_fill = self.schedule_warm_up(codes, gap_from // 1_000_000_000)

    async def save_seq(self) -> None:
        if self.manager.seq:
            await cast("Awaitable[int]", async_client().hset(key(SEQ_KEY), mapping=dict(self.manager.seq)))

    async def shutdown(self) -> None:
        """Stop adapters, then flush what is buffered: ticks to PostgreSQL, closed bars to storage."""
        tasks = [task for _, _, task in self.adapters.values()]
        for _, adapter, _ in self.adapters.values():
            # The manager stops with the loop: no failover to publish (its seq would outlive nothing
            # that saw it, and the next run would number from before it).
            adapter.listener = None
        self.adapters.clear()
        self.history_stop.set()
        await cancel_and_wait(*tasks, *self.history_tasks)
        # A warm-up in its thread finishes its current instrument, then the thread closes its
        # database connection and ends.
        await asyncio.get_running_loop().run_in_executor(self.history, connections.close_all)
        self.history.shutdown(wait=True)
        await asyncio.to_thread(self.recorder.stop)
        try:
            await self.save_seq()
        except Exception:
            log.exception("quote seq numbers not saved: the next run continues from the ticker cache")
        await self.candles.shutdown()
        await asyncio.to_thread(self.candles.close)
        for listener in self.listeners:  # no quote comes any more: their work in flight finishes
            stop = getattr(listener, "stop", None)
            if stop is not None:
                try:
                    await asyncio.to_thread(stop)
                except Exception:
                    log.exception("quote listener %r did not stop cleanly", listener)
        await sync_to_async(connections.close_all)()

    async def _every(self, interval_s: float, fn: Callable[[], object]) -> None:
        while True:
            try:
                result = fn()
                if asyncio.iscoroutine(result):
                    await result
            except Exception:
                log.exception("market loop job %s failed", getattr(fn, "__name__", fn))
            await asyncio.sleep(interval_s)

    async def tick(self) -> None:
        """Once a second: close bars whose end passed, refresh the order-book cache, export health."""
        self.candles.close_due(now_ns())
        self.check_reconnects()
        await self.books.flush()
        await self.export_health()

    async def reload(self) -> None:
        """Start, stop or restart adapters to match the database; apply priorities live."""
        configs = {c.code: c for c in await sync_to_async(_venue_configs)()}
        if not settings.LIVERMORE_DEMO:
            # A live deployment never runs a simulated venue, even one enabled while it runs (runmarket
            # refuses to start with one; the admin refuses to enable one).
            refused = {code for code, c in configs.items() if c.simulated}
            for code in sorted(refused - self.refused):
                log.error("venue=%s not started: simulated, and this deployment is live", code)
            self.refused = refused
            for code in refused:
                del configs[code]
        self.manager.configure({c.code: venue_settings(c) for c in configs.values()})
        for code, (config, _, task) in list(self.adapters.items()):
            if code not in configs or _connection_fields(configs[code]) != _connection_fields(config):
                # Out of the table first: while the task unwinds, nothing may still see it as running.
                del self.adapters[code]
                self.candles.trade_venues.discard(code)
                await cancel_and_wait(task)
                log.info("venue=%s stopped (%s)", code, "changed" if code in configs else "disabled")
        for code, config in configs.items():
            if code in self.adapters or self.broken.get(code) == config:
                continue
            try:
                adapter = adapter_class(config.kind)(
                    config, self.on_quote, listener=self.manager, trade_sink=self.on_trade
                )
            except Exception as exc:
                # One venue that cannot be built (unknown kind, bad config) never stops the others;
                # it is retried when its row changes.
                self.broken[code] = config
                log.error("venue=%s not started (%s): %s: %s", code, config.kind, type(exc).__name__, exc)
                continue
            self.broken.pop(code, None)
            self.adapters[code] = (config, adapter, asyncio.create_task(adapter.run(), name=f"venue-{code}"))
            if adapter.streams_trades:
                self.candles.trade_venues.add(code)
            log.info("venue=%s started (%s, %d symbols)", code, config.kind, len(config.symbols))

    async def export_health(self) -> None:
        """Per-(venue, symbol) health and the recorder's counters into Redis for the admin."""
        now = now_ns()
        rows = self.manager.health_rows(now)
        for row in rows:
            row["exported_ms"] = now // 1_000_000  # readers add the time since, see feed_health()
            adapter = self.adapters.get(str(row["venue"]))
            row["adapter_state"] = adapter[1].stats.state if adapter else "stopped"
            row["malformed"] = adapter[1].stats.malformed if adapter else 0
        venues = [
            {
                "venue": code,
                "kind": config.kind,
                "state": adapter.stats.state,
                "connects": adapter.stats.connects,
                "reconnects": adapter.stats.disconnects,
                "throttled": adapter.stats.throttled,
                "messages": adapter.stats.messages,
                "silent_ms": (now - adapter.stats.last_message_ns) // 1_000_000
                if adapter.stats.last_message_ns
                else None,
                "last_error": adapter.stats.last_error,
                "last_error_ms": adapter.stats.last_error_ns // 1_000_000 or None,
                "exported_ms": now // 1_000_000,
            }
            for code, (config, adapter, _) in sorted(self.adapters.items())
        ]
        recorder = {
            **self.recorder.stats(),
            "candles_late": self.candles.builder.late,
            "candles_stored": self.candles.stored,
            "candles_unstored": len(self.candles.unstored),
            "trades": self.candles.trades,
            "trades_duplicate": self.candles.trades_duplicate,
            "trades_unselected": self.trades_unselected,
            "fenced": self.manager.fenced + self.publisher.fenced + self.candles.fenced,
        }
        async with async_client().pipeline(transaction=False) as pipe:
            pipe.set(key(HEALTH_KEY), json.dumps(rows), ex=30)
            pipe.set(key(RECORDER_KEY), json.dumps(recorder), ex=30)
            pipe.set(key(VENUES_KEY), json.dumps(venues), ex=30)
            if self.manager.seq:
                pipe.hset(key(SEQ_KEY), mapping=dict(self.manager.seq))
            await pipe.execute()
