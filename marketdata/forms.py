"""Forms of the console's market-data pages shared by the apps' admins."""

from datetime import UTC, datetime, timedelta
from typing import Any

from django import forms

from marketdata.bars import TIMEFRAME_SECONDS
from marketdata.candles import TIMEFRAMES
from marketdata.models import Instrument

CHART_BARS = 200  # the default range: this many bars back from now
CHART_MAX_BARS = 2000


class CandleChartForm(forms.Form):
    """A chart's instrument, timeframe and range (in the operator's time zone, as the console shows
    times); the range defaults to the last CHART_BARS bars."""

    symbol = forms.CharField(max_length=20)
    tf = forms.ChoiceField(choices=[(tf, tf) for tf in TIMEFRAMES], initial="1h")
    start = forms.DateTimeField(required=False, help_text="In your time zone (My settings)")
    end = forms.DateTimeField(required=False, help_text="In your time zone; now when empty")

    def clean_symbol(self) -> str:
        symbol: str = self.cleaned_data["symbol"]
        if not Instrument.objects.filter(symbol=symbol).exists():
            raise forms.ValidationError(f"Unknown instrument {symbol!r}.")
        return symbol

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        tf = cleaned.get("tf")
        if tf is None:
            return cleaned
        step = timedelta(seconds=TIMEFRAME_SECONDS[tf])
        end = cleaned.get("end") or datetime.now(UTC)
        start = cleaned.get("start") or end - CHART_BARS * step
        if start >= end:
            self.add_error("start", "The start must be before the end.")
        elif (end - start) / step > CHART_MAX_BARS:
            self.add_error(
                "start", f"At most {CHART_MAX_BARS} bars: narrow the range or take a longer timeframe."
            )
        cleaned["start"], cleaned["end"] = start, end
        return cleaned

    def chart(self) -> dict[str, Any]:
        """What the page's script draws (templates/admin/_candle_chart.html): a valid form's choices."""
        data = self.cleaned_data
        return {
            "symbol": data["symbol"],
            "tf": data["tf"],
            "start": data["start"].isoformat(),
            "end": data["end"].isoformat(),
            "max_bars": CHART_MAX_BARS,
        }
