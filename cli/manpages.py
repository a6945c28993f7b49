"""Man pages for `nodenet` (1) and `nodenetd` (8), generated from the commands themselves.

Generated rather than written by hand so that they can never disagree with `--help`:
`make install` runs `python -m nodenet.cli.manpages --out DIR`.
"""

from __future__ import annotations

import argparse
import sys
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

import typer.main

__all__ = ["nodenet_page", "nodenetd_page"]

SEE_ALSO = "docs/operations.md, docs/configuration.md, docs/api.md in the nodenet sources"


def _escape(text: str) -> str:
    lines = []
    for line in text.replace("\\", "\\\\").splitlines():
        if line.startswith((".", "'")):
            line = "\\&" + line
        lines.append(line.replace("-", "\\-"))
    return "\n".join(lines)


def _header(name: str, section: int, summary: str) -> list[str]:
    date = time.strftime("%Y-%m-%d", time.gmtime())
    return [
        f'.TH {name.upper()} {section} "{date}" "nodenet {version("nodenetd")}" "nodenet"',
        ".SH NAME",
        f"{name} \\- {_escape(summary)}",
    ]


def _options(command: Any) -> list[str]:
    out = []
    for param in command.params:
        if param.param_type_name != "option" or getattr(param, "hidden", False):
            continue
        flags = ", ".join(f"\\fB{_escape(f)}\\fR" for f in param.opts + param.secondary_opts)
        out += [".TP", flags, _escape(param.help or "")]
    return out


def _commands(group: Any, prefix: str) -> list[str]:
    """Every command under `group` (typer's click objects, read through their public
    attributes: `commands`, `params`, `help`)."""
    out: list[str] = []
    for name, command in sorted(group.commands.items()):
        if getattr(command, "hidden", False):
            continue
        full = f"{prefix} {name}"
        if hasattr(command, "commands"):
            out += _commands(command, full)
            continue
        arguments = " ".join(
            f"\\fI{p.name.upper()}\\fR" for p in command.params if p.param_type_name == "argument"
        )
        out += [
            ".SS",
            f"\\fB{_escape(full)}\\fR {arguments}".rstrip(),
            _escape(command.help or ""),
            *_options(command),
        ]
    return out


def nodenet_page() -> str:
    """The roff source of nodenet(1)."""
    from nodenet.cli.main import app

    group = typer.main.get_command(app)
    lines = _header("nodenet", 1, "command line for the nodenet daemon")
    lines += [
        ".SH SYNOPSIS",
        "\\fBnodenet\\fR [\\fB\\-\\-version\\fR] \\fICOMMAND\\fR [\\fIARGS\\fR]...",
        ".SH DESCRIPTION",
        _escape(
            "nodenet talks to the local nodenetd over its API socket (--api or NODENET_API;"
            " default /run/nodenet/api.sock) and manages local files (init, keys generate,"
            " backup). Exit status: 0 success, 1 error reported by the daemon, 2 usage"
            " error, 69 daemon unreachable."
        ),
        ".SH COMMANDS",
        *_commands(group, "nodenet"),
        ".SH SEE ALSO",
        f"\\fBnodenetd\\fR(8); {_escape(SEE_ALSO)}",
    ]
    return "\n".join(lines) + "\n"


def nodenetd_page() -> str:
    """The roff source of nodenetd(8)."""
    from nodenet.daemon.main import _parser

    parser = _parser()
    lines = _header("nodenetd", 8, "the nodenet node daemon")
    lines += [
        ".SH SYNOPSIS",
        "\\fBnodenetd\\fR [\\fIOPTIONS\\fR]",
        ".SH DESCRIPTION",
        _escape(parser.description or ""),
        _escape(
            "Settings come from the config file, then NODENET_<SECTION>_<KEY> environment"
            " variables, then these options. SIGTERM and SIGINT leave the cluster and stop;"
            " SIGHUP reloads tags, log level, handlers and the keyring. Exit status: 0 after"
            " a graceful stop, 78 bad configuration, 75 another daemon holds the state"
            " directory or socket, 1 other start-up failures."
        ),
        ".SH OPTIONS",
    ]
    for action in parser._actions:
        if not action.option_strings or action.help == argparse.SUPPRESS:
            continue
        flags = ", ".join(f"\\fB{_escape(o)}\\fR" for o in action.option_strings)
        metavar = f" \\fI{action.dest.upper()}\\fR" if action.nargs != 0 else ""
        lines += [".TP", flags + metavar, _escape(action.help or "")]
    lines += [
        ".SH FILES",
        ".TP",
        "/etc/nodenet/nodenet.toml",
        "Configuration (docs/configuration.md).",
        ".TP",
        "/var/lib/nodenet",
        "Node key, cluster keyring, LMDB state.",
        ".TP",
        "/run/nodenet/api.sock",
        "The local API (mode 0660, group nodenet).",
        ".SH SEE ALSO",
        f"\\fBnodenet\\fR(1), \\fBsystemd.service\\fR(5); {_escape(SEE_ALSO)}",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Write man1/nodenet.1 and man8/nodenetd.8 under --out."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="e.g. /usr/local/share/man")
    args = parser.parse_args(argv)
    for section, name, page in ((1, "nodenet", nodenet_page()), (8, "nodenetd", nodenetd_page())):
        directory = args.out / f"man{section}"
        directory.mkdir(parents=True, exist_ok=True)
        (directory / f"{name}.{section}").write_text(page)
        print(f"wrote {directory / f'{name}.{section}'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
