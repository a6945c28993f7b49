"""`nodenet`: the command line for people.

The commands that talk to a running nodenetd live in `daemon_commands.py` (membership,
keys), `store_commands.py` (submit, get, ls, delete) and `watch.py`, and import neither the
daemon nor cryptography; the local ones here (init, id, keys generate, token)
import what they need inside the command, so that quick commands stay quick (DESIGN §5:
`nodenet peers` must not import the daemon).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from nodenet.cli import daemon_commands as daemon
from nodenet.cli import store_commands as store
from nodenet.cli.common import EX_UNAVAILABLE, Api, connect, fail
from nodenet.cli.quickparams import QuickCommand, QuickGroup
from nodenet.cli.sim import sim_app
from nodenet.cli.watch import watch

if TYPE_CHECKING:
    from nodenet.protocol.keyring import Keyring

__all__ = ["app", "main"]

DEFAULT_PORT = 7950
"""`nodenet.daemon.config.DEFAULT_PORT`, repeated to keep the daemon out of `nodenet --help`."""

app = typer.Typer(
    name="nodenet",
    cls=QuickGroup,
    help="nodenet: signed gossip membership and a replicated key/value store.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
keys_app = typer.Typer(
    cls=QuickGroup,
    help="Cluster keys (the symmetric keys that seal all traffic).",
    no_args_is_help=True,
)
tags_app = typer.Typer(
    cls=QuickGroup,
    help="This node's tags (key=value labels the other members see).",
    no_args_is_help=True,
)

StateDir = Annotated[
    Path | None,
    typer.Option(
        "--state-dir",
        envvar=["NODENET_STATE_DIR", "NODENET_NODE_STATE_DIR"],  # the second is the daemon's
        help="Node state directory.",
        show_default="/var/lib/nodenet for root, else ~/.local/share/nodenet",
    ),
]


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version  # ~30 ms: only when asked

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


@app.command()
def init(
    state_dir: StateDir = None,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            help="Where to write the config.",
            show_default="/etc/nodenet/nodenet.toml for root, else ~/.config/nodenet/nodenet.toml",
        ),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(
            "--token",
            help="Join token from `nodenet token` on a member (- reads it from stdin):"
            " the cluster keys and the seeds to join.",
        ),
    ] = None,
    name: Annotated[
        str | None, typer.Option("--name", help="Node name.", show_default="the host name")
    ] = None,
    bind: Annotated[
        str,
        typer.Option(
            "--bind",
            metavar="IP",
            help="Address to listen on; 0.0.0.0 or :: (all) need --advertise.",
        ),
    ] = "127.0.0.1",
    advertise: Annotated[
        str | None,
        typer.Option(
            "--advertise", metavar="ADDR", help="IP[:port] other nodes use to reach this one."
        ),
    ] = None,
    port: Annotated[
        int, typer.Option("--port", min=1, max=65535, help="UDP and TCP port.")
    ] = DEFAULT_PORT,
    force: Annotated[
        bool,
        typer.Option(
            "--force", help="Replace a different existing config (and keyring, with --token)."
        ),
    ] = False,
) -> None:
    """Set up this node: its key, the cluster keyring and a config file for nodenetd."""
    import os
    import socket

    from nodenet.cli.initfiles import render_config
    from nodenet.daemon.config import ConfigError, load_config
    from nodenet.daemon.keyfile import load_or_create_node_key
    from nodenet.daemon.paths import default_config_path, default_state_dir
    from nodenet.protocol.errors import LocalProtocolError
    from nodenet.protocol.identity import KeyFileError, node_id_of
    from nodenet.protocol.keyring import ClusterKey, Keyring

    directory = (state_dir or default_state_dir()).expanduser().absolute()
    config_path = (config or default_config_path()).expanduser().absolute()
    keyring_path = directory / "keyring"
    token_ring, token_seeds = _read_token(token) if token is not None else (None, ())

    settings = {
        "node.name": name or socket.gethostname(),
        "node.state_dir": str(directory),
        "network.bind": bind,
        "network.port": port,
        "network.advertise": advertise,
        "network.seeds": list(token_seeds),
        "cluster.keyring_file": str(keyring_path),
    }
    try:  # the daemon's own loader, with an empty file, checks the settings
        checked = load_config(Path(os.devnull), environ={}, overrides=settings)
    except ConfigError as exc:
        raise fail(f"nodenetd would not start with these settings: {exc}", 2) from None
    text = render_config(
        name=checked.name,
        state_dir=checked.state_dir,
        bind=checked.bind.host,
        port=checked.bind.port,
        advertise=str(checked.advertise) if advertise else None,
        seeds=[str(s) for s in checked.seeds],
        keyring_file=checked.keyring_file,
    )

    # Decide everything before writing anything: a refusal leaves no half-done setup.
    existing_config = _read_if_exists(config_path)
    if existing_config is not None and existing_config != text and not force:
        raise fail(
            f"{config_path} already exists with other settings; pass --force to replace it,"
            " or --config PATH to write another file"
        )
    existing_text = _read_if_exists(keyring_path)
    current: Keyring | None = None
    if existing_text is not None:
        try:
            current = Keyring.from_text(existing_text, str(keyring_path))
        except LocalProtocolError as exc:
            if not (token_ring and force):
                raise fail(f"{exc}; fix or remove it, then run `nodenet init` again") from None
    ring = current
    if token_ring and (current is None or current.keys != token_ring.keys):
        if current is not None and not force:
            raise fail(
                f"{keyring_path} holds other cluster keys than the token (primary"
                f" {current.primary.key_id}, the token's is {token_ring.primary.key_id});"
                " pass --force to replace them with the token's"
            )
        ring = token_ring
    elif ring is None:
        if (directory / "state" / "data.mdb").exists() and not force:
            # A node that already ran here belongs to a cluster: a new key would cut it off.
            raise fail(
                f"no keyring at {keyring_path}, but {directory} holds a node's state: get the"
                " cluster's keyring (`nodenet token` on a member, then `nodenet init --token`"
                " here) or restore it from a backup; --force makes a new cluster key anyway"
            )
        if keyring_path.is_symlink() and not force:
            raise fail(
                f"{keyring_path} is a symbolic link to a missing file; restore its target,"
                " or remove the link (or pass --force) to write a new keyring there"
            )
        ring = Keyring([ClusterKey.generate()])

    try:
        key, created = load_or_create_node_key(directory / "node.key")
    except KeyFileError as exc:
        raise fail(str(exc)) from None
    typer.echo(f"{'created' if created else 'kept existing'} node key {directory / 'node.key'}")
    keys = f"{len(ring.keys)} key{'s' if len(ring.keys) > 1 else ''}, primary {ring.primary.key_id}"
    if ring is current:
        typer.echo(f"kept existing keyring {keyring_path} ({keys})")
    else:
        _write(keyring_path, ring.to_text(), 0o600)
        source = "from the token" if token_ring else "with a new cluster key"
        typer.echo(f"wrote keyring {keyring_path} {source} ({keys})")
    seeds = f"{len(checked.seeds)} seed{'' if len(checked.seeds) == 1 else 's'}"
    summary = f"node {checked.name!r} on {checked.advertise}, {seeds}"
    if existing_config == text:
        typer.echo(f"kept config {config_path}, already up to date ({summary})")
    else:
        _write(config_path, text, 0o644)
        typer.echo(
            f"{'wrote' if existing_config is None else 'replaced'} config {config_path} ({summary})"
        )
    if _is_loopback(checked.advertise.host) and not all(
        _is_loopback(s.host) for s in checked.seeds
    ):
        typer.echo(
            f"nodenet: note: other machines cannot reach {checked.advertise}; for a cluster"
            " across machines pass --bind 0.0.0.0 --advertise THIS_MACHINE_IP (with --force)",
            err=True,
        )
    typer.echo(f"next: nodenetd --config {config_path}")
    typer.echo(f"node id {node_id_of(key).text}")


def _read_token(text: str) -> tuple[Keyring, tuple[str, ...]]:
    """The keyring and seed addresses of a join token (`-` reads it from stdin)."""
    from nodenet.cli.jointoken import TokenError, decode_token
    from nodenet.daemon.config import parse_address
    from nodenet.protocol.errors import LocalProtocolError
    from nodenet.protocol.keyring import ClusterKey, Keyring

    try:
        decoded = decode_token(sys.stdin.readline() if text == "-" else text)
        ring = Keyring([ClusterKey.from_text(k) for k in decoded.keys])
        seeds = tuple(str(parse_address(s)) for s in decoded.seeds)
    except (TokenError, LocalProtocolError, ValueError) as exc:
        raise typer.BadParameter(str(exc), param_hint="--token") from None
    return ring, seeds


def _read_if_exists(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise fail(f"cannot read {path}: {exc}") from None


def _write(path: Path, text: str, mode: int) -> None:
    from nodenet.cli.initfiles import write_atomically

    try:
        write_atomically(path, text, mode=mode)
    except OSError as exc:
        raise fail(
            f"cannot write {path}: {exc.strerror or exc}; check that the directory is writable"
            " by this user, or choose another path"
        ) from None


def _is_loopback(host: str) -> bool:
    import ipaddress

    return ipaddress.ip_address(host).is_loopback


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
        raise fail(str(exc)) from None
    typer.echo(node.short if short else node.text)


# The commands that talk to the daemon; QuickCommand keeps their start-up fast.
app.command("status", cls=QuickCommand)(daemon.status)
app.command("peers", cls=QuickCommand)(daemon.peers)
app.command("join", cls=QuickCommand)(daemon.join)
app.command("leave", cls=QuickCommand)(daemon.leave)
app.command("submit", cls=QuickCommand)(store.submit)
app.command("get", cls=QuickCommand)(store.get)
app.command("ls", cls=QuickCommand)(store.ls)
app.command("delete", cls=QuickCommand)(store.delete)
app.command("watch", cls=QuickCommand)(watch)
app.add_typer(tags_app, name="tags")
tags_app.command("set", cls=QuickCommand)(daemon.tags_set)
tags_app.command("delete", cls=QuickCommand)(daemon.tags_delete)
app.add_typer(keys_app, name="keys")
app.add_typer(sim_app, name="sim")  # light: the simulator is imported inside its commands
keys_app.command("list", cls=QuickCommand)(daemon.keys_list)
keys_app.command("install", cls=QuickCommand)(daemon.keys_install)
keys_app.command("use", cls=QuickCommand)(daemon.keys_use)
keys_app.command("remove", cls=QuickCommand)(daemon.keys_remove)


@keys_app.command("generate")
def keys_generate() -> None:
    """Print a new random cluster key (base64, 32 bytes)."""
    from nodenet.protocol.keyring import ClusterKey

    typer.echo(ClusterKey.generate().text)


@app.command()
def token(
    keyring_file: Annotated[
        Path | None,
        typer.Option(
            "--keyring",
            "--keyring-file",
            help="The cluster keyring (nodenetd's --keyring).",
            show_default="<state dir>/keyring",
        ),
    ] = None,
    state_dir: StateDir = None,
    seed: Annotated[
        list[str] | None,
        typer.Option(
            "--seed",
            metavar="ADDR",
            help="IP:port of a member new nodes should join (repeatable).",
            show_default="this node's address, asked from nodenetd",
        ),
    ] = None,
    api: Api = None,
) -> None:
    """Print a join token (cluster keys and seeds) for `nodenet init --token`."""
    from nodenet.cli.client import ApiError, Unreachable
    from nodenet.cli.jointoken import encode_token
    from nodenet.daemon.config import parse_address
    from nodenet.daemon.paths import default_state_dir
    from nodenet.protocol.errors import LocalProtocolError
    from nodenet.protocol.keyring import Keyring

    path = keyring_file or (state_dir or default_state_dir()) / "keyring"
    try:
        ring = Keyring.from_text(path.read_text(encoding="utf-8"), str(path))
    except FileNotFoundError:
        raise fail(
            f"no keyring at {path}; pass --keyring (the node's [cluster] keyring_file)"
            " or --state-dir, or run `nodenet init`"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise fail(f"cannot read {path}: {exc}; run as the user nodenetd runs as") from None
    except LocalProtocolError as exc:
        raise fail(str(exc)) from None

    seeds = []
    for text in seed or []:
        try:
            seeds.append(parse_address(text))
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--seed") from None
    client = connect(api, timeout_s=5.0)
    try:
        seeds.insert(0, parse_address(str(client.get("/v1/self")["address"])))
    except Unreachable as exc:
        if not seeds:
            raise fail(
                f"cannot reach nodenetd at {exc.target} ({exc.reason}) to learn this node's"
                " address; pass --seed IP:PORT (a running member), or --api",
                EX_UNAVAILABLE,
            ) from None
        typer.echo(f"nodenet: note: {exc}; the token lists only the --seed addresses", err=True)
    except (ApiError, KeyError, TypeError, ValueError) as exc:
        if not seeds:
            raise fail(f"cannot learn this node's address ({exc}); pass --seed IP:PORT") from None
        typer.echo(f"nodenet: note: cannot learn this node's address ({exc})", err=True)
    if all(_is_loopback(s.host) for s in seeds):
        typer.echo(
            f"nodenet: note: {', '.join(map(str, seeds))} is loopback: only this machine can"
            " use the token; pass --seed with an address other machines reach",
            err=True,
        )
    typer.echo(encode_token([k.text for k in ring.keys], list(dict.fromkeys(map(str, seeds)))))
    typer.echo(
        "nodenet: the token holds the cluster keys: pass it on like a password"
        " (`nodenet init --token -` reads it from stdin)",
        err=True,
    )


api_token_app = typer.Typer(
    help="Bearer tokens for the API's TCP listener (the unix socket needs none).",
    no_args_is_help=True,
)
app.add_typer(api_token_app, name="api-token")

TokensFile = Annotated[
    Path | None,
    typer.Option("--file", help="Tokens file [default: <state dir>/api-tokens]."),
]


def _tokens_path(file: Path | None, state_dir: Path | None) -> Path:
    from nodenet.daemon.paths import default_state_dir

    return file or (state_dir or default_state_dir()) / "api-tokens"


def _write_tokens(path: Path, text: str) -> None:
    """Write the tokens file owned like its directory: root editing the service's
    /var/lib/nodenet must leave a file the daemon (user nodenet) can still read, or its
    next reload keeps the old tokens and its next start fails."""
    from nodenet.daemon.files import write_atomically

    write_atomically(path, text, mode=0o600)
    if os.geteuid() == 0:
        owner = path.parent.stat()
        os.chown(path, owner.st_uid, owner.st_gid)


@api_token_app.command("create")
def api_token_create(
    name: Annotated[str, typer.Argument(help="A name for the token, e.g. prometheus.")],
    role: Annotated[str, typer.Option("--role", help="read, write or admin.")] = "read",
    file: TokensFile = None,
    state_dir: StateDir = None,
) -> None:
    """Create a token (printed once; only its hash is stored), replacing one of that name."""
    from nodenet.daemon.tokens import Role, TokenError, Tokens

    if role.upper() not in Role.__members__:
        raise fail(f"--role {role!r}: use read, write or admin", 2)
    path = _tokens_path(file, state_dir)
    try:
        tokens, token = Tokens.load(path).with_token(name, Role[role.upper()])
        _write_tokens(path, tokens.to_text())
    except (TokenError, OSError) as exc:
        raise fail(str(exc)) from None
    typer.echo(token)
    typer.echo(
        f"nodenet: token {name!r} ({role}) added to {path}; reload the daemon"
        " (systemctl reload nodenetd) and use it as NODENET_API_TOKEN",
        err=True,
    )


@api_token_app.command("list")
def api_token_list(file: TokensFile = None, state_dir: StateDir = None) -> None:
    """List token names and roles."""
    from nodenet.daemon.tokens import TokenError, Tokens

    path = _tokens_path(file, state_dir)
    try:
        tokens = Tokens.load(path)
    except (TokenError, OSError) as exc:
        raise fail(str(exc)) from None
    if not tokens.tokens:
        typer.echo(f"nodenet: no API tokens in {path}", err=True)
        return
    width = max(4, *(len(t.name) for t in tokens.tokens))
    typer.echo(f"{'NAME':<{width}}  ROLE")
    for token in tokens.tokens:
        typer.echo(f"{token.name:<{width}}  {token.role.name.lower()}")


@api_token_app.command("remove")
def api_token_remove(
    name: Annotated[str, typer.Argument(help="The token's name.")],
    file: TokensFile = None,
    state_dir: StateDir = None,
) -> None:
    """Revoke a token (takes effect when the daemon reloads)."""
    from nodenet.daemon.tokens import TokenError, Tokens

    path = _tokens_path(file, state_dir)
    try:
        tokens = Tokens.load(path)
        if all(t.name != name for t in tokens.tokens):
            raise fail(f"no token called {name!r} in {path}")
        _write_tokens(path, tokens.without(name).to_text())
    except (TokenError, OSError) as exc:
        raise fail(str(exc)) from None
    typer.echo(f"removed token {name!r}; reload the daemon to apply")


@app.command()
def backup(
    path: Annotated[Path, typer.Argument(help="New directory to write the backup into.")],
    state_dir: StateDir = None,
    no_key: Annotated[
        bool,
        typer.Option(
            "--no-key", help="Leave the node key out (a restore then gets a new identity)."
        ),
    ] = False,
) -> None:
    """Copy this node's state, keyring and key while the daemon keeps running."""
    from nodenet.daemon.backup import BackupError
    from nodenet.daemon.backup import backup as take_backup
    from nodenet.daemon.paths import default_state_dir

    try:
        report = take_backup(state_dir or default_state_dir(), path, include_key=not no_key)
    except BackupError as exc:
        raise fail(str(exc)) from None
    typer.echo(
        f"backed up {report.entries} entries and {report.members} members to {report.path}"
        f" ({report.bytes} bytes, {report.seconds:.1f} s); restore: docs/operations.md"
    )


