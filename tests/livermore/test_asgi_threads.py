"""The web process's ASGI handler: Django's sync middleware chain and views on a bounded set of
long-lived threads (livermore/asgi_threads.py)."""

import asyncio
import gc
import json
import threading
import weakref
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from unittest.mock import patch

import pytest
from asgiref.sync import sync_to_async
from django.core import signals
from django.http import StreamingHttpResponse
from django.urls import path
from rest_framework.views import APIView

from brokerage.models import ClientGroup
from livermore.asgi_threads import ThreadPoolASGIHandler
from tests.support.trading import open_account
from tests.support.users import make_client
from users.models import ApiKey

pytestmark = pytest.mark.django_db(transaction=True)


def handler(size: int, *, queue_max: int = 100, queue_wait_s: float = 30) -> ThreadPoolASGIHandler:
    return ThreadPoolASGIHandler(size=size, queue_max=queue_max, queue_wait_s=queue_wait_s)


async def get(app: ThreadPoolASGIHandler, path: str) -> tuple[int, bytes]:
    status, _, body = await get_with_headers(app, path)
    return status, body


async def get_with_headers(
    app: ThreadPoolASGIHandler, path: str, headers: tuple[tuple[bytes, bytes], ...] = ()
) -> tuple[int, dict[bytes, bytes], bytes]:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"127.0.0.1"), *headers],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }
    sent: list[dict[str, Any]] = []
    requested = False

    async def receive() -> dict[str, Any]:
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.Event().wait()  # no disconnect while the response is produced
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], dict(start["headers"]), body


async def test_concurrent_requests_share_a_bounded_set_of_threads() -> None:
    app = handler(2)
    responses = await asyncio.gather(*(get(app, "/no-such-page") for _ in range(8)))
    assert [status for status, _ in responses] == [404] * 8
    threads = app.threads[asyncio.get_running_loop()]
    assert threads.started == 2
    assert threads.idle.qsize() == 2


async def test_requests_after_the_first_reuse_its_thread() -> None:
    app = handler(4)
    seen = set()
    for _ in range(5):
        assert (await get(app, "/no-such-page"))[0] == 404
        executor = app.threads[asyncio.get_running_loop()].idle.get_nowait()
        seen.add(id(executor))
        app.threads[asyncio.get_running_loop()].idle.put_nowait(executor)
    assert app.threads[asyncio.get_running_loop()].started == 1
    assert len(seen) == 1


def test_it_serves_only_http() -> None:
    app = handler(1)
    with pytest.raises(ValueError, match="websocket"):
        asyncio.run(app({"type": "websocket"}, None, None))


async def busy(app: ThreadPoolASGIHandler) -> Any:
    """Every thread of the app held (as by requests stuck on a database that does not answer)."""
    await get(app, "/no-such-page")  # the loop's thread set exists
    threads = app.threads[asyncio.get_running_loop()]
    return [await threads.borrow() for _ in range(app.size)]


async def test_healthz_answers_while_every_request_thread_is_stuck() -> None:
    app = handler(1)
    await busy(app)
    status, body = await asyncio.wait_for(get(app, "/healthz"), timeout=1)
    assert (status, json.loads(body)) == (200, {"status": "ok"})


async def test_requests_beyond_the_bounded_queue_are_shed_at_once_with_503() -> None:
    app = handler(1, queue_max=2)
    held = await busy(app)
    waiting = [asyncio.create_task(get(app, "/no-such-page")) for _ in range(2)]
    await asyncio.sleep(0.05)
    status, headers, body = await asyncio.wait_for(get_with_headers(app, "/no-such-page"), timeout=1)
    assert status == 503 and headers[b"retry-after"] == b"1"
    assert headers[b"content-type"] == b"application/json"
    assert json.loads(body)["error"]["code"] == "overloaded"
    threads = app.threads[asyncio.get_running_loop()]
    threads.idle.put_nowait(held[0])  # the stuck request ends: the queued ones are served
    assert [r[0] for r in await asyncio.gather(*waiting)] == [404, 404]
    assert threads.shed == 1


