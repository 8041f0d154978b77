import json
from datetime import UTC, datetime
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html

from kernel import redis
from kernel.admin import requires
from kernel.errors import ServiceError
from kernel.redis import key
from marketdata import tasks
from marketdata.adapters import ADAPTERS
from marketdata.backfill import last_day
from marketdata.bars import TIMEFRAME_SECONDS
from marketdata.forms import CandleChartForm
from marketdata.selectors import backfill_targets
from users.models import User

from .loop import HEALTH_KEY, RECORDER_KEY, VENUES_KEY
from .models import BackfillJob, Candle, FeedHealthSnapshot, Instrument, Venue, VenueKind, VenueSymbol
from .selectors import candles_replaced_count, tick_partition_stats
from .services import backfill_job_create, instruments_import, venue_set_enabled, venue_watchlist_change


class VenueForm(forms.ModelForm[Venue]):
    """Credentials are write-only: the form never shows them; leaving the box empty keeps them."""

    new_credentials = forms.CharField(
        required=False,
        widget=forms.PasswordInput(render_value=False),
        help_text='A JSON object of secrets: coinbase {"api_key_name", "private_key_pem"}, oanda {"token"}. '
        "Leave empty to keep the stored ones. Type {} to clear them.",
    )

    class Meta:
        model = Venue
        fields = ("code", "name", "kind", "demo", "enabled", "priority", "stale_after_ms", "config")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Only kinds the market loop can run: a venue of another kind would never quote.
        kinds = [(k, label) for k, label in VenueKind.choices if k in ADAPTERS]
        self.fields["kind"].choices = kinds  # type: ignore[attr-defined]

    def clean_new_credentials(self) -> str | None:
        raw = self.cleaned_data["new_credentials"].strip()
        if not raw:
            return None
        try:
            value = json.loads(raw)
        except ValueError as exc:
            raise forms.ValidationError("Credentials must be a JSON object.") from exc
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise forms.ValidationError("Credentials must be a JSON object of strings.")
        return json.dumps(value) if value else ""

    def save(self, commit: bool = True) -> Venue:
        venue = super().save(commit=False)
        if self.cleaned_data.get("new_credentials") is not None:
            venue.credentials = self.cleaned_data["new_credentials"]
        if commit:
            venue.save()
        return venue


class CatalogueForm(forms.Form):
    match = forms.CharField(
        required=False,
        max_length=500,
        help_text="Shell patterns on the venue's name or our symbol, comma separated: BTC-*, ETH-USD. "
        "Empty: the whole catalogue.",
    )
    watch = forms.BooleanField(
        required=False, label="Put the imported symbols on the watchlist (the market loop quotes them)"
    )
    fingerprint = forms.CharField(required=False, widget=forms.HiddenInput)


class WatchlistForm(forms.Form):
    add = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="Venue names (BTC-USD) or symbols (BTCUSD), separated by spaces, commas or lines.",
    )
    remove = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 3}))

    def names(self, field: str) -> list[str]:
        return [n for n in self.cleaned_data[field].replace(",", " ").split() if n]


class VenueSymbolInline(admin.TabularInline[VenueSymbol, Venue]):
    model = VenueSymbol
    fields = ("instrument", "venue_symbol", "enabled", "priority")
    extra = 0
    autocomplete_fields = ("instrument",)


