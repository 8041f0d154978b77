"""coinbase_l2_updates_per_s: Coinbase `level2` frames (the wire JSON, one connection-wide sequence)
through the adapter's handler into one order book per product, each changed top of book published
as a Quote through the LP manager to an output, in one process.

Four products, books 2,000 levels deep per side from their snapshots, then 1 to 10 level updates per
message (Coinbase batches them), most of them near the inside, a third of them removals, so the best
bid or ask moves often and the removal of a best level makes the book look for the next one."""

import json
import random
import sys
import time
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from marketdata.adapters.base import VenueConfig
from marketdata.adapters.coinbase import CoinbaseAdapter
from marketdata.adapters.streaming import ns_to_rfc3339
from marketdata.lpmanager import LPManager, VenueSettings
from marketdata.quotes import SelectedQuote
from tests.bench.metric import emit

PRODUCTS = {"BTC-USD": "95000.00", "ETH-USD": "3400.00", "SOL-USD": "180.00", "XRP-USD": "2.5000"}
DEPTH = 2000
MESSAGES = 60_000
START_NS = 1_780_000_000 * 1_000_000_000


def frames(rng: random.Random) -> tuple[list[str], int]:
    """The snapshot messages, then the update messages; and the number of level updates in them."""
    out: list[str] = []
    seq = 0
    ts = START_NS

    def envelope(events: list[dict[str, object]]) -> str:
        nonlocal seq
        message = {
            "channel": "l2_data",
            "client_id": "",
            "timestamp": ns_to_rfc3339(ts),
            "sequence_num": seq,
            "events": events,
        }
        seq += 1
        return json.dumps(message)

    ticks = {p: int(Decimal(mid).as_tuple().exponent) for p, mid in PRODUCTS.items()}
    levels: dict[str, dict[str, set[int]]] = {}
    for product, mid in PRODUCTS.items():
        tick = Decimal(1).scaleb(ticks[product])
        mid_d = Decimal(mid)
        levels[product] = {"bid": set(range(1, DEPTH + 1)), "offer": set(range(1, DEPTH + 1))}
        updates = [
            {
                "side": side,
                "event_time": ns_to_rfc3339(ts),
                "price_level": str(mid_d - k * tick if side == "bid" else mid_d + k * tick),
                "new_quantity": f"{rng.randint(1, 5000) / 1000:.3f}",
            }
            for side in ("bid", "offer")
            for k in range(1, DEPTH + 1)
        ]
        out.append(envelope([{"type": "snapshot", "product_id": product, "updates": updates}]))
    count = 0
    names = list(PRODUCTS)
    for _ in range(MESSAGES):
        ts += 100_000  # 10,000 messages a second
        product = rng.choice(names)
        tick = Decimal(1).scaleb(ticks[product])
        mid_d = Decimal(PRODUCTS[product])
        updates = []
        for _ in range(rng.randint(1, 10)):
            side = "bid" if rng.random() < 0.5 else "offer"
            k = min(int(rng.expovariate(0.3)) + 1, DEPTH)  # mostly within a few ticks of the inside
            present = levels[product][side]
            if k in present and rng.random() < 0.33 and len(present) > 10:
                present.discard(k)
                quantity = "0"
            else:
                present.add(k)
                quantity = f"{rng.randint(1, 5000) / 1000:.3f}"
            price = mid_d - k * tick if side == "bid" else mid_d + k * tick
            updates.append(
                {
                    "side": side,
                    "event_time": ns_to_rfc3339(ts),
                    "price_level": str(price),
                    "new_quantity": quantity,
                }
            )
        count += len(updates)
        out.append(envelope([{"type": "update", "product_id": product, "updates": updates}]))
    return out, count


def main() -> None:
    raw, updates = frames(random.Random(11))
    published: list[int] = [0]

    def output(selected: SelectedQuote) -> None:
        published[0] += 1

    manager = LPManager({"cb": VenueSettings(priority=1, stale_after_ms=5000)}, outputs=[output])
    venue = VenueConfig(
        code="cb",
        kind="coinbase",
        symbols={p: p.replace("-", "") for p in PRODUCTS},
        config={"ws_url": "ws://unused"},
    )
    adapter = CoinbaseAdapter(venue, manager.on_quote, listener=manager)
    handle = adapter.handle
    snapshots, stream = raw[: len(PRODUCTS)], raw[len(PRODUCTS) :]
    for frame in snapshots:
        handle(frame)
    began = time.perf_counter()
    for frame in stream:
        handle(frame)
    elapsed = time.perf_counter() - began
    assert adapter.stats.malformed == 0 and adapter.sequence_gaps == 0
    assert all(book.synced and book.top is not None for book in adapter.books.values())
    assert published[0] > MESSAGES // 4  # the top moved often and every move was published
    emit("coinbase_l2_updates_per_s", updates / elapsed, "updates/s", ">= 50000")


if __name__ == "__main__":
    main()