async def test_a_request_that_waited_its_bound_in_the_queue_is_shed_with_503() -> None:
    app = handler(1, queue_wait_s=0.3)
    await busy(app)
    started = asyncio.get_running_loop().time()
    status, body = await get(app, "/no-such-page")
    assert status == 503 and json.loads(body)["error"]["code"] == "overloaded"
    assert 0.3 <= asyncio.get_running_loop().time() - started < 1.0


async def test_request_signals_and_the_view_run_in_one_hop_to_the_requests_thread() -> None:
    app = handler(1)
    threads_seen: list[tuple[str, int]] = []

    def started(**kwargs: Any) -> None:
        threads_seen.append(("started", threading.get_ident()))

    def finished(**kwargs: Any) -> None:
        threads_seen.append(("finished", threading.get_ident()))

    signals.request_started.connect(started)
    signals.request_finished.connect(finished)
    hops = 0
    real_submit = ThreadPoolExecutor.submit

    def counting_submit(self: ThreadPoolExecutor, *args: Any, **kwargs: Any) -> Any:
        nonlocal hops
        hops += 1
        return real_submit(self, *args, **kwargs)

    try:
        with patch.object(ThreadPoolExecutor, "submit", counting_submit):
            assert (await get(app, "/no-such-page"))[0] == 404
    finally:
        signals.request_started.disconnect(started)
        signals.request_finished.disconnect(finished)
    assert hops == 1
    assert [name for name, _ in threads_seen] == ["started", "finished"]
    assert len({ident for _, ident in threads_seen}) == 1
    assert threads_seen[0][1] != threading.get_ident()


async def test_a_streamed_response_is_sent_whole_and_closed_after_its_last_chunk(settings: Any) -> None:
    settings.ROOT_URLCONF = "tests.livermore.test_asgi_threads"
    finished = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_finished(**kwargs: Any) -> None:
        loop.call_soon_threadsafe(finished.set)

    signals.request_finished.connect(on_finished)
    try:
        status, body = await get(handler(1), "/stream")
    finally:
        signals.request_finished.disconnect(on_finished)
    assert (status, body) == (200, b"onetwothree")
    await asyncio.wait_for(finished.wait(), timeout=1)


def _bot_account() -> tuple[int, str]:
    user = make_client("bot")
    group = ClientGroup.objects.create(name="bots", currency="USD", leverage=100)
    _, raw = ApiKey.issue(user=user, name="bot")
    return open_account(user, group).number, raw


async def test_an_api_requests_objects_die_by_reference_count_once_it_is_answered() -> None:
    app = handler(1)
    number, raw = await sync_to_async(_bot_account)()
    served: list[weakref.ref[Any]] = []
    real_create_request = ThreadPoolASGIHandler.create_request
    real_initialize_request = APIView.initialize_request

    def create_request(self: ThreadPoolASGIHandler, *args: Any) -> Any:
        request, error = real_create_request(self, *args)
        served.append(weakref.ref(request))
        return request, error

    def initialize_request(self: APIView, *args: Any, **kwargs: Any) -> Any:
        request = real_initialize_request(self, *args, **kwargs)
        served.extend((weakref.ref(self), weakref.ref(request)))
        return request

    await get(app, "/no-such-page")  # the thread and its connections exist
    gc.collect()
    gc.disable()
    try:
        with (
            patch.object(ThreadPoolASGIHandler, "create_request", create_request),
            patch.object(APIView, "initialize_request", initialize_request),
        ):
            status, _, body = await get_with_headers(
                app, f"/api/v1/accounts/{number}/orders", ((b"authorization", f"Api-Key {raw}".encode()),)
            )
        assert status == 200 and json.loads(body)["results"] == []
        assert len(served) == 3  # Django's request, DRF's view and request
        assert [ref() for ref in served] == [None, None, None]
    finally:
        gc.enable()


def _stream(request: Any) -> StreamingHttpResponse:
    return StreamingHttpResponse(iter([b"one", b"two", b"three"]))


urlpatterns = [path("stream", _stream)]