@admin.register(Venue)
class VenueAdmin(admin.ModelAdmin[Venue]):
    form = VenueForm
    list_display = (
        "code",
        "name",
        "kind",
        "is_simulated",
        "enabled",
        "priority",
        "stale_after_ms",
        "has_credentials",
        "symbol_pages",
    )
    list_editable = ("enabled", "priority")
    list_filter = ("kind", "enabled", "demo")
    inlines = (VenueSymbolInline,)
    actions = ("enable", "disable", "import_instruments")

    @admin.display(boolean=True, description="simulated")
    def is_simulated(self, obj: Venue) -> bool:
        return obj.simulated

    @admin.display(boolean=True, description="credentials set")
    def has_credentials(self, obj: Venue) -> bool:
        return bool(obj.credentials)

    @admin.display(description="symbols")
    def symbol_pages(self, obj: Venue) -> str:
        return format_html(
            '<a href="{}">catalogue</a> · <a href="{}">watchlist</a>',
            reverse("admin:marketdata_venue_catalogue", args=[obj.pk]),
            reverse("admin:marketdata_venue_watchlist", args=[obj.pk]),
        )

    def has_import_instruments_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("marketdata.import_instruments")

    @admin.action(
        description="Import instruments from the venue's catalogue…", permissions=["import_instruments"]
    )
    def import_instruments(self, request: HttpRequest, queryset: Any) -> HttpResponse | None:
        if queryset.count() != 1:
            self.message_user(request, "Select one venue to import from.", messages.WARNING)
            return None
        return HttpResponseRedirect(reverse("admin:marketdata_venue_catalogue", args=[queryset.get().pk]))

    def get_urls(self) -> list[URLPattern]:
        wrap = self.admin_site.admin_view
        return [
            path("<int:pk>/catalogue/", wrap(self.catalogue_view), name="marketdata_venue_catalogue"),
            path("<int:pk>/watchlist/", wrap(self.watchlist_view), name="marketdata_venue_watchlist"),
            *super().get_urls(),
        ]

    def _page(self, request: HttpRequest, venue: Venue, title: str, **extra: Any) -> dict[str, Any]:
        return {
            **self.admin_site.each_context(request),
            "title": title,
            "venue": venue,
            "opts": Venue._meta,
            **extra,
        }

    @requires("marketdata.import_instruments")
    def catalogue_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        """Preview, then confirm: the confirmation carries the preview's fingerprint, so the import
        writes what the operator saw or nothing (the catalogue changed: a new preview is shown)."""
        venue = get_object_or_404(Venue, pk=pk)
        form = CatalogueForm(request.POST or None)
        plan = None
        if request.method == "POST" and form.is_valid():
            match, fingerprint = form.cleaned_data["match"], form.cleaned_data["fingerprint"]
            assert isinstance(request.user, User)  # the admin only lets staff users in
            try:
                if "confirm" in request.POST:
                    done = instruments_import(
                        venue=venue,
                        match=match,
                        expected=fingerprint,
                        watch=form.cleaned_data["watch"],
                        actor=request.user,
                    )
                    counts = ", ".join(f"{n} {action}" for action, n in done.counts.items())
                    self.message_user(request, f"Imported from {venue.code}: {counts}.")
                    return HttpResponseRedirect(reverse("admin:marketdata_venue_catalogue", args=[pk]))
            except ServiceError as exc:
                self.message_user(request, exc.message, messages.ERROR)
            try:
                plan = instruments_import(venue=venue, match=match, dry_run=True)
            except ServiceError as exc:
                self.message_user(request, exc.message, messages.ERROR)
            else:
                form = CatalogueForm(
                    initial={
                        "match": match,
                        "watch": form.cleaned_data["watch"],
                        "fingerprint": plan.fingerprint,
                    }
                )
        context = self._page(
            request, venue, f"Import instruments from {venue}'s catalogue", form=form, plan=plan
        )
        return TemplateResponse(request, "admin/marketdata/venue_catalogue.html", context)

    @requires("marketdata.change_watchlist")
    def watchlist_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        venue = get_object_or_404(Venue, pk=pk)
        form = WatchlistForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            assert isinstance(request.user, User)
            try:
                change = venue_watchlist_change(
                    venue=venue, add=form.names("add"), remove=form.names("remove"), actor=request.user
                )
            except ServiceError as exc:
                self.message_user(request, exc.message, messages.ERROR)
            else:
                self.message_user(
                    request,
                    f"Watchlist of {venue.code}: added {', '.join(change.added) or 'none'}, removed "
                    f"{', '.join(change.removed) or 'none'}. The market loop applies it within seconds.",
                )
                return HttpResponseRedirect(reverse("admin:marketdata_venue_watchlist", args=[pk]))
        symbols = venue.symbols.select_related("instrument").order_by("-enabled", "venue_symbol")
        context = self._page(request, venue, f"Watchlist of {venue}", form=form, symbols=symbols)
        return TemplateResponse(request, "admin/marketdata/venue_watchlist.html", context)

    @admin.action(description="Enable selected venues", permissions=["change"])
    def enable(self, request: HttpRequest, queryset: Any) -> None:
        self._set_enabled(request, queryset, enabled=True)

    @admin.action(description="Disable selected venues", permissions=["change"])
    def disable(self, request: HttpRequest, queryset: Any) -> None:
        self._set_enabled(request, queryset, enabled=False)

    def _set_enabled(self, request: HttpRequest, queryset: Any, *, enabled: bool) -> None:
        assert isinstance(request.user, User)  # the admin only lets staff users in
        changed = 0
        for venue in queryset:
            try:
                changed += venue_set_enabled(venue=venue, enabled=enabled, actor=request.user)
            except ServiceError as exc:
                self.message_user(request, exc.message, messages.ERROR)
        self.message_user(request, f"{changed} venue(s) {'enabled' if enabled else 'disabled'}.")


