"""The local HTTP API (docs/api.md): a FastAPI app served by hypercorn's Trio worker.

The app only translates HTTP to calls on the daemon (`DaemonApi`) and back; every
decision is the daemon's. Errors are always `{"error": {"code", "message"}}` with the right
status, FastAPI's validation errors included, so scripts need one error format.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Mapping,
    MutableMapping,
    Sequence,
)
from dataclasses import dataclass
from typing import Annotated, Any, Protocol
from urllib.parse import unquote_to_bytes

import trio
from fastapi import FastAPI, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match, Route

from nodenet.daemon.events import EventHub, Subscription, TooManySubscribers
from nodenet.daemon.metrics import CONTENT_TYPE
from nodenet.daemon.patterns import (
    MAX_FILTERS,
    PatternError,
    compile_pattern,
    forget_patterns,
)
from nodenet.daemon.tokens import OPEN_PATHS, Role, Tokens, required_role

__all__ = ["ApiError", "DaemonApi", "EntryWrite", "create_app"]

MAX_BODY = 64 * 1024
MAX_ENTRY_BODY = 8 * 1024 * 1024  # a batch of entries (values are base64 in JSON)
BODY_TIMEOUT_S = 30.0  # a request body must arrive within this (else 408)
KEEPALIVE_S = 15.0
_Scope = MutableMapping[str, Any]  # ASGI
_Receive = Callable[..., Awaitable[Any]]
_Send = Callable[..., Awaitable[None]]

STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "timeout",
    409: "conflict",
    413: "too_large",
    422: "invalid",
    502: "bad_gateway",
    503: "unavailable",
    507: "insufficient_storage",
}


@dataclass(frozen=True, slots=True)
class EntryWrite:
    """One write asked through the API: our own entry, or a pre-signed one."""

    key: str = ""
    value: bytes = b""
    tombstone: bool = False
    signed: bytes | None = None


class ApiError(Exception):
    """An error the API reports as `{"error": {"code", "message"}}` with `status`."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


class DaemonApi(Protocol):
    """What the API needs from the daemon."""

    hub: EventHub

    def self_info(self) -> dict[str, Any]:
        """`GET /v1/self`."""

    def peers(self) -> list[dict[str, Any]]:
        """Every member, ourselves included, as API objects."""

    async def join(self, addresses: list[str]) -> list[dict[str, Any]]:
        """Push-pull with each address; per-address results."""

    async def leave(self) -> None:
        """Leave the cluster and shut down (after the response is sent)."""

    async def update_tags(self, set_tags: dict[str, str], delete: list[str]) -> dict[str, str]:
        """Apply and record tag changes; the new tags."""

    def keys(self) -> dict[str, Any]:
        """The keyring, by key id."""

    async def install_key(self, key: str) -> dict[str, Any]:
        """Install a cluster key."""

    async def use_key(self, key_id: str) -> dict[str, Any]:
        """Make an installed key primary."""

    async def remove_key(self, key_id: str) -> dict[str, Any]:
        """Remove a secondary key."""

    async def put_entries(self, writes: Sequence[EntryWrite]) -> list[dict[str, Any]]:
        """Write entries atomically (durable when it returns)."""

    async def get_entry(self, key: str) -> dict[str, Any] | None:
        """The live head of a key."""

    async def list_entries(self, prefix: str, after: str | None, limit: int) -> dict[str, Any]:
        """Live heads under a prefix and where to continue."""

    async def store_summary(self) -> dict[str, Any]:
        """Entry count and digest of the heads."""

    def health(self) -> tuple[bool, dict[str, str]]:
        """Overall health and the individual checks."""

    def metrics_text(self) -> bytes:
        """Prometheus exposition text."""


class _Body(BaseModel):
    """A request body: values must have the types the schema says (strict: `0` is not
    `false`, `"1"` is not `1`), so the API accepts exactly what `/openapi.json` promises."""

    model_config = ConfigDict(strict=True, extra="forbid")  # a misspelt field is a 422


