"""The alert chart: an 800x500 PNG. Candles, EMA and volume above; MACD-V with its signal, histogram
and the +-50 / +-150 guides below. matplotlib's Agg canvas through Figure (no pyplot global state),
so worker threads can render concurrently. No Django."""

import io
import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

WIDTH_PX, HEIGHT_PX, DPI = 800, 500, 100
UP, DOWN, GREY = "#26a69a", "#ef5350", "#9e9e9e"
EMA_COLOURS = ("#f5a623", "#4a90e2", "#bd10e0")

Series = Sequence[float | None]


def _nan(values: Series) -> list[float]:
    return [math.nan if v is None else float(v) for v in values]


def render_chart(title: str, data: Mapping[str, Series], *, starts: Sequence[int]) -> bytes:
    """`data` holds open/high/low/close/volume, any ema_* and macdv/macdv_signal/macdv_histogram
    columns, all as long as `starts` (bar starts, epoch s); missing values are None."""
    n = len(starts)
    if n == 0 or "close" not in data:
        raise ValueError("a chart needs at least one bar with a close")
    x = list(range(n))
    close = _nan(data["close"])
    open_ = _nan(data.get("open") or data["close"])
    high = _nan(data.get("high") or data["close"])
    low = _nan(data.get("low") or data["close"])

    fig = Figure(figsize=(WIDTH_PX / DPI, HEIGHT_PX / DPI), dpi=DPI)
    FigureCanvasAgg(fig)
    price_ax, macd_ax = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 2], "hspace": 0.05})
    fig.subplots_adjust(left=0.08, right=0.92, top=0.93, bottom=0.08)
    fig.suptitle(title[:120], fontsize=10)

    colours = [UP if c >= o else DOWN for o, c in zip(open_, close)]
    price_ax.vlines(x, low, high, colors=colours, linewidth=0.8)
    bodies = [abs(c - o) or (h - lo) * 0.02 or 1e-9 for o, c, h, lo in zip(open_, close, high, low)]
    price_ax.bar(x, bodies, bottom=[min(o, c) for o, c in zip(open_, close)], color=colours, width=0.6)
    for colour, key in zip(EMA_COLOURS, sorted(k for k in data if k.startswith("ema"))):
        price_ax.plot(x, _nan(data[key]), color=colour, linewidth=1.0, label=key.upper().replace("_", " "))
    if price_ax.get_legend_handles_labels()[0]:
        price_ax.legend(loc="upper left", fontsize=7, frameon=False)
    price_ax.grid(alpha=0.2)
    price_ax.yaxis.tick_right()

    volume = _nan(data.get("volume") or [0.0] * n)
    if any(v > 0 for v in volume if not math.isnan(v)):
        volume_ax = price_ax.twinx()
        volume_ax.bar(x, volume, color=colours, alpha=0.25, width=0.6)
        volume_ax.set_ylim(0, max(v for v in volume if not math.isnan(v)) * 4)
        volume_ax.set_yticks([])

    if "macdv" in data:
        hist = _nan(data.get("macdv_histogram") or [None] * n)
        macd_ax.bar(
            x, hist, color=[GREY if math.isnan(h) else UP if h >= 0 else DOWN for h in hist], width=0.6
        )
        macd_ax.plot(x, _nan(data["macdv"]), color="#1f77b4", linewidth=1.1, label="MACD-V")
        if "macdv_signal" in data:
            macd_ax.plot(x, _nan(data["macdv_signal"]), color="#ff7f0e", linewidth=1.0, label="signal")
        macd_ax.legend(loc="upper left", fontsize=7, frameon=False)
    for level, style in ((150, "--"), (50, ":"), (-50, ":"), (-150, "--")):
        macd_ax.axhline(level, color=GREY, linestyle=style, linewidth=0.8)
    macd_ax.axhline(0, color=GREY, linewidth=0.5)
    macd_ax.grid(alpha=0.2)
    macd_ax.yaxis.tick_right()

    ticks = x[:: max(1, n // 6)]
    macd_ax.set_xticks(ticks)
    macd_ax.set_xticklabels(
        [datetime.fromtimestamp(starts[i], UTC).strftime("%m-%d %H:%M") for i in ticks], fontsize=7
    )
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()