@admin.register(Instrument)
class InstrumentAdmin(admin.ModelAdmin[Instrument]):
    list_display = (
        "symbol",
        "base_currency",
        "quote_currency",
        "contract_size",
        "digits",
        "tick_size",
        "pip_size",
        "volume_min",
        "volume_max",
        "volume_step",
        "margin_rate",
        "tradable",
        "chart",
    )
    list_filter = ("tradable", "quote_currency")
    search_fields = ("symbol", "description")
    actions = ("backfill_candles",)

    @admin.action(description="Backfill candles (last day, every timeframe)", permissions=["run_backfill"])
    def backfill_candles(self, request: HttpRequest, queryset: Any) -> None:
        """One job per timeframe from each instrument's best venue with history; their progress is
        on the backfill jobs page while they run."""
        assert isinstance(request.user, User)
        queued, skipped, refused = 0, [], []
        for instrument in queryset:
            targets = backfill_targets(instrument=instrument)
            if not targets:
                skipped.append(instrument.symbol)
                continue
            for timeframe in TIMEFRAME_SECONDS:
                start, end = last_day(timeframe, int(datetime.now(UTC).timestamp()))
                try:
                    job = backfill_job_create(
                        instrument=instrument,
                        venue=targets[0].venue,
                        timeframe=timeframe,
                        start=datetime.fromtimestamp(start, UTC),
                        end=datetime.fromtimestamp(end, UTC),
                        requested_by=request.user,
                    )
                except ServiceError as exc:
                    refused.append(f"{instrument.symbol} {timeframe}: {exc.message}")
                    continue
                tasks.backfill_job.delay_on_commit(job.pk)
                queued += 1
        if queued:
            self.message_user(
                request,
                format_html(
                    '{} backfill job(s) queued: <a href="{}">follow their progress</a>.',
                    queued,
                    reverse("admin:marketdata_backfilljob_changelist"),
                ),
            )
        if skipped:
            self.message_user(
                request, f"No venue with candle history serves {', '.join(skipped)}.", messages.WARNING
            )
        for message in refused:
            self.message_user(request, message, messages.ERROR)

    def has_run_backfill_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("marketdata.run_backfill")

    def get_urls(self) -> list[URLPattern]:
        live = path("live/", self.admin_site.admin_view(self.live_quotes), name="marketdata_live_quotes")
        chart = path(
            "<int:pk>/chart/", self.admin_site.admin_view(self.chart_view), name="marketdata_instrument_chart"
        )
        return [live, chart, *super().get_urls()]

    @admin.display(description="chart")
    def chart(self, obj: Instrument) -> str:
        return format_html(
            '<a href="{}">chart</a>', reverse("admin:marketdata_instrument_chart", args=[obj.pk])
        )

    @requires("marketdata.view_candle")
    def chart_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        """Candles and volume of one instrument from the stored bars, timeframe and range selectable."""
        instrument = get_object_or_404(Instrument, pk=pk)
        form = CandleChartForm({"tf": "1h", **request.GET.dict(), "symbol": instrument.symbol})
        chart = form.chart() if form.is_valid() else None
        context = {
            **self.admin_site.each_context(request),
            "title": f"Chart {instrument.symbol}",
            "instrument": instrument,
            "form": form,
            "chart": chart,
            "opts": Instrument._meta,
        }
        return TemplateResponse(
            request, "admin/marketdata/instrument_chart.html", context, status=200 if chart else 400
        )

    @requires("marketdata.view_instrument")
    def live_quotes(self, request: HttpRequest) -> HttpResponse:
        health, recorder, venues = redis.mget([key(HEALTH_KEY), key(RECORDER_KEY), key(VENUES_KEY)])
        context = {
            **self.admin_site.each_context(request),
            "title": "Live quotes",
            "symbols": list(Instrument.objects.values_list("symbol", flat=True)),
            "health": sorted(json.loads(health) if health else [], key=lambda r: (r["symbol"], r["venue"])),
            "venues": json.loads(venues) if venues else [],
            "recorder": json.loads(recorder) if recorder else None,
            "tick_partitions": tick_partition_stats(),
            "candles_replaced": candles_replaced_count(),
        }
        return TemplateResponse(request, "admin/marketdata/live_quotes.html", context)


