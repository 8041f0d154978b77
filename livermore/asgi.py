import os
from importlib import import_module

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "livermore.settings")
django.setup(set_prefix=False)

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.conf import settings  # noqa: E402

from kernel.heap import freeze_startup_objects  # noqa: E402
from kernel.ws import secure_websocket  # noqa: E402
from livermore.asgi_threads import ThreadPoolASGIHandler  # noqa: E402
from livermore.routing import websocket_urlpatterns  # noqa: E402

django_asgi_app = ThreadPoolASGIHandler(
    size=settings.ASGI_REQUEST_THREADS,
    queue_max=settings.ASGI_QUEUE_MAX,
    queue_wait_s=settings.ASGI_QUEUE_WAIT_S,
)

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": secure_websocket(URLRouter(websocket_urlpatterns)),
    }
)

# Every view, serializer and URL conf imported now, not at the first request, so they are frozen too.
import_module(settings.ROOT_URLCONF)
freeze_startup_objects()
