"""A stand-in for nodenetd's local API (docs/api.md) that the CLI tests talk to.

A standard-library HTTP server on a unix socket (or TCP) in a background thread. It answers
each (method, path) with a canned status and JSON body, by default the examples of
docs/api.md, and records every request so tests can check paths, queries and bodies.
The store endpoints (`/v1/entries…`, `/v1/store`) are a small in-memory store with the
daemon's paging rule, and `/v1/events` can replay an `EventLog` a few events per connection,
so that `nodenet watch` has to reconnect and resume; a canned route overrides either.
"""

from __future__ import annotations

import base64
import hashlib
import json
import socketserver
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

NODE_ID = "A" * 52
SELF = {
    "id": NODE_ID,
    "short_id": "aaaaaaaaaa",
    "name": "web-1",
    "address": "10.0.0.5:7950",
    "status": "alive",
    "incarnation": 3,
    "tags": {"name": "web-1", "role": "web"},
    "awareness": 0,
    "version": "0.1.0",
    "protocol": "1.0",
    "uptime_s": 3725.5,
    "members": {"alive": 2, "suspect": 1, "dead": 0, "left": 0},
    "keyring": {"primary": "94153013", "keys": 2},
}
PEERS = {
    "peers": [
        {
            "id": "C" * 52,
            "short_id": "cccccccccc",
            "name": "web-2",
            "address": "[fd00::7]:7950",
            "status": "suspect",
            "incarnation": 1,
            "tags": {"name": "web-2", "role": "web", "dc": "eu-west"},
            "self": False,
            "changed_s_ago": 2.0,
        },
        {
            "id": NODE_ID,
            "short_id": "aaaaaaaaaa",
            "name": "web-1",
            "address": "10.0.0.5:7950",
            "status": "alive",
            "incarnation": 3,
            "tags": {"name": "web-1", "role": "web"},
            "self": True,
            "changed_s_ago": 31.2,
        },
        {
            "id": "B" * 52,
            "short_id": "bbbbbbbbbb",
            "name": "db-primary",
            "address": "10.0.0.17:7950",
            "status": "alive",
            "incarnation": 12,
            "tags": {"name": "db-primary"},
            "self": False,
            "changed_s_ago": 400.0,
        },
    ]
}
KEYS = {
    "primary": "94153013",
    "keys": [{"id": "5f0e2a1c", "primary": False}, {"id": "94153013", "primary": True}],
}
AUTHOR = "4gkrygpbb7" + "a" * 42
FIRST_HLC = 117678816983515136
TIME = "2026-11-25T19:50:45.476Z"
MAX_VALUE = 64 * 1024
ENTRIES_PREFIX = "/v1/entries/"


def error(code: str, message: str) -> dict[str, Any]:
    """An error body as the API sends it."""
    return {"error": {"code": code, "message": message}}


@dataclass(frozen=True)
class Recorded:
    """One request the fake received."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any


@dataclass(frozen=True)
class EventStream:
    """A canned `text/event-stream` answer, sent as is and then closed."""

    text: str


@dataclass
class EventLog:
    """Events `/v1/events` replays: each connection gets at most `per_connection` of those
    after its `Last-Event-ID` (or `?after=`; all of them without), then the fake closes it.
    A resume point before `oldest` first gets `event: reset`, as the daemon's ring does."""

    events: list[tuple[int, str, dict[str, Any]]]
    per_connection: int = 2
    oldest: int = 1

    def answer(self, resume: int | None) -> EventStream:
        """The text of one connection's stream."""
        parts = [": connected\n\n"]
        if resume is not None and resume + 1 < self.oldest:
            reset = {"missed_after": resume, "oldest": self.oldest}
            parts.append(f"id: 0\nevent: reset\ndata: {json.dumps(reset)}\n\n")
        after = [e for e in self.events if e[0] > (resume or 0) and e[0] >= self.oldest]
        for ident, kind, data in after[: self.per_connection]:
            parts.append(f"id: {ident}\nevent: {kind}\ndata: {json.dumps(data)}\n\n")
            parts.append(": keepalive\n\n")
        return EventStream("".join(parts))


