"""A local Discord webhook server speaking the real wire format (PROTOCOLS.md section 4).

POST /api/webhooks/{id}/{token}[?wait=true] with a JSON body or multipart/form-data (`payload_json`
+ `files[n]`). It validates the message (embed limits, the 6000-character total, attachment
references) -> 400 code 50035, an empty message -> 400 code 50006, an unknown webhook -> 404 code
10015; answers 200 + message object with ?wait=true, else 204; sends X-RateLimit-* headers from a
per-webhook bucket and 429s a client that ignores them. Scripted answers per webhook: a 429 with
Retry-After, a JSON retry_after and an X-RateLimit-Scope, a 5xx, a slow answer (a gateway timeout:
the message is not posted), a late answer (the message is posted, the answer comes too late for the
client). Everything received is recorded.
"""

import json
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

EMBED_LIMITS = {"title": 256, "description": 4096, "footer.text": 2048, "author.name": 256}
EMBED_TOTAL = 6000
IMAGE_TYPES = (".png", ".jpg", ".jpeg", ".webp", ".gif")


@dataclass(frozen=True)
class Slow:
    seconds: float


@dataclass(frozen=True)
class Status:
    code: int


@dataclass(frozen=True)
class PostedLate:
    seconds: float


@dataclass(frozen=True)
class RateLimited:
    retry_after: float
    is_global: bool = False
    scope: str = "user"


Action = Slow | Status | RateLimited | PostedLate


@dataclass
class Upload:
    name: str
    filename: str
    content_type: str
    data: bytes


@dataclass
class Received:
    webhook_id: str
    wait: bool
    content_type: str
    payload: dict[str, Any]
    files: list[Upload]
    status: int = 0
    posted: bool = False
    message_id: str = ""
    at: float = field(default_factory=time.time)


@dataclass
class Bucket:
    limit: int
    window_s: float
    started: float = 0.0
    used: int = 0

    def take(self, now: float) -> tuple[bool, int, float]:
        """(allowed, remaining, reset_after)."""
        if now - self.started >= self.window_s:
            self.started, self.used = now, 0
        reset_after = max(0.0, self.window_s - (now - self.started))
        if self.used >= self.limit:
            return False, 0, reset_after
        self.used += 1
        return True, self.limit - self.used, reset_after


