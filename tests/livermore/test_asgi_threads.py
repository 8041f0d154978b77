"""The web process's ASGI handler: Django's sync middleware chain and views on a bounded set of
long-lived threads (livermore/asgi_threads.py)."""

import asyncio
import json
from typing import Any

import pytest

from livermore.asgi_threads import ThreadPoolASGIHandler

pytestmark = pytest.mark.django_db(transaction=True)


async def get(app: ThreadPoolASGIHandler, path: str) -> tuple[int, bytes]:
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
        "headers": [(b"host", b"127.0.0.1")],
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
    return start["status"], body


async def test_concurrent_requests_share_a_bounded_set_of_threads() -> None:
    app = ThreadPoolASGIHandler(size=2)
    responses = await asyncio.gather(*(get(app, "/healthz") for _ in range(8)))
    assert [status for status, _ in responses] == [200] * 8
    assert all(json.loads(body) == {"status": "ok"} for _, body in responses)
    threads = app.threads[asyncio.get_running_loop()]
    assert threads.started == 2
    assert threads.idle.qsize() == 2


async def test_requests_after_the_first_reuse_its_thread() -> None:
    app = ThreadPoolASGIHandler(size=4)
    seen = set()
    for _ in range(5):
        assert (await get(app, "/healthz"))[0] == 200
        executor = app.threads[asyncio.get_running_loop()].idle.get_nowait()
        seen.add(id(executor))
        app.threads[asyncio.get_running_loop()].idle.put_nowait(executor)
    assert app.threads[asyncio.get_running_loop()].started == 1
    assert len(seen) == 1


def test_it_serves_only_http() -> None:
    app = ThreadPoolASGIHandler(size=1)
    with pytest.raises(ValueError, match="websocket"):
        asyncio.run(app({"type": "websocket"}, None, None))
