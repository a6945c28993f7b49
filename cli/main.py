"""`nodenet`: the command line for people.

Imports of the daemon and of cryptography are done inside the commands that need them, so
that quick commands stay quick (DESIGN §5: `nodenet peers` must not import the daemon).
"""

from __future__ import annotations

import sys
from importlib.metadata import version
from pathlib import Path
from typing import Annotated

import typer

__all__ = ["app", "main"]

app = typer.Typer(
    name="nodenet",
    help="nodenet: signed gossip membership and a replicated key/value store.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
keys_app = typer.Typer(help="Cluster keys (the symmetric keys that seal all traffic).")
app.add_typer(keys_app, name="keys")

StateDir = Annotated[
    Path | None,
    typer.Option(
        "--state-dir",
        envvar="NODENET_STATE_DIR",
        help="Node state directory [default: /var/lib/nodenet for root,"
        " else ~/.local/share/nodenet]",
    ),
]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"nodenet {version('nodenetd')}")
        raise typer.Exit()


@app.callback()
def _root(
    _version_flag: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """nodenet: signed gossip membership and a replicated key/value store."""


def _fail(message: str, code: int = 1) -> typer.Exit:
    typer.echo(f"nodenet: {message}", err=True)
    return typer.Exit(code)


@app.command()
def init(state_dir: StateDir = None) -> None:
    """Create this node's identity (an Ed25519 key) unless it already has one."""
    from nodenet.daemon.keyfile import load_or_create_node_key
    from nodenet.daemon.paths import default_state_dir
    from nodenet.protocol.identity import KeyFileError, node_id_of

    directory = state_dir or default_state_dir()
    try:
        key, created = load_or_create_node_key(directory / "node.key")
    except KeyFileError as exc:
        raise _fail(str(exc)) from None
    what = "created" if created else "kept existing"
    typer.echo(f"{what} node key {directory / 'node.key'}")
    typer.echo(f"node id {node_id_of(key).text}")


@app.command("id")
def show_id(
    state_dir: StateDir = None,
    short: Annotated[bool, typer.Option("--short", help="Print the 10-character form.")] = False,
) -> None:
    """Print this node's id (its public key, base32)."""
    from nodenet.daemon.keyfile import load_node_key
    from nodenet.daemon.paths import default_state_dir
    from nodenet.protocol.identity import KeyFileError, node_id_of

    directory = state_dir or default_state_dir()
    try:
        node = node_id_of(load_node_key(directory / "node.key"))
    except KeyFileError as exc:
        raise _fail(str(exc)) from None
    typer.echo(node.short if short else node.text)


@keys_app.command("generate")
def keys_generate() -> None:
    """Print a new random cluster key (base64, 32 bytes)."""
    from nodenet.protocol.keyring import ClusterKey

    typer.echo(ClusterKey.generate().text)


def main() -> None:
    """Entry point of `nodenet`."""
    try:
        app()
    except BrokenPipeError:  # `nodenet ... | head`
        sys.stderr.close()
        sys.exit(0)