class JoinRequest(_Body):
    """Body of `POST /v1/join`."""

    addresses: list[str] = Field(min_length=1, max_length=64, examples=[["127.0.0.1:7951"]])


class TagsRequest(_Body):
    """Body of `PATCH /v1/self/tags`."""

    set: dict[str, str] = Field(default_factory=dict)
    delete: list[str] = Field(default_factory=list)


class EntryRequest(_Body):
    """One entry to write: `value` (UTF-8 text) or `value_b64`; or `signed` (a pre-signed
    entry, base64); `delete` writes a tombstone."""

    key: str | None = Field(default=None, examples=["config/web/replicas"])
    value: str | None = None
    value_b64: str | None = None
    delete: bool = False
    signed: str | None = Field(default=None, description="base64 of a signed entry")


class EntriesRequest(_Body):
    """Body of `POST /v1/entries`: one entry, or `entries` for a batch."""

    key: str | None = None
    value: str | None = None
    value_b64: str | None = None
    delete: bool = False
    signed: str | None = None
    entries: list[EntryRequest] | None = Field(default=None, max_length=1000)


class KeyRequest(_Body):
    """Body of `POST /v1/keys`."""

    key: str = Field(description="base64 of 32 bytes, as `nodenet keys generate` prints")


class ErrorDetail(BaseModel):
    code: str = Field(description="stable, machine-readable: " + ", ".join(STATUS_CODES.values()))
    message: str = Field(description="for people: what went wrong and what to do")


class ErrorBody(BaseModel):
    """Every error answer (docs/api.md "Errors")."""

    error: ErrorDetail


ERROR_MEANINGS = {
    400: "The request is well-formed JSON but asks for something invalid (see the message)",
    401: "On TCP: no bearer token, or an unknown one",
    403: "On TCP: the token's role is too low for this endpoint",
    404: "No such entry or key",
    409: "Conflicts with the daemon's state (leaving, the primary key)",
    413: "Request body, key or value over its limit",
    422: "The request does not match this document's schema",
    503: "The store is not serving (starting or stopping)",
    507: "The state directory is full; nothing was written",
}


