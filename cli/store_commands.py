"""`nodenet submit/get/ls/delete`: the replicated key/value store through the local API.

Like `daemon_commands.py`, these import neither the daemon nor cryptography: the daemon
signs what it is given, so the command only moves bytes. Values are bytes end to end:
`submit` sends UTF-8 as `value` (readable in `--json` and `watch`) and anything else as
`value_b64`; `get` writes the exact bytes to stdout, without a newline.
"""

from __future__ import annotations

import base64
import binascii
import sys
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import typer

from nodenet.cli import output
from nodenet.cli.common import Api, AsJson, call, emit, fail, unexpected

__all__ = ["delete", "get", "ls", "submit"]

MAX_VALUE_BYTES = 1024 * 1024
"""`nodenet.protocol.entries.MAX_VALUE_LIMIT`, repeated to keep the protocol out of the CLI:
no daemon accepts more, whatever its `store.max_value`, so larger input is refused before
it is read whole or sent."""
PAGE = 100
"""Entries per `ls` request unless --limit says otherwise (the API allows 1-1000)."""

Key = Annotated[str, typer.Argument(metavar="KEY", help="The key (UTF-8 text, 1-256 bytes).")]


def entry_path(key: str) -> str:
    """`/v1/entries/{key}` with the key percent-encoded; its slashes stay path separators."""
    _check_key(key)
    return "/v1/entries/" + quote(key, safe="/")


def _check_key(key: str) -> None:
    # The daemon checks keys fully; an empty one would address the listing instead.
    if not key:
        raise typer.BadParameter("a key is 1-256 bytes of UTF-8 text, not empty", param_hint="KEY")


def value_body(key: str, value: bytes) -> dict[str, str]:
    """The POST /v1/entries body: UTF-8 as `value`, other bytes as `value_b64`."""
    try:
        return {"key": key, "value": value.decode("utf-8")}
    except UnicodeDecodeError:
        return {"key": key, "value_b64": base64.b64encode(value).decode("ascii")}


def _read_limited(source: Any, name: str) -> bytes:
    data: bytes = source.read(MAX_VALUE_BYTES + 1)
    if len(data) > MAX_VALUE_BYTES:
        raise fail(f"{name} is over {MAX_VALUE_BYTES} bytes, more than any nodenetd stores")
    return data


def _read_value(value: str | None, file: str | None) -> bytes:
    """The bytes to store, from exactly one of VALUE, `-` (stdin) and --file."""
    if (value is None) == (file is None):
        raise typer.BadParameter(
            "give the value as VALUE, - (stdin) or --file FILE: exactly one of them",
            param_hint="VALUE",
        )
    if file == "-" or value == "-":
        return _read_limited(sys.stdin.buffer, "stdin")
    if file is not None:
        try:
            with Path(file).expanduser().open("rb") as source:
                return _read_limited(source, file)
        except OSError as exc:
            raise typer.BadParameter(
                f"cannot read {file}: {exc.strerror or exc}", param_hint="--file"
            ) from None
    assert value is not None
    # argv that is not UTF-8 arrives as surrogate escapes: send the bytes as they were typed
    return value.encode("utf-8", "surrogateescape")


def submit(
    key: Key,
    value: Annotated[
        str | None,
        typer.Argument(metavar="VALUE|-", help="The value as text; - reads bytes from stdin."),
    ] = None,
    file: Annotated[
        str | None,
        typer.Option("--file", "-f", metavar="FILE", help="Read the value (any bytes) from FILE."),
    ] = None,
    as_json: AsJson = False,
    api: Api = None,
) -> None:
    """Store a value under KEY, signed by this node; answers once it is on disk here."""
    _check_key(key)  # before waiting for stdin
    body = value_body(key, _read_value(value, file))
    answer = call(api, "POST", "/v1/entries", body)
    emit(answer, as_json, output.format_written)


def get(
    key: Key,
    meta: Annotated[
        bool,
        typer.Option("--meta", help="Print the key, author, hlc, time and id, not the value."),
    ] = False,
    as_json: AsJson = False,
    api: Api = None,
) -> None:
    """Write KEY's value to stdout, byte for byte (no newline is added)."""
    answer = call(api, "GET", entry_path(key))
    if as_json or meta:
        emit(answer, as_json, output.format_entry_meta)
        return
    try:
        value = base64.b64decode(answer["value_b64"], validate=True)
    except (KeyError, TypeError, binascii.Error):
        raise unexpected(answer) from None
    sys.stdout.flush()
    sys.stdout.buffer.write(value)
    sys.stdout.buffer.flush()


def ls(
    prefix: Annotated[
        str, typer.Argument(metavar="PREFIX", help="Only keys that start with PREFIX.")
    ] = "",
    limit: Annotated[
        int,
        typer.Option(
            "--limit",
            "-n",
            min=1,
            max=1000,
            metavar="N",
            help="Show at most N entries; with --all, fetch N per request.",
        ),
    ] = PAGE,
    every: Annotated[bool, typer.Option("--all", "-a", help="List every entry.")] = False,
    as_json: AsJson = False,
    api: Api = None,
) -> None:
    """List the live entries under PREFIX in key order: KEY SIZE AUTHOR TIME."""
    entries, after = _collect(api, prefix, limit, every)
    if entries or as_json:
        emit(
            {"entries": entries, "next": after},
            as_json,
            lambda a: output.format_entries(a["entries"]),
        )
    else:
        under = f" under {output.printable(prefix)!r}" if prefix else ""
        typer.echo(f"nodenet: no entries{under}", err=True)
    if after is not None:
        typer.echo(
            f"nodenet: showing the first {len(entries)}; more may follow"
            " (--all lists every entry, --limit up to 1000)",
            err=True,
        )


def _collect(
    api: str | None, prefix: str, limit: int, every: bool
) -> tuple[list[dict[str, Any]], str | None]:
    """Live entries under `prefix` (at most `limit` unless `every`), and where more start.

    A page can hold fewer live entries than asked, none even, because deleted keys take
    their place in it; so without --all this asks again until `limit` are collected.
    """
    entries: list[dict[str, Any]] = []
    after: str | None = None
    while True:
        size = limit if every else limit - len(entries)
        query = {"prefix": prefix, "after": after, "limit": size}
        answer = call(api, "GET", "/v1/entries", query=query)
        try:
            page, following = list(answer["entries"]), answer["next"]
        except (KeyError, TypeError):
            raise unexpected(answer) from None
        if following is not None and following == after:
            raise unexpected(answer)  # the same page again: asking on would never end
        entries.extend(page)
        after = following
        if after is None or (not every and len(entries) >= limit):
            return entries, after


def delete(key: Key, as_json: AsJson = False, api: Api = None) -> None:
    """Delete KEY everywhere (writes a signed tombstone that replicates like a value)."""
    answer = call(api, "DELETE", entry_path(key))
    emit(answer, as_json, output.format_written)
