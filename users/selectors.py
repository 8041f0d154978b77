from django.db.models import QuerySet

from .models import ApiKey, User, UserSettings


def api_key_list(*, user: User) -> QuerySet[ApiKey]:
    return ApiKey.objects.filter(user=user).order_by("-created_at")


def user_settings(*, user_id: int) -> UserSettings:
    """The user's settings; the defaults (unsaved) for a user who never changed them."""
    return UserSettings.objects.filter(user_id=user_id).first() or UserSettings(user_id=user_id)
