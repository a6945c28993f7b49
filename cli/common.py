"""What every `nodenet` command shares: its options, exit codes and error reporting.

Exit codes (DESIGN §5): 0 success, 1 the request failed (the API's message is printed),
2 usage error (typer's own, or the daemon refusing the input as bad_request/invalid: a bad
address, key or filter), 69 (EX_UNAVAILABLE from sysexits.h) the daemon did not answer,
with a one-line hint and never a traceback.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import typer

from nodenet.cli import output
from nodenet.cli.client import DEFAULT_TIMEOUT_S, ApiClient, ApiError, Query, Unreachable

__all__ = [
    "EX_UNAVAILABLE",
    "Api",
    "AsJson",
    "call",
    "connect",
    "emit",
    "fail",
    "unavailable",
    "unexpected",
]

EX_UNAVAILABLE = 69

Api = Annotated[
    str | None,
    typer.Option(
        "--api",
        envvar="NODENET_API",
        metavar="SOCKET|URL",
        help="nodenetd's API: a unix socket path or http://127.0.0.1:PORT",
        show_default="$XDG_RUNTIME_DIR/nodenet/api.sock; /run/nodenet/api.sock as root",
    ),
]
AsJson = Annotated[
    bool, typer.Option("--json", help="Print the API's JSON answer instead of text.")
]


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print `nodenet: message` on stderr; raise the returned Exit to stop with `code`."""
    typer.echo(f"nodenet: {message}", err=True)
    return typer.Exit(code)


def unexpected(answer: Any) -> typer.Exit:
    """Report an answer of a shape this version does not know; raise the Exit (code 1)."""
    return fail(
        f"unexpected answer from nodenetd: {output.to_json(answer)[:200]}"
        " (are nodenet and nodenetd the same version?)"
    )


def emit(answer: Any, as_json: bool, render: Callable[[Any], str]) -> None:
    """Print the answer as JSON, or as `render` puts it for people."""
    if as_json:
        typer.echo(output.to_json(answer))
        return
    try:
        text = render(answer)
    except (AttributeError, KeyError, TypeError):
        raise unexpected(answer) from None
    typer.echo(text)


def unavailable(error: Unreachable) -> typer.Exit:
    """The one-line hint for a daemon that does not answer, and exit 69."""
    return fail(error.hint, EX_UNAVAILABLE)


def connect(api: str | None, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> ApiClient:
    """A client for `--api` (or its default); a malformed address is a usage error."""
    try:
        return ApiClient(api, timeout_s=timeout_s)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--api") from None


def call(
    api: str | None,
    method: str,
    path: str,
    body: Any = None,
    query: Query | None = None,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> Any:
    """One request; on failure print the message or hint and exit 1 or 69."""
    client = connect(api, timeout_s=timeout_s)
    try:
        return client.request(method, path, body, query)
    except Unreachable as exc:
        raise unavailable(exc) from None
    except ApiError as exc:
        # The daemon refused what the user typed (a bad address, key, filter): a usage
        # error, as typer's own are; anything else is the request failing.
        message = exc.message
        if exc.status == 401:
            message += (
                "; the CLI sends the token in $NODENET_API_TOKEN (create one on the daemon's"
                " machine with `nodenet api-token create NAME --role read|write|admin`)"
            )
        raise fail(message, 2 if exc.code in ("bad_request", "invalid") else 1) from None
