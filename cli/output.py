"""How the `nodenet` commands print API answers: plain aligned columns and short summaries.

Human output is meant for reading and for `grep`/`awk`: columns separated by two spaces,
no trailing blanks, no colour unless stdout is a terminal (and `NO_COLOR` is unset).
Scripts should use `--json`, which prints the API's answer as it came.
"""

from __future__ import annotations

import json
import os
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from typing import IO, Any

__all__ = [
    "columns",
    "format_duration",
    "format_entries",
    "format_entry_event",
    "format_entry_meta",
    "format_join",
    "format_keys",
    "format_member_event",
    "format_peers",
    "format_self",
    "format_tags",
    "format_written",
    "printable",
    "short_hex",
    "to_json",
    "value_size",
    "wants_colour",
]

GAP = "  "
STATUS_COLOURS = {"alive": "green", "suspect": "yellow", "dead": "red", "left": "bright_black"}

Paint = Callable[[int, str], str]
"""(column index, cell text) → the text to print, e.g. with colour codes around it."""


def wants_colour(stream: IO[str], environ: Mapping[str, str] | None = None) -> bool:
    """Colour only for a terminal, and never with `NO_COLOR` set or `TERM=dumb`."""
    env = os.environ if environ is None else environ
    if "NO_COLOR" in env or env.get("TERM") == "dumb":
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def _width(text: str) -> int:
    """Columns `text` takes on a terminal: wide East Asian characters count twice."""
    return sum(
        0 if unicodedata.combining(c) else 2 if unicodedata.east_asian_width(c) in "WF" else 1
        for c in text
    )


def columns(
    headers: Sequence[str], rows: Sequence[Sequence[str]], *, paint: Paint | None = None
) -> str:
    """Left-aligned columns, two spaces apart, headers first; `paint` styles body cells."""
    widths = [_width(h) for h in headers]
    for row in rows:
        widths = [max(w, _width(cell)) for w, cell in zip(widths, row, strict=True)]
    lines = []
    for number, row in enumerate([headers, *rows]):
        cells = []
        for index, cell in enumerate(row):
            shown = paint(index, cell) if paint and number else cell
            cells.append(shown + " " * (widths[index] - _width(cell)))
        lines.append(GAP.join(cells).rstrip())
    return "\n".join(lines)


def format_tags(tags: Mapping[str, str], *, skip: Sequence[str] = ("name",)) -> str:
    """`k=v,k=v` sorted by key, leaving out `skip` (the name has its own column)."""
    return ",".join(f"{k}={v}" for k, v in sorted(tags.items()) if k not in skip)


def format_peers(peers: Sequence[Mapping[str, Any]], *, colour: bool = False) -> str:
    """The `nodenet peers` table: NAME ID ADDRESS STATUS TAGS, sorted by name."""
    rows = [
        [
            str(p.get("name", "")),
            str(p.get("short_id") or str(p.get("id", ""))[:10]),
            str(p.get("address", "")),
            str(p.get("status", "")),
            format_tags(p.get("tags") or {}),
        ]
        for p in sorted(peers, key=lambda p: (str(p.get("name", "")), str(p.get("id", ""))))
    ]
    paint: Paint | None = None
    if colour:
        import typer

        def status_colour(index: int, cell: str) -> str:
            if index == 3 and cell in STATUS_COLOURS:
                return typer.style(cell, fg=STATUS_COLOURS[cell])
            return cell

        paint = status_colour

    return columns(["NAME", "ID", "ADDRESS", "STATUS", "TAGS"], rows, paint=paint)


def format_duration(seconds: float) -> str:
    """A rough human duration: 42s, 5m 3s, 3h 12m, 2d 4h."""
    whole = max(0, int(seconds))
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {secs}s"
    return f"{secs}s"


def format_self(node: Mapping[str, Any]) -> str:
    """The `nodenet status` summary of GET /v1/self, one `label  value` line per fact."""
    members = node.get("members") or {}
    keyring = node.get("keyring") or {}
    awareness = node.get("awareness", "?")
    health = "healthy" if awareness == 0 else "slow to answer probes; timeouts are stretched"
    counts = ", ".join(
        f"{members.get(state, 0)} {state}" for state in ("alive", "suspect", "dead", "left")
    )
    uptime = node.get("uptime_s")
    facts = [
        ("name", node.get("name", "?")),
        ("id", node.get("id", "?")),
        ("address", node.get("address", "?")),
        ("status", f"{node.get('status', '?')}, incarnation {node.get('incarnation', '?')}"),
        ("awareness", f"{awareness} ({health})"),
        ("members", counts),
        ("tags", format_tags(node.get("tags") or {}) or "-"),
        ("keyring", f"primary {keyring.get('primary', '?')}, {_count(keyring.get('keys'), 'key')}"),
        ("uptime", format_duration(uptime) if isinstance(uptime, int | float) else "?"),
        ("version", f"{node.get('version', '?')} (protocol {node.get('protocol', '?')})"),
    ]
    width = max(len(label) for label, _ in facts)
    return "\n".join(f"{label:<{width}}{GAP}{value}" for label, value in facts)


