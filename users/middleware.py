from collections.abc import Callable
from functools import cache

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.urls import NoReverseMatch, get_script_prefix, get_urlconf, reverse
from django.utils import timezone

from kernel.errors import outage

from .models import UserSettings


@cache
def _console_prefix(urlconf: str, script_prefix: str) -> str | None:
    """The admin's path under this URL conf and script prefix (reversed once each: every request asks)."""
    try:
        return reverse("admin:index", urlconf=urlconf)
    except NoReverseMatch:  # a URL conf without the admin
        return None


class UserTimezoneMiddleware:
    """The console (the admin) shows times in the signed-in user's time zone (their settings; UTC by
    default). Other paths stay in UTC: the API's JSON carries instants, rendered in UTC."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    @staticmethod
    def in_console(request: HttpRequest) -> bool:
        prefix = _console_prefix(get_urlconf() or settings.ROOT_URLCONF, get_script_prefix())
        return prefix is not None and request.path.startswith(prefix)

    @staticmethod
    def zone_name(request: HttpRequest) -> str | None:
        user = getattr(request, "user", None)
        if user is None or not user.is_authenticated:
            return None
        return UserSettings.objects.filter(user_id=user.pk).values_list("timezone", flat=True).first()

    def __call__(self, request: HttpRequest) -> HttpResponse:
        name = None
        if self.in_console(request):
            try:
                name = self.zone_name(request)
            except Exception as exc:
                # An outage here would be an HTML 500 page: let the view meet it, which answers 503.
                if outage(exc) is None:
                    raise
        if name is None or name == "UTC":
            timezone.deactivate()
            return self.get_response(request)
        timezone.activate(name)
        try:
            return self.get_response(request)
        finally:
            timezone.deactivate()