class FakeDiscord:
    def __init__(self, *, bucket_limit: int = 5, bucket_window_s: float = 2.0) -> None:
        self.bucket_limit = bucket_limit
        self.bucket_window_s = bucket_window_s
        self.webhooks: dict[str, str] = {}
        self.buckets: dict[str, Bucket] = {}
        self.scripts: dict[str, deque[Action]] = {}
        self.received: list[Received] = []
        self.lock = threading.Lock()
        self._next_id = 1_100_000_000_000_000_000
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                fake.handle(self)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}"

    def __enter__(self) -> "FakeDiscord":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def add_webhook(self) -> tuple[str, str]:
        """Registers a webhook; returns (id, url)."""
        with self.lock:
            webhook_id = str(self._snowflake())
            self.webhooks[webhook_id] = secrets.token_urlsafe(48)
            self.buckets[webhook_id] = Bucket(self.bucket_limit, self.bucket_window_s)
        return webhook_id, f"{self.base_url}/api/webhooks/{webhook_id}/{self.webhooks[webhook_id]}"

    def delete_webhook(self, webhook_id: str) -> None:
        with self.lock:
            self.webhooks.pop(webhook_id, None)

    def script(self, webhook_id: str, *actions: Action) -> None:
        with self.lock:
            self.scripts.setdefault(webhook_id, deque()).extend(actions)

    def posted(self, webhook_id: str | None = None) -> list[Received]:
        with self.lock:
            return [r for r in self.received if r.posted and webhook_id in (None, r.webhook_id)]

    def _snowflake(self) -> int:
        self._next_id += 1
        return self._next_id

    # -- request handling -------------------------------------------------------------------------
    def handle(self, request: BaseHTTPRequestHandler) -> None:
        url = urlsplit(request.path)
        parts = url.path.strip("/").split("/")
        if parts[:1] == ["api"] and len(parts) > 1 and parts[1].startswith("v"):
            parts = [parts[0], *parts[2:]]
        body = request.rfile.read(int(request.headers.get("Content-Length") or 0))
        if len(parts) != 4 or parts[:2] != ["api", "webhooks"]:
            self._reply(request, 404, {"message": "404: Not Found", "code": 0})
            return
        webhook_id, token = parts[2], parts[3]
        wait = parse_qs(url.query).get("wait", ["false"])[0] in ("true", "True", "1")
        record = Received(webhook_id, wait, request.headers.get("Content-Type", ""), {}, [])
        with self.lock:
            self.received.append(record)
            known = self.webhooks.get(webhook_id) == token
            action = self.scripts.get(webhook_id, deque()).popleft() if self.scripts.get(webhook_id) else None
        if not known:
            record.status = 404
            self._reply(request, 404, {"message": "Unknown Webhook", "code": 10015})
            return
        if isinstance(action, Slow):
            time.sleep(action.seconds)
            record.status = 504
            self._reply(request, 504, {"message": "Gateway Timeout", "code": 0})
            return
        if isinstance(action, Status):
            record.status = action.code
            self._reply(request, action.code, {"message": "Internal Server Error", "code": 0})
            return
        headers: dict[str, str] = {}
        if isinstance(action, RateLimited):
            self._rate_limited(request, record, action.retry_after, action.is_global, action.scope)
            return
        with self.lock:
            allowed, remaining, reset_after = self.buckets[webhook_id].take(time.time())
        if not allowed:
            self._rate_limited(request, record, reset_after, False, "user")
            return
        headers = {
            "X-RateLimit-Limit": str(self.bucket_limit),
            "X-RateLimit-Remaining": str(remaining),
            "X-RateLimit-Reset": f"{time.time() + reset_after:.3f}",
            "X-RateLimit-Reset-After": f"{reset_after:.3f}",
            "X-RateLimit-Bucket": f"fake-{webhook_id}",
        }
        try:
            record.payload, record.files = self._parse(record.content_type, body)
        except ValueError as exc:
            record.status = 400
            self._reply(request, 400, {"message": str(exc), "code": 50109}, headers)
            return
        errors = validate_message(record.payload, record.files)
        if errors is not None:
            record.status = 400
            self._reply(request, 400, errors, headers)
            return
        record.status, record.posted = (200 if wait else 204), True
        if isinstance(action, PostedLate):
            time.sleep(action.seconds)
        if not wait:
            self._reply(request, 204, None, headers)
            return
        self._reply(request, 200, self._message(webhook_id, record), headers)

    def _rate_limited(
        self,
        request: BaseHTTPRequestHandler,
        record: Received,
        retry_after: float,
        is_global: bool,
        scope: str,
    ) -> None:
        record.status = 429
        headers = {
            "Retry-After": str(max(1, round(retry_after))),
            "X-RateLimit-Limit": str(self.bucket_limit),
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset-After": f"{retry_after:.3f}",
            "X-RateLimit-Scope": "global" if is_global else scope,
        }
        if is_global:
            headers["X-RateLimit-Global"] = "true"
        body = {"message": "You are being rate limited.", "retry_after": retry_after, "global": is_global}
        self._reply(request, 429, body, headers)

    @staticmethod
    def _parse(content_type: str, body: bytes) -> tuple[dict[str, Any], list[Upload]]:
        if content_type.startswith("application/json"):
            parsed = json.loads(body or b"null")
            if not isinstance(parsed, dict):
                raise ValueError("The request body contains invalid JSON.")
            return parsed, []
        if not content_type.startswith("multipart/form-data"):
            raise ValueError("Unsupported content type.")
        message = BytesParser(policy=HTTP).parsebytes(
            b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body
        )
        payload: dict[str, Any] = {}
        files = []
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            decoded = part.get_payload(decode=True)
            data = decoded if isinstance(decoded, bytes) else b""
            if name == "payload_json":
                payload = json.loads(data)
            elif isinstance(name, str) and name.startswith("files["):
                files.append(Upload(name, part.get_filename() or "", part.get_content_type(), data))
        return payload, files

    def _message(self, webhook_id: str, record: Received) -> dict[str, Any]:
        with self.lock:
            message_id = record.message_id = str(self._snowflake())
        return {
            "id": message_id,
            "type": 0,
            "channel_id": "1000000000000000001",
            "webhook_id": webhook_id,
            "content": record.payload.get("content", ""),
            "embeds": record.payload.get("embeds", []),
            "attachments": [
                {
                    "id": str(self._snowflake()),
                    "filename": f.filename,
                    "size": len(f.data),
                    "content_type": f.content_type,
                }
                for f in record.files
            ],
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()),
        }

    @staticmethod
    def _reply(
        request: BaseHTTPRequestHandler,
        status: int,
        body: dict[str, Any] | None,
        headers: dict[str, str] | None = None,
    ) -> None:
        data = json.dumps(body).encode() if body is not None else b""
        try:
            request.send_response(status)
            for name, value in (headers or {}).items():
                request.send_header(name, value)
            if body is not None:
                request.send_header("Content-Type", "application/json")
            request.send_header("Content-Length", str(len(data)))
            request.end_headers()
            request.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timed out)


