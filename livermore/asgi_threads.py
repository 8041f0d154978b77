"""Django's ASGI handler, with the sync middleware chain run in one hop and a fixed set of threads.

Django's ASGIHandler builds its middleware chain in async mode: each sync middleware's request and
response hooks (sessions, CSRF, auth, messages, ...) then hop to a thread and back, a dozen hops per
request, which cost more CPU than the view itself. Here the chain is built in sync mode, as under
WSGI, and the whole of it runs in the request's thread in one hop.

Django also runs each HTTP request's sync code (middleware and view) in a thread of its own: every
request enters a new ThreadSensitiveContext, which starts a new single-thread executor. So every
request paid for a thread start and for fresh per-thread state: a database connection checked out of
the pool, a new Redis connection for the cache (throttling), and under load as many threads as
requests in flight, all contending for the GIL and the database pool. Here a request borrows one of
SIZE long-lived single-thread executors instead: threads and their connections are reused, and at
most SIZE requests run sync code at once while the others wait in the event loop holding nothing.
Thread-sensitive code still runs on one thread per request, as Django requires.

Django's ASGIHandler.handle also hops to the thread three times per request (the request_started
signal's sync receivers, the middleware chain and view, then response.close() for request_finished)
and runs the view in a task raced against a second task listening for the client's disconnect. Here
`handle` makes one hop for all of it: signals, request, middleware chain, view and close, then sends
the response from the event loop. The disconnect race goes: a sync view cannot be interrupted (the
thread runs to the end either way), and daphne drops what is sent to a connection that has gone. A
streaming response (static files) is sent as Django sends it and closed after its last chunk.

The wait is bounded: past `queue_max` waiting requests, or after `queue_wait_s` in the queue (a
database that stopped answering holds every thread), a request is shed at once with 503, the API's
JSON error shape and Retry-After. /healthz never queues: it is answered here, in the event loop, so a
liveness probe fails only when the process itself does not run.
"""

import asyncio
import json
import weakref
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from asgiref.sync import ThreadSensitiveContext, sync_to_async
from django.core import signals
from django.core.exceptions import RequestAborted
from django.core.handlers.asgi import ASGIHandler, get_script_prefix
from django.http import FileResponse, HttpRequest, HttpResponseBase
from django.urls import set_script_prefix

from kernel.errors import error_body
from livermore.health import HEALTHZ_BODY

SHED_RETRY_AFTER_S = 1


class _Threads:
    """The executors of one event loop (an asyncio queue belongs to the loop it was made in)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.started = 0
        self.idle: asyncio.Queue[ThreadPoolExecutor] = asyncio.Queue()
        self.waiting = 0
        self.shed = 0

    def take(self) -> ThreadPoolExecutor | None:
        """An idle executor, or a new one while fewer than `size` exist; None if all are busy."""
        if not self.idle.empty():
            return self.idle.get_nowait()
        if self.started < self.size:
            self.started += 1
            return ThreadPoolExecutor(max_workers=1, thread_name_prefix="http")
        return None

    async def borrow(self) -> ThreadPoolExecutor:
        if (executor := self.take()) is not None:
            return executor
        self.waiting += 1
        try:
            return await self.idle.get()
        finally:
            self.waiting -= 1


async def _answer(
    send: Any, status: int, body: object, headers: tuple[tuple[bytes, bytes], ...] = ()
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), *headers],
        }
    )
    await send({"type": "http.response.body", "body": json.dumps(body).encode()})


def _release(request: HttpRequest | None, built: set[str], response: HttpResponseBase) -> None:
    """Unlink what served a complete response, so that it dies by reference count once the response
    is sent. Middleware and views leave the request in cycles (the auth middleware's lazy user and
    `auser`, the messages storage, DRF's view, Request and Response pointing at each other): left to
    the cyclic collector, 80 to 90 objects per request fed full collections that took longer than the
    API's latency target. The request keeps what Django built it with (`built`: its method, path,
    headers), so a log record that still holds it renders it."""
    context = getattr(response, "renderer_context", None)
    if context is not None:
        response.renderer_context = None  # type: ignore[attr-defined]
        for part in (context.get("view"), context.get("request")):
            if part is not None:
                vars(part).clear()
    if request is not None:
        for name in vars(request).keys() - built:
            delattr(request, name)


class ThreadPoolASGIHandler(ASGIHandler):
    def __init__(self, size: int, *, queue_max: int, queue_wait_s: float) -> None:
        # Not ASGIHandler.__init__, which loads the chain in async mode.
        self.load_middleware(is_async=False)
        self.size = size
        self.queue_max = queue_max
        self.queue_wait_s = queue_wait_s
        self.threads: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Threads] = (
            weakref.WeakKeyDictionary()
        )
        # Built once: sync_to_async's wrapper costs as much to build as to call.
        self._respond_in_thread = sync_to_async(self._respond, thread_sensitive=True)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            raise ValueError(f"Django can only handle ASGI/HTTP connections, not {scope['type']}.")
        loop = asyncio.get_running_loop()
        threads = self.threads.get(loop)
        if threads is None:
            threads = self.threads[loop] = _Threads(self.size)
        if scope["path"] == "/healthz":
            await _answer(send, 200, HEALTHZ_BODY)
            return
        # Only a request that has to wait pays for the timeout's timer.
        if (executor := threads.take()) is None:
            try:
                if threads.waiting >= self.queue_max:
                    raise TimeoutError
                async with asyncio.timeout(self.queue_wait_s):
                    executor = await threads.borrow()
            except TimeoutError:
                threads.shed += 1
                body = error_body("overloaded", "The server is overloaded; retry shortly.")
                await _answer(send, 503, body, ((b"retry-after", str(SHED_RETRY_AFTER_S).encode()),))
                return
        try:
            async with ThreadSensitiveContext(executor=executor):
                await self.handle(scope, receive, send)
        finally:
            threads.idle.put_nowait(executor)

    async def handle(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        try:
            body_file = await self.read_body(receive)
        except RequestAborted:
            return
        response = await self._respond_in_thread(scope, body_file)
        try:
            await self.send_response(response, send)
        finally:
            if response.streaming:
                await sync_to_async(response.close, thread_sensitive=True)()

    def _respond(self, scope: dict[str, Any], body_file: Any) -> HttpResponseBase:
        """In the request's thread: what Django's handle does around the view, in one go. A response
        that is not streamed is complete here, so it is closed (request_finished) before it is sent."""
        try:
            set_script_prefix(get_script_prefix(scope))
            signals.request_started.send(sender=self.__class__, scope=scope)
            request, error_response = self.create_request(scope, body_file)
            built = set(vars(request)) if request is not None else set()
            if request is None:
                assert error_response is not None  # Django's create_request returns one or the other
                response = error_response
            else:
                response = self.get_response(request)
                response._handler_class = self.__class__  # type: ignore[attr-defined]
                if isinstance(response, FileResponse):
                    response.block_size = self.chunk_size
            if not response.streaming:
                response.close()
                _release(request, built, response)
            return response
        finally:
            body_file.close()