@admin.register(FeedHealthSnapshot)
class FeedHealthSnapshotAdmin(admin.ModelAdmin[FeedHealthSnapshot]):
    list_display = ("taken_at", "symbol", "venue", "bid", "ask", "seq", "age_ms", "tradable")
    list_filter = ("symbol", "venue", "tradable")
    date_hierarchy = "taken_at"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(BackfillJob)
class BackfillJobAdmin(admin.ModelAdmin[BackfillJob]):
    """Progress of the backfills operators asked for; the list refreshes itself while one runs."""

    list_display = (
        "created_at",
        "instrument",
        "venue",
        "timeframe",
        "state",
        "progress",
        "pages",
        "bars_fetched",
        "bars_added",
        "bars_replaced",
        "rate_limit_waits",
        "error",
    )
    list_filter = ("state", "timeframe", "venue")
    list_select_related = ("instrument", "venue")
    readonly_fields = [f.name for f in BackfillJob._meta.fields]

    @admin.display(description="progress")
    def progress(self, obj: BackfillJob) -> str:
        """Bars received against the buckets in the window (a venue sends none for a bucket without
        trades, so a finished job may stay under 100 %)."""
        if obj.state == BackfillJob.State.DONE:
            return "100 %"
        buckets = max(1, int((obj.end - obj.start).total_seconds()) // TIMEFRAME_SECONDS[obj.timeframe])
        return f"{min(100, obj.bars_fetched * 100 // buckets)} %"

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        active = BackfillJob.objects.filter(
            state__in=(BackfillJob.State.QUEUED, BackfillJob.State.RUNNING)
        ).exists()
        return super().changelist_view(request, {**(extra_context or {}), "refresh_s": 2 if active else None})

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


class SuspectFilter(admin.SimpleListFilter):
    title = "plausibility"
    parameter_name = "suspect"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("yes", "Suspect (imported, implausible)"), ("no", "Plausible")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if self.value() == "yes":
            return queryset.exclude(suspect="")
        if self.value() == "no":
            return queryset.filter(suspect="")
        return queryset


@admin.register(Candle)
class CandleAdmin(admin.ModelAdmin[Candle]):
    """Read-only: bars are written by the market loop and backfills, never by hand."""

    list_display = (
        "instrument",
        "timeframe",
        "start",
        "open",
        "high",
        "low",
        "close",
        "volume",
        "tick_count",
        "source",
        "venue",
        "partial",
        "replaced",
        "suspect",
    )
    list_filter = ("timeframe", "source", "venue", "partial", "replaced", SuspectFilter, "instrument")
    list_select_related = ("instrument",)
    date_hierarchy = "start"
    show_full_result_count = False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False