def validate_message(payload: dict[str, Any], files: list[Upload]) -> dict[str, Any] | None:
    """Discord's checks of an execute-webhook body: None when valid, else the 400 error body."""
    embeds = payload.get("embeds") or []
    content = payload.get("content") or ""
    if not content and not embeds and not files and not payload.get("components"):
        return {"message": "Cannot send an empty message", "code": 50006}
    errors: dict[str, Any] = {}
    if len(content) > 2000:
        errors["content"] = "Must be 2000 or fewer in length."
    if len(embeds) > 10:
        errors["embeds"] = "Must be 10 or fewer in length."
    filenames = {f.filename for f in files}
    total = 0
    for i, embed in enumerate(embeds[:10]):
        texts = {
            "title": embed.get("title") or "",
            "description": embed.get("description") or "",
            "footer.text": (embed.get("footer") or {}).get("text") or "",
            "author.name": (embed.get("author") or {}).get("name") or "",
        }
        for name, text in texts.items():
            total += len(text)
            if len(text) > EMBED_LIMITS[name]:
                errors[f"embeds.{i}.{name}"] = f"Must be {EMBED_LIMITS[name]} or fewer in length."
        embed_fields = embed.get("fields") or []
        if len(embed_fields) > 25:
            errors[f"embeds.{i}.fields"] = "Must be 25 or fewer in length."
        for j, item in enumerate(embed_fields):
            name, value = str(item.get("name", "")), str(item.get("value", ""))
            total += len(name) + len(value)
            if not name or len(name) > 256:
                errors[f"embeds.{i}.fields.{j}.name"] = "Must be between 1 and 256 in length."
            if not value or len(value) > 1024:
                errors[f"embeds.{i}.fields.{j}.value"] = "Must be between 1 and 1024 in length."
        image = (embed.get("image") or {}).get("url", "")
        if image.startswith("attachment://"):
            filename = image.removeprefix("attachment://")
            if filename not in filenames or not filename.lower().endswith(IMAGE_TYPES):
                errors[f"embeds.{i}.image.url"] = "Scheme 'attachment' needs an uploaded image of that name."
    if total > EMBED_TOTAL:
        errors["embeds"] = f"Embed size exceeds maximum size of {EMBED_TOTAL}"
    if errors:
        return {"message": "Invalid Form Body", "code": 50035, "errors": errors}
    return None
