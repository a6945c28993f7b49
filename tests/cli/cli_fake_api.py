"""A stand-in for nodenetd's local API (docs/api.md) that the CLI tests talk to.

A standard-library HTTP server on a unix socket (or TCP) in a background thread. It answers
each (method, path) with a canned status and JSON body, by default the examples of
docs/api.md, and records every request so tests can check paths, queries and bodies.
"""

from __future__ import annotations

import json
import socketserver
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

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
class FakeApi:
    """Canned answers by (method, path); `requests` lists what was asked, in order."""

    routes: dict[tuple[str, str], tuple[int, Any]] = field(default_factory=dict)
    requests: list[Recorded] = field(default_factory=list)

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
        """Answer `method path` with `status` and `body` (JSON, EventStream, or bytes)."""
        self.routes[(method, path)] = (status, body)

    def only_request(self) -> Recorded:
        """The single request received; fails the test if there were more or none."""
        assert len(self.requests) == 1, self.requests
        return self.requests[0]

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
                status, body = fake.routes.get(
                    (self.command, url.path),
                    (404, error("not_found", f"no route {self.command} {url.path}")),
                )
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
