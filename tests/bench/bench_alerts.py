"""Alert evaluation speed: 10,000 rules of one (symbol, timeframe) evaluated on one candle close by the
pure evaluator (alerts/rules.py), the work done per closed bar before the firings are stored.

A realistic mix: price and indicator conditions of every kind and frequency, a tenth MACD-V presets
(price rules that run on quotes are skipped here, as on a real bar close).
Prices are Decimal (cents), as the bar-close path passes them; indicators are floats.
Median over consecutive bars, each evaluated once (state and series advance as in production); the
rules are compiled into their index once before the bars (the service keeps it until a rule changes)."""

import random
import statistics
import sys
import time
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from alerts.rules import (
    CHANNEL_CONDITIONS,
    MOVING_CONDITIONS,
    PERCENT_CONDITIONS,
    Condition,
    Frequency,
    Kind,
    Rule,
    RuleIndex,
    SeriesState,
    evaluate_bar_close,
)
from tests.bench.metric import emit

RULES = 10_000
BARS = 30
START = 1_767_225_600


def cents(x: float) -> Decimal:
    return Decimal(f"{x:.2f}")


def rules(rng: random.Random) -> list[Rule]:
    out = []
    sources = ["price", "ema_20", "ema_50", "rsi_14", "macdv"]
    frequencies = list(Frequency)
    for i in range(RULES):
        if i % 10 == 0:
            out.append(Rule(i, "BTCUSD", "5m", kind=Kind.MACDV))
            continue
        condition = rng.choice(list(Condition))
        source = rng.choice(sources)
        centre = {"price": 95_000.0, "ema_20": 95_000.0, "ema_50": 95_000.0, "rsi_14": 50.0, "macdv": 0.0}[
            source
        ]
        spread = {"rsi_14": 30.0, "macdv": 200.0}.get(source, 3_000.0)
        threshold = centre + rng.uniform(-spread, spread)
        if condition in MOVING_CONDITIONS:
            threshold = (
                rng.uniform(0.5, 5) if condition in PERCENT_CONDITIONS else rng.uniform(10, spread / 10)
            )
        out.append(
            Rule(
                i,
                "BTCUSD",
                "5m",
                source=source,
                condition=condition,
                threshold=cents(threshold) if source == "price" else threshold,
                upper=cents(threshold + spread / 5) if condition in CHANNEL_CONDITIONS else None,
                other="ema_20" if source == "price" and i % 7 == 0 and condition not in CHANNEL_CONDITIONS
                and condition not in MOVING_CONDITIONS else "",
                bars=rng.randint(1, 20),
                frequency=rng.choice(frequencies),
            )
        )  # fmt: skip
    return out


def main() -> None:
    rng = random.Random(7)
    book = RuleIndex(rules(rng))  # compiled once, as the bar-close service keeps it per process
    series = SeriesState("BTCUSD", "5m")
    close, macdv, signal = 95_000.0, 0.0, 0.0
    timings, fired = [], 0
    for bar in range(BARS):
        close *= 1 + rng.gauss(0, 0.004)
        macdv += rng.gauss(0, 40)
        signal += (macdv - signal) * 0.2
        values = {
            "open": cents(close * 0.999),
            "high": cents(close * 1.002),
            "low": cents(close * 0.997),
            "close": cents(close),
            "volume": rng.uniform(1, 10),
            "ema_20": close * (1 + rng.gauss(0, 0.002)),
            "ema_50": close * (1 + rng.gauss(0, 0.004)),
            "rsi_14": 50 + rng.gauss(0, 15),
            "macdv": macdv,
            "macdv_signal": signal,
            "macdv_histogram": macdv - signal,
        }
        started = time.perf_counter()
        fired += len(evaluate_bar_close(book, series, bar_start=START + bar * 300, values=values))
        timings.append((time.perf_counter() - started) * 1000)
    # the first bars warm up the series history; measure the steady state
    steady = timings[5:]
    emit("alert_eval_10k_rules_ms", statistics.median(steady), "ms", "<= 2")
    print(f"bars={BARS} rules={RULES} firings={fired} max_ms={max(steady):.2f}", file=sys.stderr)


if __name__ == "__main__":
    main()
