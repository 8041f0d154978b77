from collections.abc import Callable

from django.http import HttpRequest, HttpResponse
from django.urls import NoReverseMatch, get_urlconf, reverse
from django.utils import timezone

from kernel.errors import outage

from .models import UserSettings


class UserTimezoneMiddleware:
    """The console (the admin) shows times in the signed-in user's time zone (their settings; UTC by
    default). Other paths stay in UTC: the API's JSON carries instants, rendered in UTC."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        # The console's prefix by URL conf: reversing it on every request cost more than the rest of
        # this middleware on an API request.
        self.prefixes: dict[object, str | None] = {}

    def in_console(self, request: HttpRequest) -> bool:
        urlconf = get_urlconf()
        if urlconf not in self.prefixes:
            try:
                self.prefixes[urlconf] = reverse("admin:index")
            except NoReverseMatch:  # a URL conf without the admin
                self.prefixes[urlconf] = None
        prefix = self.prefixes[urlconf]
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
