"""The commands that only talk to a running nodenetd through its local API (docs/api.md).

These import nothing from the daemon except `nodenet.daemon.paths` (for the default socket)
and no cryptography: `nodenet peers` has to start, ask and print in well under 200 ms. A
test runs them in a fresh interpreter and checks `sys.modules`. `main.py` registers them.
"""

from __future__ import annotations

import sys
from enum import StrEnum
from typing import Annotated, Any
from urllib.parse import quote

import typer

from nodenet.cli import output
from nodenet.cli.common import Api, AsJson, call, emit
from nodenet.cli.keytext import check_key_text, key_id

__all__ = [
    "join",
    "keys_install",
    "keys_list",
    "keys_remove",
    "keys_use",
    "leave",
    "peers",
    "status",
    "tags_delete",
    "tags_set",
]

JOIN_TIMEOUT_S = 60.0
"""A join waits up to the profile's `tcp_timeout_s` (30 s for wan) per address, in parallel."""
LEAVE_TIMEOUT_S = 60.0
"""A leave waits up to `daemon.leave_timeout_s` (5 s by default) before answering."""


class Status(StrEnum):
    """A member's state, as the API names it."""

    alive = "alive"
    suspect = "suspect"
    dead = "dead"
    left = "left"


def _pair(text: str, option: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise typer.BadParameter(f"{text!r} is not key=value", param_hint=option)
    return key, value


def peers(
    status: Annotated[
        list[Status] | None,
        typer.Option("--status", help="Only members in this state (repeatable: any of them)."),
    ] = None,
    tag: Annotated[
        list[str] | None,
        typer.Option(
            "--tag",
            metavar="KEY=REGEX",
            help="Only members whose tag matches, anchored (repeatable: all must match).",
        ),
    ] = None,
    name: Annotated[
        str | None,
        typer.Option("--name", metavar="REGEX", help="Only members whose name matches, anchored."),
    ] = None,
    as_json: AsJson = False,
    api: Api = None,
) -> None:
    """List the cluster's members (this node included)."""
    for text in tag or []:
        _, pattern = _pair(text, "--tag")
        _check_regex(pattern, "--tag")
    if name is not None:
        _check_regex(name, "--name")
    query = {
        "status": [s.value for s in status or []],
        "tag": list(tag or []),
        "name": name,
    }
    answer = call(api, "GET", "/v1/peers", query=query)
    colour = output.wants_colour(sys.stdout)
    emit(answer, as_json, lambda a: output.format_peers(a.get("peers", []), colour=colour))


def _check_regex(pattern: str, option: str) -> None:
    from nodenet.daemon.patterns import PatternError, compile_pattern

    try:
        compile_pattern(pattern)
    except PatternError as exc:
        raise typer.BadParameter(
            f"{pattern!r} is not a regular expression: {exc}", param_hint=option
        ) from None


def status(as_json: AsJson = False, api: Api = None) -> None:
    """Summarise this node: name, id, address, state, members, keyring, uptime."""
    answer = call(api, "GET", "/v1/self")
    emit(answer, as_json, output.format_self)


def join(
    addresses: Annotated[
        list[str],
        typer.Argument(metavar="ADDR", help="host:port of members to join (IP addresses)."),
    ],
    timeout: Annotated[
        float, typer.Option("--timeout", metavar="SECONDS", help="How long to wait for the answer.")
    ] = JOIN_TIMEOUT_S,
    as_json: AsJson = False,
    api: Api = None,
) -> None:
    """Join the cluster through members at these addresses (push-pull with each)."""
    answer = call(api, "POST", "/v1/join", {"addresses": addresses}, timeout_s=timeout)
    emit(answer, as_json, output.format_join)
    if not (isinstance(answer, dict) and answer.get("joined")):
        raise typer.Exit(1)


def leave(
    timeout: Annotated[
        float, typer.Option("--timeout", metavar="SECONDS", help="How long to wait for the answer.")
    ] = LEAVE_TIMEOUT_S,
    api: Api = None,
) -> None:
    """Leave the cluster gracefully; nodenetd then shuts down."""
    call(api, "POST", "/v1/leave", timeout_s=timeout)
    typer.echo("left the cluster; nodenetd is shutting down")


def _print_tags(answer: Any, as_json: bool) -> None:
    emit(answer, as_json, lambda a: "\n".join(f"{k}={v}" for k, v in sorted(a["tags"].items())))


def tags_set(
    pairs: Annotated[list[str], typer.Argument(metavar="KEY=VALUE", help="Tags to set.")],
    as_json: AsJson = False,
    api: Api = None,
) -> None:
    """Set tags on this node (announced to the cluster); prints the resulting tags."""
    changes = dict(_pair(p, "KEY=VALUE") for p in pairs)
    _print_tags(call(api, "PATCH", "/v1/self/tags", {"set": changes, "delete": []}), as_json)


def tags_delete(
    keys: Annotated[list[str], typer.Argument(metavar="KEY", help="Tags to remove.")],
    as_json: AsJson = False,
    api: Api = None,
) -> None:
    """Remove tags from this node (announced to the cluster); prints the resulting tags."""
    _print_tags(call(api, "PATCH", "/v1/self/tags", {"set": {}, "delete": keys}), as_json)


def keys_list(as_json: AsJson = False, api: Api = None) -> None:
    """List the ids of the keys in this node's keyring (never the keys)."""
    answer = call(api, "GET", "/v1/keys")
    emit(answer, as_json, output.format_keys)


def keys_install(
    key: Annotated[
        str,
        typer.Argument(
            metavar="KEY",
            help="Base64 cluster key (a keyring file's line will do), or - to read it from stdin.",
        ),
    ],
    as_json: AsJson = False,
    api: Api = None,
) -> None:
    """Add a cluster key to this node's keyring as a secondary key."""
    text = sys.stdin.readline() if key == "-" else key
    text = text.split("#", 1)[0].strip()  # a line of a keyring file: "KEY  # key id …"
    try:
        ident = key_id(check_key_text(text))
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="KEY") from None
    answer = call(api, "POST", "/v1/keys", {"key": text})
    emit(
        answer,
        as_json,
        lambda _: f"installed key {ident}; once every node has it: nodenet keys use {ident}",
    )


def _key_id_argument(text: str) -> str:
    """A key id, or the id of a whole base64 key given instead."""
    text = text.strip()
    if len(text) == 44:
        try:
            return key_id(check_key_text(text))
        except ValueError:
            pass
    return text


KeyId = Annotated[
    str, typer.Argument(metavar="KEY_ID", help="Key id as `keys list` shows it (or the key).")
]


def keys_use(ident: KeyId, as_json: AsJson = False, api: Api = None) -> None:
    """Make an installed key this node's primary (the one it seals with)."""
    ident = _key_id_argument(ident)
    answer = call(api, "POST", f"/v1/keys/{quote(ident, safe='')}/use")
    emit(answer, as_json, lambda _: f"primary key is now {ident}")


def keys_remove(ident: KeyId, as_json: AsJson = False, api: Api = None) -> None:
    """Remove a secondary key from this node's keyring."""
    ident = _key_id_argument(ident)
    answer = call(api, "DELETE", f"/v1/keys/{quote(ident, safe='')}")
    emit(answer, as_json, lambda _: f"removed key {ident}")
