from django.urls import URLPattern, URLResolver, path

from marketdata import api

urlpatterns: list[URLPattern | URLResolver] = [
    path("instruments", api.InstrumentListView.as_view(), name="instrument-list"),
    path("quotes", api.QuoteListView.as_view(), name="quote-list"),
    path("candles/<str:symbol>", api.CandleListView.as_view(), name="candle-list"),
    path("ticks/<str:symbol>", api.TickListView.as_view(), name="tick-list"),
]