def format_join(answer: Mapping[str, Any]) -> str:
    """One line per address of a POST /v1/join answer, then how many joined."""
    results = answer.get("results") or []
    rows = [
        [
            str(r.get("address", "?")),
            "joined" if r.get("ok") else f"failed: {r.get('error') or 'unknown error'}",
        ]
        for r in results
    ]
    body = columns(["ADDRESS", "RESULT"], rows)
    return f"{body}\njoined {answer.get('joined', 0)} of {len(results)}"


def format_keys(answer: Mapping[str, Any]) -> str:
    """The `nodenet keys list` table: ID ROLE, primary first."""
    keys = sorted(answer.get("keys") or [], key=lambda k: not k.get("primary"))
    rows = [[str(k.get("id", "?")), "primary" if k.get("primary") else "secondary"] for k in keys]
    return columns(["ID", "ROLE"], rows)


def to_json(data: Any) -> str:
    """The API's answer for scripts, indented, keys in the order the daemon sent them."""
    return json.dumps(data, indent=2, ensure_ascii=False)


VALUE_PREVIEW = 60
"""Characters of a value `nodenet watch` shows before cutting it off with `…`."""


def printable(text: str) -> str:
    """`text` with characters that would break a line or a column (\\n, \\t, …) escaped."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


def value_size(entry: Mapping[str, Any]) -> int:
    """Bytes of an entry's value, from its base64 form without decoding it."""
    encoded = str(entry.get("value_b64") or "")
    return len(encoded) // 4 * 3 - encoded[-2:].count("=")


def short_hex(text: str) -> str:
    """The first 10 characters of an entry id, with `…` when there are more."""
    return text if len(text) <= 10 else text[:10] + "…"


def format_written(answer: Mapping[str, Any]) -> str:
    """One line for a POST or DELETE /v1/entries answer: key, id, HLC and its time."""
    verb = "deleted" if answer.get("deleted") else "stored"
    return (
        f"{verb} {printable(str(answer['key']))} id {short_hex(str(answer['id']))}"
        f" hlc {answer['hlc']} ({answer['time']})"
    )


def format_entries(entries: Sequence[Mapping[str, Any]]) -> str:
    """The `nodenet ls` table: KEY SIZE AUTHOR TIME, in the daemon's (key) order."""
    rows = [
        [
            printable(str(e["key"])),
            str(value_size(e)),
            str(e.get("author", ""))[:10],
            str(e.get("time", "")),
        ]
        for e in entries
    ]
    return columns(["KEY", "SIZE", "AUTHOR", "TIME"], rows)


def format_entry_meta(entry: Mapping[str, Any]) -> str:
    """`nodenet get --meta`: one `label  value` line per fact of a GET /v1/entries/{key}."""
    size = value_size(entry)
    kind = "text" if entry.get("value") is not None else "binary"
    facts = [
        ("key", printable(str(entry["key"]))),
        ("author", entry["author"]),
        ("hlc", entry["hlc"]),
        ("time", entry["time"]),
        ("id", entry["id"]),
        ("size", f"{size} byte{'' if size == 1 else 's'} ({kind})"),
    ]
    width = max(len(label) for label, _ in facts)
    return "\n".join(f"{label:<{width}}{GAP}{value}" for label, value in facts)


def format_entry_event(data: Mapping[str, Any]) -> str:
    """One `nodenet watch` line for an entry event: time, key, value or `deleted`, origin."""
    if data.get("deleted"):
        change = "deleted"
    elif data.get("value") is None:
        change = f"= <binary, {value_size(data)} bytes>"
    elif not data["value"]:
        change = "= <empty>"
    else:
        text = printable(str(data["value"]))
        cut = text[:VALUE_PREVIEW] + "…" if len(text) > VALUE_PREVIEW else text
        change = f"= {cut}"
    author = str(data.get("author", "?"))[:10]
    return (
        f"{data['time']}{GAP}{printable(str(data['key']))}{GAP}{change}"
        f"{GAP}(by {author}, {data.get('origin', '?')})"
    )


def format_member_event(data: Mapping[str, Any]) -> str:
    """One `nodenet watch --members` line: time, member name, what happened, id and address."""
    member = data["member"]
    ident = member.get("short_id") or str(member.get("id", "?"))[:10]
    return (
        f"{data['at']}{GAP}member {printable(str(member.get('name', '?')))}{GAP}{data['kind']}"
        f"{GAP}({ident}, {member.get('address', '?')})"
    )


def _count(n: object, noun: str) -> str:
    """ "1 key", "2 keys", "? keys" when the daemon did not say."""
    return f"{n} {noun}" if n == 1 else f"{n if isinstance(n, int) else '?'} {noun}s"