def _errors(*statuses: int, tcp_auth: bool = True) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route: the error answers it can give, in the error format."""
    every = (*statuses, 401, 403) if tcp_auth else statuses
    return {s: {"model": ErrorBody, "description": ERROR_MEANINGS[s]} for s in sorted(every)}


def _allowed_methods(app: Any, scope: Mapping[str, Any]) -> list[str]:
    """Every method some route serves at this path. Starlette's own 405 names only the
    methods of the first route whose path matched, and a path may have one route per
    method (`GET` and `POST /v1/entries`)."""
    methods: set[str] = set()
    for route in app.router.routes:
        if isinstance(route, Route) and route.methods:
            match, _ = route.matches(dict(scope))
            if match is not Match.NONE:
                methods |= route.methods
    return sorted(methods)


def _error(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        {"error": {"code": code, "message": message}}, status_code=status, headers=headers
    )


def _matches(
    peer: dict[str, Any],
    status: list[str],
    tags: list[tuple[str, Any]],
    name: Any,
) -> bool:
    if status and peer["status"] not in status:
        return False
    if name is not None and not name.fullmatch(peer["name"]):
        return False
    return all(k in peer["tags"] and pattern.fullmatch(peer["tags"][k]) for k, pattern in tags)


def _without_body(receive: _Receive) -> _Receive:
    """`receive` for the application that reports an empty body (the client's, if any, is
    never read), then passes on what follows (a disconnect)."""
    given = False

    async def body_or_next() -> Any:
        nonlocal given
        if not given:
            given = True
            return {"type": "http.request", "body": b"", "more_body": False}
        return await receive()

    return body_or_next


def _closing(send: _Send) -> _Send:
    """`send` that asks the server to close the connection after this response."""

    async def send_and_close(message: Any) -> None:
        if message["type"] == "http.response.start":
            headers = [h for h in message.get("headers", []) if h[0].lower() != b"connection"]
            message = {**message, "headers": [*headers, (b"connection", b"close")]}
        await send(message)

    return send_and_close


def _check_path_key(request: Request) -> None:
    """Refuse a key in the path whose percent-escapes are not UTF-8: decoding replaced them
    with U+FFFD, and DELETE /v1/entries/%ff deleted the key "\ufffd"."""
    raw = request.scope.get("raw_path") or b""
    try:
        unquote_to_bytes(raw.decode("ascii", "replace")).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ApiError(
            400,
            "bad_request",
            f"the key in the path is not UTF-8 (percent-escaped byte at {exc.start}); keys are"
            " UTF-8 text, percent-encoded as UTF-8",
        ) from None


def _pattern(text: str, what: str) -> Any:
    try:
        return compile_pattern(text)
    except PatternError as exc:
        raise ApiError(
            400, "bad_request", f"{what} {text!r:.80} is not a valid regular expression: {exc}"
        ) from None


class _BodyLimit:
    """ASGI middleware: refuse request bodies over `limit` bytes with 413."""

    def __init__(self, app: Callable[..., Awaitable[None]], limit: int, entry_limit: int) -> None:
        self.app = app
        self.limit = limit
        self.entry_limit = entry_limit

    async def __call__(self, scope: _Scope, receive: _Receive, send: _Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        limit = self.entry_limit if scope["path"].startswith("/v1/entries") else self.limit
        if scope.get("method") not in ("POST", "PUT", "PATCH") or scope["path"] in OPEN_PATHS:
            # No endpoint here takes a body. One announced is never read (/health and
            # /metrics are open on TCP: a client without a token must not make us hold
            # 64 KiB per connection): the application answers as ever (200, or 405 for a
            # method it does not take) and the connection closes after the answer. The
            # empty body of every other such request is still read below: hypercorn
            # recycles a connection promptly only once the request was received whole.
            chunked = b"chunked" in headers.get(b"transfer-encoding", b"")
            if declared not in (None, b"0") or chunked:
                await self.app(scope, _without_body(receive), _closing(send))
                return
            limit = 0
        if declared is not None and declared.isdigit() and int(declared) > limit:
            response = _error(413, "too_large", f"request body over {limit} bytes")
            await response(scope, receive, send)
            return
        # Read the body here, whatever its framing (with both Content-Length and chunked
        # Transfer-Encoding, the chunks frame it and the length means nothing), at most
        # `limit` bytes and within BODY_TIMEOUT_S: too much is a 413, too slow a 408.
        chunks: list[bytes] = []
        seen = 0
        with trio.move_on_after(BODY_TIMEOUT_S) as reading:
            while True:
                message = await receive()
                if message["type"] != "http.request":
                    return  # the client went away
                body = message.get("body", b"")
                seen += len(body)
                if seen > limit:
                    response = _error(413, "too_large", f"request body over {limit} bytes")
                    await response(scope, receive, send)
                    return
                chunks.append(body)
                if not message.get("more_body", False):
                    break
        if reading.cancelled_caught:
            message = f"request body not received within {BODY_TIMEOUT_S:.0f} s"
            await _error(408, "timeout", message)(scope, receive, send)
            return
        replayed = False

        async def replay() -> Any:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": b"".join(chunks), "more_body": False}

        await self.app(scope, replay, send)


def create_app(daemon: DaemonApi) -> FastAPI:
    """The API application bound to one daemon."""
    from importlib.metadata import version

    app = FastAPI(
        title="nodenetd local API",
        version=version("nodenetd"),
        description="Membership, store and keyring of the local nodenet daemon (docs/api.md).",
        docs_url=None,
        redoc_url=None,
    )

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return _error(exc.status, exc.code, exc.message)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = STATUS_CODES.get(exc.status_code, "error")
        message = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
        if exc.status_code == 404:
            message = (
                f"no such endpoint: {request.method} {request.url.path} (see GET /openapi.json)"
            )
        headers = exc.headers
        if exc.status_code == 405:
            allowed = _allowed_methods(request.app, request.scope)
            message = f"{request.method} is not allowed on {request.url.path}"
            if allowed:
                message += f" (allowed: {', '.join(allowed)})"
                headers = {**(headers or {}), "Allow": ", ".join(allowed)}
        return _error(exc.status_code, code, message, headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:5]
        )
        return _error(422, "invalid", problems or "invalid request")

    @app.get("/v1/self", summary="This node", responses=_errors())
    async def get_self() -> dict[str, Any]:
        return daemon.self_info()

    @app.get(
        "/v1/peers",
        summary="Members, this node included, with filters",
        responses=_errors(400, 422),
    )
    async def get_peers(
        status: Annotated[list[str], Query(description="alive, suspect, dead or left")] = [],  # noqa: B006
        tag: Annotated[list[str], Query(description="key=value; value: anchored RE2 regex")] = [],  # noqa: B006
        name: Annotated[str | None, Query(description="anchored RE2 regular expression")] = None,
    ) -> dict[str, Any]:
        allowed = {"alive", "suspect", "dead", "left"}
        for s in status:
            if s not in allowed:
                raise ApiError(
                    400, "bad_request", f"status {s!r} is not one of {', '.join(sorted(allowed))}"
                )
        if len(tag) + (name is not None) > MAX_FILTERS:
            raise ApiError(400, "bad_request", f"at most {MAX_FILTERS} tag and name filters")
        tag_filters = []
        try:
            for t in tag:
                key, sep, value = t.partition("=")
                if not sep or not key:
                    raise ApiError(400, "bad_request", f"tag filter {t!r:.80} must be key=value")
                tag_filters.append((key, _pattern(value, f"tag {key!r:.40}")))
            name_pattern = _pattern(name, "name") if name is not None else None
            return {
                "peers": [
                    p for p in daemon.peers() if _matches(p, status, tag_filters, name_pattern)
                ]
            }
        finally:
            if tag or name is not None:
                forget_patterns()

    @app.post(
        "/v1/join",
        summary="Join a cluster through one or more members",
        responses={
            **_errors(400, 413, 422),
            502: {"description": "No address answered: the error, `joined: 0` and `results`"},
        },
    )
    async def post_join(request: JoinRequest) -> JSONResponse:
        results = await daemon.join(request.addresses)
        joined = sum(1 for r in results if r["ok"])
        if not joined:
            detail = "; ".join(f"{r['address']}: {r.get('error', '?')}" for r in results)
            message = f"could not join through any address: {detail}"
            body = {"error": {"code": "join_failed", "message": message}, "joined": 0}
            return JSONResponse({**body, "results": results}, status_code=502)
        return JSONResponse({"joined": joined, "results": results})

    @app.post(
        "/v1/leave",
        summary="Leave the cluster gracefully and stop the daemon",
        responses=_errors(409),
    )
    async def post_leave() -> dict[str, bool]:
        await daemon.leave()
        return {"left": True}

    @app.patch(
        "/v1/self/tags", summary="Set and delete tags", responses=_errors(400, 409, 413, 422)
    )
    async def patch_tags(request: TagsRequest) -> dict[str, Any]:
        return {"tags": await daemon.update_tags(request.set, request.delete)}

    @app.get(
        "/v1/events",
        summary="Server-sent events of membership changes and stored entries",
        response_class=StreamingResponse,
        responses={
            200: {"content": {"text/event-stream": {}}, "description": "An endless stream"},
            **_errors(400, 422),
        },
    )
    async def get_events(
        after: Annotated[int | None, Query(ge=0, description="resume after this event id")] = None,
        last_event_id: Annotated[str | None, Header()] = None,
    ) -> StreamingResponse:
        resume = after
        if resume is None and last_event_id is not None:
            text = last_event_id.strip()
            if not (text.isascii() and text.isdigit() and len(text) <= 19):
                raise ApiError(
                    400, "bad_request", "Last-Event-ID must be an event id (up to 19 digits)"
                )
            last_event_id = text
            resume = int(last_event_id)
        return _EventStream(daemon.hub, resume)

    def to_write(item: EntryRequest | EntriesRequest) -> EntryWrite:
        if item.signed is not None:
            if item.key is not None or item.value is not None or item.value_b64 is not None:
                raise ApiError(
                    400, "bad_request", "a signed entry carries its key and value: send only it"
                )
            return EntryWrite(signed=_b64(item.signed, "signed"))
        if item.key is None:
            raise ApiError(400, "bad_request", "an entry needs a key (or a signed entry)")
        if item.delete:
            if item.value is not None or item.value_b64 is not None:
                raise ApiError(400, "bad_request", "a delete has no value: drop value/value_b64")
            return EntryWrite(key=item.key, tombstone=True)
        if (item.value is None) == (item.value_b64 is None):
            raise ApiError(400, "bad_request", "give exactly one of value (text) or value_b64")
        if item.value is not None:
            try:
                return EntryWrite(key=item.key, value=item.value.encode("utf-8"))
            except UnicodeEncodeError:
                raise ApiError(
                    400, "bad_request", "value is not valid Unicode text; send value_b64"
                ) from None
        return EntryWrite(key=item.key, value=_b64(item.value_b64 or "", "value_b64"))

    @app.post(
        "/v1/entries",
        summary="Write one entry or an atomic batch; answers once durable",
        responses=_errors(400, 413, 422, 503, 507),
    )
    async def post_entries(request: EntriesRequest) -> dict[str, Any]:
        if request.entries is not None:
            single = (request.key, request.value, request.value_b64, request.signed)
            if request.delete or any(field is not None for field in single):
                raise ApiError(
                    400,
                    "bad_request",
                    "give one entry (key, value…) or a batch (entries), not both",
                )
            return {"entries": await daemon.put_entries([to_write(i) for i in request.entries])}
        (written,) = await daemon.put_entries([to_write(request)])
        return written

    @app.get(
        "/v1/entries/{key:path}",
        summary="The current value of a key",
        responses=_errors(400, 404, 503),
    )
    async def get_entry(key: str, request: Request) -> dict[str, Any]:
        _check_path_key(request)
        entry = await daemon.get_entry(key)
        if entry is None:
            raise ApiError(404, "not_found", f"no entry for key {key!r}")
        return entry

    @app.delete(
        "/v1/entries/{key:path}",
        summary="Delete a key (writes a tombstone)",
        responses=_errors(400, 413, 503, 507),
    )
    async def delete_entry(key: str, request: Request) -> dict[str, Any]:
        _check_path_key(request)
        (written,) = await daemon.put_entries([EntryWrite(key=key, tombstone=True)])
        return written

    @app.get(
        "/v1/entries",
        summary="Entries under a prefix, in key order",
        responses=_errors(400, 422, 503),
    )
    async def list_entries(
        prefix: str = "",
        after: str | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> dict[str, Any]:
        return await daemon.list_entries(prefix, after, limit)

    @app.get(
        "/v1/store",
        summary="Entry count and a digest of every head",
        responses=_errors(503),
    )
    async def store_summary() -> dict[str, Any]:
        return await daemon.store_summary()

    @app.get("/v1/keys", summary="The local keyring (key ids only)", responses=_errors())
    async def get_keys() -> dict[str, Any]:
        return daemon.keys()

    @app.post("/v1/keys", summary="Install a cluster key", responses=_errors(400, 413, 422))
    async def post_key(request: KeyRequest) -> dict[str, Any]:
        return await daemon.install_key(request.key)

    @app.post(
        "/v1/keys/{key_id}/use",
        summary="Make an installed key the primary",
        responses=_errors(404),
    )
    async def use_key(key_id: str) -> dict[str, Any]:
        return await daemon.use_key(key_id)

    @app.delete("/v1/keys/{key_id}", summary="Remove a secondary key", responses=_errors(404, 409))
    async def delete_key(key_id: str) -> dict[str, Any]:
        return await daemon.remove_key(key_id)

    @app.get(
        "/health",
        summary="Readiness",
        responses={503: {"description": "A check failed; the same body as 200 names it"}},
    )
    async def health() -> JSONResponse:
        ok, checks = daemon.health()
        return JSONResponse(
            {"status": "ok" if ok else "unavailable", "checks": checks},
            status_code=200 if ok else 503,
        )

    @app.get(
        "/metrics",
        summary="Prometheus metrics",
        response_class=Response,
        responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}},
    )
    async def metrics() -> Response:
        return Response(daemon.metrics_text(), media_type=CONTENT_TYPE)

    return app


class _EventStream(StreamingResponse):
    """Server-sent events from the hub. The whole response runs in the subscription's
    cancel scope: a client that stops reading blocks the send, and the hub must still be
    able to end it when it falls too far behind (it resumes by id after reconnecting)."""

    def __init__(self, hub: EventHub, after: int | None) -> None:
        self._hub = hub
        self._after = after
        self._subscription: Subscription | None = None
        super().__init__(
            self._body(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    async def __call__(self, scope: _Scope, receive: _Receive, send: _Send) -> None:
        try:
            async with self._hub.subscribe(self._after) as subscription:
                self._subscription = subscription
                with subscription.scope:
                    await super().__call__(scope, receive, send)
        except TooManySubscribers as exc:
            await _error(503, "unavailable", f"{exc}; try again later")(scope, receive, send)

    async def _body(self) -> AsyncIterator[bytes]:
        assert self._subscription is not None
        yield b": connected\n\n"
        while True:
            with trio.move_on_after(KEEPALIVE_S) as idle:
                try:
                    event = await self._subscription.receive()
                except trio.EndOfChannel:
                    return
            if idle.cancelled_caught:
                yield b": keepalive\n\n"
                continue
            data = json.dumps(event.data, separators=(",", ":"))
            yield f"id: {event.id}\nevent: {event.kind}\ndata: {data}\n\n".encode()


class _TokenCheck:
    """ASGI middleware: on TCP (not the unix socket), a bearer token with the right role."""

    def __init__(self, app: Callable[..., Awaitable[None]], tokens: Callable[[], Tokens]) -> None:
        self.app = app
        self.tokens = tokens

    async def __call__(self, scope: _Scope, receive: _Receive, send: _Send) -> None:
        # hypercorn gives no "server" for unix sockets: there, file permissions decide.
        if scope["type"] == "http" and scope.get("server") is not None:
            needed = required_role(scope["method"], scope["path"])
            if needed is not None:
                refusal = self._refusal(scope, needed)
                if refusal is not None:
                    await refusal(scope, receive, send)
                    return
        await self.app(scope, receive, send)

    def _refusal(self, scope: MutableMapping[str, Any], needed: Role) -> JSONResponse | None:
        header = dict(scope.get("headers") or []).get(b"authorization", b"").decode("latin-1")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            return _error(
                401,
                "unauthorized",
                "on TCP this endpoint needs 'Authorization: Bearer <token>'"
                " (create one with `nodenet api-token create`); the unix socket needs none",
            )
        stored = self.tokens().role_of(token.strip())
        if stored is None:
            return _error(401, "unauthorized", "unknown or revoked API token")
        if stored.role < needed:
            return _error(
                403,
                "forbidden",
                f"token {stored.name!r} has role {stored.role.name.lower()};"
                f" {scope['method']} {scope['path']} needs {needed.name.lower()}",
            )
        return None


def wrap(app: FastAPI, tokens: Callable[[], Tokens] = Tokens) -> _TokenCheck:
    """The app with token checks (TCP) in front, then the request body limit: a client
    without a token gets its 401 before any of its body is read."""
    return _TokenCheck(_BodyLimit(app, MAX_BODY, MAX_ENTRY_BODY), tokens)


def _b64(text: str, field_name: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, "bad_request", f"{field_name} is not valid base64") from None
