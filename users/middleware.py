import functools
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse
from django.urls import reverse
from django.utils import timezone

from .models import UserSettings


class UserTimezoneMiddleware:
    """The console (the admin) shows times in the signed-in user's time zone (their settings; UTC by
    default). Other paths stay in UTC: the API's JSON carries instants, rendered in UTC."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    @functools.cached_property
    def console_prefix(self) -> str:
        return reverse("admin:index")

    def __call__(self, request: HttpRequest) -> HttpResponse:
        user = getattr(request, "user", None)
        name = None
        if user is not None and user.is_authenticated and request.path.startswith(self.console_prefix):
            name = UserSettings.objects.filter(user_id=user.pk).values_list("timezone", flat=True).first()
        if name is None or name == "UTC":
            timezone.deactivate()
            return self.get_response(request)
        timezone.activate(name)
        try:
            return self.get_response(request)
        finally:
            timezone.deactivate()
