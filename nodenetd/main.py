"""`nodenetd`: the daemon's command line, signals and exit codes.

Exit codes: 0 after a graceful stop, 78 (EX_CONFIG) for a bad configuration, 75
(EX_TEMPFAIL) when another daemon already holds the state directory or the API socket or
another process holds the UDP/TCP port, 1 for any other start-up failure. SIGTERM and
SIGINT stop gracefully (a signed LEAVE first); SIGHUP reloads tags, log level and keyring.
"""

from __future__ import annotations

import argparse
import errno
import logging
import signal
import sys
from importlib.metadata import version
from pathlib import Path
from typing import Any

import trio

from nodenet.daemon.config import ConfigError, DaemonConfig, load_config
from nodenet.daemon.daemon import Daemon, StartupError
from nodenet.daemon.lock import AlreadyRunning
from nodenet.daemon.logs import set_level, setup_logging

__all__ = ["main"]

EX_CONFIG = 78
EX_TEMPFAIL = 75
log = logging.getLogger("nodenet.daemon")


def _port(text: str) -> int:
    # int() takes other scripts' digits (٢٧١٠١); the config file and environment do not.
    if not (text.isascii() and text.isdigit() and len(text) <= 5):
        raise argparse.ArgumentTypeError(f"{text!r:.20} is not a port number (1-65535)")
    return int(text)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nodenetd",
        description="The nodenet daemon: signed gossip membership and a replicated store.",
        epilog="Settings come from the config file, then NODENET_<SECTION>_<KEY> environment"
        " variables, then these flags. See docs/configuration.md.",
    )
    parser.add_argument("--version", action="version", version=f"nodenetd {version('nodenetd')}")
    parser.add_argument(
        "--config",
        type=Path,
        help="TOML config file [default: /etc/nodenet/nodenet.toml for root,"
        " ~/.config/nodenet/nodenet.toml otherwise, if it exists]",
    )
    parser.add_argument("--state-dir", help="state directory (node.state_dir)")
    parser.add_argument("--name", help="node name (node.name)")
    parser.add_argument("--bind", help="address to listen on (network.bind)")
    parser.add_argument("--port", type=_port, help="UDP and TCP port (network.port)")
    parser.add_argument("--advertise", help="address others use to reach us (network.advertise)")
    parser.add_argument(
        "--seed",
        action="append",
        dest="seeds",
        help="address:port to join (network.seeds); repeatable",
    )
    parser.add_argument("--keyring", help="cluster keyring file (cluster.keyring_file)")
    parser.add_argument("--profile", help="timing profile: lan, wan or local (cluster.profile)")
    parser.add_argument("--api-socket", help="unix socket of the local API (api.socket)")
    parser.add_argument("--api-tcp", help="also serve the API on 127.0.0.1:PORT (api.tcp)")
    parser.add_argument("--log-level", help="debug, info, warning or error (log.level)")
    parser.add_argument(
        "--check-config", action="store_true", help="validate the configuration and exit"
    )
    return parser


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "node.state_dir": args.state_dir,
        "node.name": args.name,
        "network.bind": args.bind,
        "network.port": args.port,
        "network.advertise": args.advertise,
        "network.seeds": args.seeds,
        "cluster.keyring_file": args.keyring,
        "cluster.profile": args.profile,
        "api.socket": args.api_socket,
        "api.tcp": args.api_tcp,
        "log.level": args.log_level,
    }


def main(argv: list[str] | None = None) -> int:
    """Entry point of `nodenetd`."""
    args = _parser().parse_args(argv)
    overrides = _overrides(args)
    try:
        config = load_config(args.config, overrides=overrides)
    except ConfigError as exc:
        print(f"nodenetd: configuration error: {exc}", file=sys.stderr)
        return EX_CONFIG
    if args.check_config:
        print(f"nodenetd: configuration from {config.source} is valid")
        return 0
    setup_logging(config.log_level)
    try:
        trio.run(_serve, config, args.config, overrides)
    except BaseException as raised:  # sorted into exit codes below
        cause = _root_cause(raised)
        if isinstance(cause, KeyboardInterrupt):
            return 130
        if isinstance(cause, AlreadyRunning) or isinstance(cause.__cause__, AlreadyRunning):
            log.error("%s", cause)
            return EX_TEMPFAIL
        if isinstance(cause, StartupError):
            log.error("cannot start: %s", cause)
            if isinstance(cause.__cause__, OSError) and cause.__cause__.errno == errno.EADDRINUSE:
                return EX_TEMPFAIL  # the port may be free again soon, as a held lock may
            return 1
        raise
    return 0


def _root_cause(exc: BaseException) -> BaseException:
    """The first real error inside (possibly nested) exception groups from nurseries."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


async def _serve(config: DaemonConfig, path: Path | None, overrides: dict[str, Any]) -> None:
    daemon = Daemon(config)
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                _handle_signals, signals, daemon, path, overrides, nursery.cancel_scope
            )
            await daemon.run()
            nursery.cancel_scope.cancel()


async def _handle_signals(
    signals: Any,
    daemon: Daemon,
    path: Path | None,
    overrides: dict[str, Any],
    scope: trio.CancelScope,
) -> None:
    async for signum in signals:
        if signum == signal.SIGHUP:
            try:
                config = load_config(path, overrides=overrides)
            except ConfigError as exc:
                log.error("reload refused, keeping the running configuration: %s", exc)
                continue
            set_level(config.log_level)
            daemon.reload(config)
        elif daemon.stopping:
            log.warning("second %s: stopping now", signal.Signals(signum).name)
            scope.cancel()
            return
        else:
            log.info("%s: leaving the cluster and stopping", signal.Signals(signum).name)
            daemon.request_shutdown()


if __name__ == "__main__":
    sys.exit(main())