@app.command()
def dev(
    nodes: Annotated[
        int, typer.Option("--nodes", "-n", min=1, max=64, help="How many daemons (1-64).")
    ] = 3,
    base_port: Annotated[
        int,
        typer.Option(
            "--base-port", min=1, max=65000, help="First UDP/TCP port; taken ones are skipped."
        ),
    ] = DEFAULT_PORT,
    directory: Annotated[
        Path | None,
        typer.Option("--dir", help="Keep state here (default: a temporary directory)."),
    ] = None,
    profile: Annotated[
        str, typer.Option("--profile", help="Timing profile: local, lan or wan.")
    ] = "local",
    keep: Annotated[bool, typer.Option("--keep", help="Keep the temporary state.")] = False,
    run_for: Annotated[
        float | None, typer.Option("--run-for", help="Stop after this many seconds.")
    ] = None,
) -> None:
    """Run a local cluster of N daemons on 127.0.0.1 and watch it (Ctrl-C stops it)."""
    from nodenet.cli.dev import run_dev

    if profile not in ("local", "lan", "wan"):
        raise fail(f"--profile {profile!r}: use local, lan or wan", 2)
    raise typer.Exit(
        run_dev(
            nodes,
            base_port=base_port,
            directory=directory,
            profile=profile,
            keep=keep,
            run_for=run_for,
        )
    )


def main() -> None:
    """Entry point of `nodenet`."""
    try:
        app()
    except BrokenPipeError:  # `nodenet ... | head`
        sys.stderr.close()
        sys.exit(0)