@dataclass
class FakeStore:
    """The daemon's store API in memory: heads by key, tombstones kept (they fill pages)."""

    heads: dict[str, dict[str, Any]] = field(default_factory=dict)
    written: int = 0

    def write(self, key: str, value: bytes, *, deleted: bool = False) -> dict[str, Any]:
        """Store a head as POST or DELETE does; the metadata the API answers with."""
        self.written += 1
        entry = {
            "key": key,
            "id": hashlib.sha256(f"{key}/{self.written}".encode() + value).hexdigest(),
            "author": AUTHOR,
            "hlc": FIRST_HLC + self.written,
            "time": TIME,
            "deleted": deleted,
        }
        text: str | None
        try:
            text = value.decode("utf-8")
        except UnicodeDecodeError:
            text = None
        self.heads[key] = {**entry, "value": text, "value_b64": base64.b64encode(value).decode()}
        return entry

    def answer(
        self, method: str, path: str, query: dict[str, list[str]], body: Any
    ) -> tuple[int, Any] | None:
        """(status, body) for a store request, or None if `path` is not the store's."""
        if path == "/v1/store" and method == "GET":
            live = [e for e in self.heads.values() if not e["deleted"]]
            return 200, {"entries": len(live), "digest": "ab" * 32}
        if path == "/v1/entries" and method == "GET":
            return self._list(query)
        if path == "/v1/entries" and method == "POST":
            return self._post(body or {})
        if not path.startswith(ENTRIES_PREFIX):
            return None
        key = unquote(path.removeprefix(ENTRIES_PREFIX))
        if method == "DELETE":
            return 200, self.write(key, b"", deleted=True)
        head = self.heads.get(key)
        if method != "GET":
            return 405, error("method_not_allowed", f"{method} is not allowed on {path}")
        if head is None or head["deleted"]:
            return 404, error("not_found", f"no entry for key {key!r}")
        return 200, head

    def _post(self, body: dict[str, Any]) -> tuple[int, Any]:
        key = body.get("key")
        if not key:
            return 400, error("bad_request", "an entry needs a key (or a signed entry)")
        if body.get("delete"):
            return 200, self.write(key, b"", deleted=True)
        if ("value" in body) == ("value_b64" in body):
            return 400, error("bad_request", "give exactly one of value (text) or value_b64")
        if "value" in body:
            value = body["value"].encode()
        else:
            value = base64.b64decode(body["value_b64"], validate=True)
        if len(value) > MAX_VALUE:
            message = f"value is {len(value)} bytes; the limit is {MAX_VALUE} (store.max_value)"
            return 413, error("too_large", message)
        return 200, self.write(key, value)

    def _list(self, query: dict[str, list[str]]) -> tuple[int, Any]:
        prefix = query.get("prefix", [""])[0]
        after = query.get("after", [None])[0]
        limit = int(query.get("limit", ["100"])[0])
        if not 1 <= limit <= 1000:
            return 422, error("invalid", "query.limit: Input should be less than or equal to 1000")
        keys = sorted(k for k in self.heads if k.startswith(prefix) and k > (after or ""))
        page = keys[:limit]
        return 200, {
            "entries": [self.heads[k] for k in page if not self.heads[k]["deleted"]],
            "next": page[-1] if len(page) == limit else None,
        }


@dataclass
class FakeApi:
    """Canned answers by (method, path); `requests` lists what was asked, in order."""

    routes: dict[tuple[str, str], tuple[int, Any]] = field(default_factory=dict)
    requests: list[Recorded] = field(default_factory=list)
    store: FakeStore = field(default_factory=FakeStore)
    events: EventLog | None = None

    def __post_init__(self) -> None:
        self.routes.update(
            {
                ("GET", "/v1/self"): (200, SELF),
                ("GET", "/v1/peers"): (200, PEERS),
                ("POST", "/v1/join"): (200, {"joined": 1, "results": []}),
                ("POST", "/v1/leave"): (200, {"left": True}),
                ("PATCH", "/v1/self/tags"): (200, {"tags": {"name": "web-1", "role": "db"}}),
                ("GET", "/v1/keys"): (200, KEYS),
                ("POST", "/v1/keys"): (200, KEYS),
            }
        )

    def respond(self, method: str, path: str, status: int, body: Any) -> None:
        """Answer `method path` with `status` and `body` (JSON, EventStream, or bytes; or a
        function of no arguments returning one of those, called for each request)."""
        self.routes[(method, path)] = (status, body)

    def only_request(self) -> Recorded:
        """The single request received; fails the test if there were more or none."""
        assert len(self.requests) == 1, self.requests
        return self.requests[0]

    def _route(self, request: Recorded) -> tuple[int, Any]:
        canned = self.routes.get((request.method, request.path))
        if canned is not None:
            status, body = canned
            return status, body() if callable(body) else body
        if request.path == "/v1/events" and self.events is not None:
            resume = request.query.get("after", [request.headers.get("last-event-id")])[0]
            return 200, self.events.answer(None if resume is None else int(resume))
        stored = self.store.answer(request.method, request.path, request.query, request.body)
        if stored is not None:
            return stored
        return 404, error("not_found", f"no route {request.method} {request.path}")

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                url = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                fake.requests.append(
                    Recorded(
                        method=self.command,
                        path=url.path,
                        query=parse_qs(url.query),
                        headers={k.lower(): v for k, v in self.headers.items()},
                        body=json.loads(raw) if raw else None,
                    )
                )
                status, body = fake._route(fake.requests[-1])
                kind = "application/json"
                if isinstance(body, EventStream):
                    data, kind = body.text.encode(), "text/event-stream"
                elif isinstance(body, bytes):
                    data, kind = body, "text/plain"
                else:
                    data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._answer()

            def do_POST(self) -> None:
                self._answer()

            def do_PATCH(self) -> None:
                self._answer()

            def do_DELETE(self) -> None:
                self._answer()

            def log_message(self, format: str, *args: Any) -> None:
                pass  # quiet; and a unix peer has no address to log

        return Handler


class _UnixHTTPServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


@contextmanager
def serving(fake: FakeApi, *, unix_path: str | None = None) -> Iterator[str]:
    """Serve `fake` on `unix_path`, or on a free 127.0.0.1 port; yields the --api target."""
    server: socketserver.BaseServer
    if unix_path is not None:
        server = _UnixHTTPServer(unix_path, fake._handler())
        target = unix_path
    else:
        server = ThreadingHTTPServer(("127.0.0.1", 0), fake._handler())
        target = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    try:
        yield target
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
