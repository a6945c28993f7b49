"""A client for nodenetd's local HTTP API (docs/api.md) on the standard library alone.

`http.client` rather than httpx or aiohttp: importing those costs ~150 ms (DESIGN §2), and
`nodenet peers` should answer well within 200 ms. The daemon listens on a unix socket
(file permissions are the access control) and optionally on TCP at 127.0.0.1; a target is
either a socket path or `http://127.0.0.1:PORT`.

Two failures are kept apart because people act on them differently: `Unreachable` (no
answer at all: start the daemon, or point `--api` elsewhere) and `ApiError` (the daemon
answered with `{"error": {"code", "message"}}`: fix the request).
"""

from __future__ import annotations

import http.client
import json
import os
import socket
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "ApiClient",
    "ApiError",
    "Unreachable",
    "default_target",
    "parse_sse",
]

DEFAULT_TIMEOUT_S = 30.0
"""Per request. Generous: the slowest ordinary answer is a join, which the caller extends."""
STREAM_IDLE_TIMEOUT_S = 60.0
"""An event stream with nothing, not even the 15 s keepalive, for this long is dead."""

QueryValue = str | int | float | Sequence[str] | None
Query = Mapping[str, QueryValue]


class ApiError(Exception):
    """nodenetd answered with an error status; `message` says what and what to do."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{message} (HTTP {status}, {code})")
        self.status = status
        self.code = code
        self.message = message


class Unreachable(Exception):
    """No answer from nodenetd: no socket, connection refused, timed out or cut off."""

    def __init__(self, target: str, reason: str) -> None:
        super().__init__(f"cannot reach nodenetd at {target} ({reason})")
        self.target = target
        self.reason = reason

    @property
    def hint(self) -> str:
        """One line for people: what failed and what to try."""
        if self.reason == "permission denied":
            return (
                f"cannot reach nodenetd at {self.target} (permission denied); join the"
                " socket's group (e.g. `sudo usermod -aG nodenet $USER`, then log in again)"
                " or use sudo — or pass --api"
            )
        return (
            f"cannot reach nodenetd at {self.target} ({self.reason}); is it running?"
            " (systemctl status nodenetd) — or pass --api"
        )


def default_target(
    environ: Mapping[str, str] | None = None, *, system_socket: Path | None = None
) -> str:
    """`$NODENET_API`, else the socket a daemon of this user without `api.socket` listens
    on, else (when that does not exist but the service's does) the system service's socket:
    an operator in group nodenet reaches the packaged daemon without --api."""
    env = os.environ if environ is None else environ
    if explicit := env.get("NODENET_API"):
        return explicit
    from nodenet.daemon.paths import SYSTEM_API_SOCKET, default_api_socket  # stdlib only

    own = default_api_socket(environ=env)
    system = SYSTEM_API_SOCKET if system_socket is None else system_socket
    if not own.exists() and system.exists():
        return str(system)
    return str(own)


class _UnixConnection(http.client.HTTPConnection):
    """HTTP over a unix stream socket."""

    def __init__(self, path: str, timeout: float | None) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        """Connect to the socket file instead of a host and port."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


class ApiClient:
    """Blocking requests to one nodenetd; every method returns the parsed JSON answer."""

    def __init__(self, target: str | None = None, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.target = target or default_target()
        # Only sent over TCP; the unix socket's permissions are its access control.
        self._token = os.environ.get("NODENET_API_TOKEN", "")
        self.timeout_s = timeout_s
        self._socket_path: str | None = None
        self._host = ""
        self._port = 0
        if "://" in self.target:
            url = urlsplit(self.target)
            if url.scheme != "http" or not url.hostname or url.path not in ("", "/"):
                raise ValueError(
                    f"{self.target!r} is not an API address: use a unix socket path or"
                    " http://127.0.0.1:PORT"
                )
            self._host = url.hostname
            try:
                self._port = url.port or 80
            except ValueError:
                raise ValueError(f"{self.target!r}: the port is not a number in 1-65535") from None
        else:
            self._socket_path = os.path.expanduser(self.target)

    def get(self, path: str, body: Any = None, query: Query | None = None) -> Any:
        """GET `path` and return the parsed answer."""
        return self.request("GET", path, body, query)

    def post(self, path: str, body: Any = None, query: Query | None = None) -> Any:
        """POST `body` (JSON) to `path` and return the parsed answer."""
        return self.request("POST", path, body, query)

    def patch(self, path: str, body: Any = None, query: Query | None = None) -> Any:
        """PATCH `path` with `body` (JSON) and return the parsed answer."""
        return self.request("PATCH", path, body, query)

    def delete(self, path: str, body: Any = None, query: Query | None = None) -> Any:
        """DELETE `path` and return the parsed answer (None if there is no body)."""
        return self.request("DELETE", path, body, query)

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        query: Query | None = None,
        *,
        timeout_s: float | None = None,
    ) -> Any:
        """Send one request; raise ApiError for an error answer, Unreachable for none."""
        timeout = self.timeout_s if timeout_s is None else timeout_s
        connection = self._connection(timeout)
        try:
            with self._reaching(timeout):
                response = self._send(connection, method, path, body, query, {})
                data = response.read()
        finally:
            connection.close()
        return _decode(response.status, response.reason, data)

    def stream(
        self,
        path: str,
        query: Query | None = None,
        *,
        last_event_id: str | None = None,
        idle_timeout_s: float = STREAM_IDLE_TIMEOUT_S,
        on_open: Callable[[], None] | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Follow a server-sent event stream: yields {"id", "event", "data"} per event.

        `on_open` is called once the daemon has accepted the stream, before any event: a
        quiet stream may carry no event for a long time.
        """
        headers = {"Accept": "text/event-stream"}
        if last_event_id is not None:
            headers["Last-Event-ID"] = last_event_id
        connection = self._connection(idle_timeout_s)
        response: http.client.HTTPResponse | None = None
        try:
            with self._reaching(idle_timeout_s):
                response = self._send(connection, "GET", path, None, query, headers)
                if not 200 <= response.status < 300:
                    _decode(response.status, response.reason, response.read())
                kind = response.getheader("Content-Type", "")
                if not kind.startswith("text/event-stream"):
                    raise ApiError(
                        response.status,
                        "bad_response",
                        f"{path} answered {kind or 'no content type'}, not an event stream",
                    )
                if on_open is not None:
                    on_open()
                yield from parse_sse(iter(response.readline, b""))
        finally:
            # Closed here rather than by the garbage collector, which would swallow a
            # KeyboardInterrupt raised meanwhile (io finalizers ignore exceptions).
            if response is not None:
                response.close()
            connection.close()

    def _connection(self, timeout: float) -> http.client.HTTPConnection:
        if self._socket_path is not None:
            return _UnixConnection(self._socket_path, timeout)
        return http.client.HTTPConnection(self._host, self._port, timeout=timeout)

    def _send(
        self,
        connection: http.client.HTTPConnection,
        method: str,
        path: str,
        body: Any,
        query: Query | None,
        headers: dict[str, str],
    ) -> http.client.HTTPResponse:
        url = path
        if query:
            pairs = {k: v for k, v in query.items() if v is not None and v != []}
            if pairs:
                url += "?" + urlencode(pairs, doseq=True)
        headers.setdefault("Accept", "application/json")
        if self._token and self._socket_path is None:
            headers["Authorization"] = f"Bearer {self._token}"
        payload = None
        if body is not None:
            payload = json.dumps(body, separators=(",", ":")).encode()
            headers["Content-Type"] = "application/json"
        connection.request(method, url, body=payload, headers=headers)
        return connection.getresponse()

    @contextmanager
    def _reaching(self, timeout: float) -> Iterator[None]:
        """Turn socket-level failures into Unreachable, naming the reason in plain words."""
        try:
            yield
        except FileNotFoundError:
            raise Unreachable(self.target, "no such file") from None
        except ConnectionRefusedError:
            raise Unreachable(self.target, "connection refused") from None
        except PermissionError:
            raise Unreachable(self.target, "permission denied") from None
        except TimeoutError:
            raise Unreachable(self.target, f"no answer within {timeout:g} s") from None
        except (ConnectionResetError, BrokenPipeError, http.client.IncompleteRead):
            raise Unreachable(self.target, "connection closed before the answer") from None
        except http.client.HTTPException as exc:
            raise Unreachable(self.target, f"the answer is not HTTP: {exc!r:.60}") from None
        except OSError as exc:
            raise Unreachable(self.target, (exc.strerror or str(exc)).lower()) from None


_NOT_JSON = object()


def _decode(status: int, reason: str, data: bytes) -> Any:
    """The parsed body of a success; ApiError built from the error body otherwise."""
    try:
        parsed = json.loads(data) if data else None
    except ValueError:
        parsed = _NOT_JSON
    if 200 <= status < 300:
        if parsed is _NOT_JSON:
            raise ApiError(
                status, "bad_response", f"the answer is not JSON: {data[:80]!r} (is --api right?)"
            )
        return parsed
    error = parsed.get("error") if isinstance(parsed, dict) else None
    if (
        isinstance(error, dict)
        and isinstance(error.get("code"), str)
        and isinstance(error.get("message"), str)
    ):
        raise ApiError(status, error["code"], error["message"])
    snippet = data[:200].decode("utf-8", "replace").strip()
    raise ApiError(
        status, f"http_{status}", f"HTTP {status} {reason}" + (f": {snippet}" if snippet else "")
    )


def parse_sse(lines: Iterable[bytes]) -> Iterator[dict[str, Any]]:
    """Server-sent events from raw lines: {"id", "event", "data"}; data parsed as JSON.

    Comment lines (`: keepalive`) are skipped. An event without data (`event: reset`) is
    still reported, with data None; data that is not JSON is passed on as text.
    """
    event_id: str | None = None
    event: str | None = None
    data: list[str] = []
    for raw in lines:
        line = raw.decode("utf-8", "replace").rstrip("\r\n")
        if not line:
            if event is not None or data or event_id is not None:
                yield {"id": event_id, "event": event or "message", "data": _event_data(data)}
            event_id, event, data = None, None, []
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "data":
            data.append(value)
        elif field == "event":
            event = value
        elif field == "id":
            event_id = value


def _event_data(lines: list[str]) -> Any:
    if not lines:
        return None
    text = "\n".join(lines)
    try:
        return json.loads(text)
    except ValueError:
        return text
