"""A user's preferences as they change them: their settings (time zone, quiet hours: the users app's)
and their alert preferences (default symbols, timeframes and notification channel), in one write."""

from collections.abc import Sequence
from datetime import time
from typing import Any

from django.db import transaction

from alerts.models import AlertPreferences, NotificationChannel, timeframes_ordered
from alerts.selectors import Preferences, user_preferences
from kernel.errors import ServiceError
from marketdata.models import Instrument, Timeframe
from users.models import User
from users.services import UNSET, user_settings_update


def _invalid(field: str, message: str) -> ServiceError:
    return ServiceError("invalid", "The settings are not valid.", fields={field: [message]}, status_code=400)


def user_preferences_update(
    *,
    user: User,
    timezone_name: str = UNSET,
    quiet_hours_start: time | None = UNSET,
    quiet_hours_end: time | None = UNSET,
    default_symbols: Sequence[str] = UNSET,
    default_timeframes: Sequence[str] = UNSET,
    default_channel_id: int | None = UNSET,
) -> Preferences:
    """Changes the given preferences of `user`; the others keep their value. Symbols must name
    instruments, timeframes be of 1m..1d, the channel be one of the user's own (another user's is
    answered as one that does not exist). Rows are made on the first change."""
    with transaction.atomic():
        own: dict[str, Any] = {
            "timezone_name": timezone_name,
            "quiet_hours_start": quiet_hours_start,
            "quiet_hours_end": quiet_hours_end,
        }
        if any(value is not UNSET for value in own.values()):
            user_settings_update(user=user, **own)
        alerts_part = (default_symbols, default_timeframes, default_channel_id)
        if any(value is not UNSET for value in alerts_part):
            _alert_preferences_update(
                user=user,
                default_symbols=default_symbols,
                default_timeframes=default_timeframes,
                default_channel_id=default_channel_id,
            )
    return user_preferences(user_id=user.pk)


def _alert_preferences_update(
    *,
    user: User,
    default_symbols: Sequence[str],
    default_timeframes: Sequence[str],
    default_channel_id: int | None,
) -> None:
    AlertPreferences.objects.bulk_create([AlertPreferences(user=user)], ignore_conflicts=True)
    row = AlertPreferences.objects.select_for_update().get(user=user)
    if default_timeframes is not UNSET:
        unknown = [tf for tf in default_timeframes if tf not in Timeframe.values]
        if unknown:
            raise _invalid(
                "default_timeframes", f"Unknown timeframes {unknown}: of {' '.join(Timeframe.values)}."
            )
        row.default_timeframes = timeframes_ordered(list(default_timeframes))
    if default_channel_id is not UNSET:
        if (
            default_channel_id is not None
            and not NotificationChannel.objects.filter(pk=default_channel_id, user=user).exists()
        ):
            raise _invalid("default_channel", f"No notification channel {default_channel_id} of yours.")
        row.default_channel_id = default_channel_id
    row.save()
    if default_symbols is not UNSET:
        wanted = set(default_symbols)
        instruments = list(Instrument.objects.filter(symbol__in=wanted))
        if unknown := sorted(wanted - {i.symbol for i in instruments}):
            raise _invalid("default_symbols", f"Unknown instruments: {', '.join(unknown)}.")
        row.default_symbols.set(instruments)
