"""Real daemons for tests: free loopback ports, short socket paths, configs, processes.

Everything binds 127.0.0.1 only. Processes are always stopped (SIGKILL as a last resort)
when a test ends, and every wait has a deadline.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from nodenet.daemon.daemon import write_keyring
from nodenet.protocol.keyring import ClusterKey, Keyring

CLUSTER_KEY = ClusterKey(b"\x42" * 32)


def free_port(host: str = "127.0.0.1") -> int:
    """A port free for both UDP and TCP on `host` (a loopback address) right now."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(50):
        with socket.socket(family, socket.SOCK_DGRAM) as udp:
            udp.bind((host, 0))
            port = udp.getsockname()[1]
            with socket.socket(family, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind((host, port))
                except OSError:
                    continue
                return port
    raise RuntimeError(f"no free port pair on {host}")


def short_tmpdir() -> Path:
    """A short directory under /tmp: AF_UNIX socket paths must stay under 108 bytes."""
    return Path(tempfile.mkdtemp(prefix="nn"))


def node_dir(
    root: Path,
    name: str,
    *,
    port: int | None = None,
    seeds: list[str] = (),  # type: ignore[assignment]
    ring: Keyring | None = None,
    profile: str = "local",
    extra: str = "",
    bind: str = "127.0.0.1",
    api_tcp: str | None = None,
) -> Path:
    """Create a node's state dir, keyring and config; return the config path."""
    directory = root / name
    directory.mkdir(parents=True, exist_ok=True)
    write_keyring(directory / "keyring", ring or Keyring([CLUSTER_KEY]))
    port = port or free_port(bind)
    tcp_line = f'tcp = "{api_tcp}"' if api_tcp else ""
    config = directory / "nodenet.toml"
    config.write_text(
        f"""
[node]
name = "{name}"
state_dir = "{directory}"

[network]
bind = "{bind}"
port = {port}
seeds = {json.dumps(list(seeds))}

[cluster]
keyring_file = "{directory / "keyring"}"
profile = "{profile}"

[api]
socket = "{directory / "api.sock"}"
{tcp_line}

[daemon]
shutdown_timeout_s = 10
leave_timeout_s = 3
{extra}
"""
    )
    return config


def api_client(socket_path: Path, timeout: float = 10.0) -> httpx.Client:
    """A synchronous HTTP client over the API's unix socket."""
    return httpx.Client(
        transport=httpx.HTTPTransport(uds=str(socket_path)),
        base_url="http://nodenetd",
        timeout=timeout,
    )


def wait_until(
    condition: Callable[[], Any], *, timeout: float, interval: float = 0.05, what: str = "condition"
) -> float:
    """Poll `condition` until it is truthy; return the seconds it took (or fail)."""
    start = time.monotonic()
    deadline = start + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if condition():
                return time.monotonic() - start
        except (httpx.HTTPError, OSError, KeyError, ValueError) as exc:
            last_error = exc
        time.sleep(interval)
    raise AssertionError(f"{what} not reached within {timeout} s (last error: {last_error})")


class DaemonProcess:
    """A `nodenetd` process with its own state directory."""

    def __init__(self, config: Path) -> None:
        self.config = config
        self.directory = config.parent
        self.socket = self.directory / "api.sock"
        self.log_path = self.directory / "nodenetd.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(
        self,
        *,
        wait: bool = True,
        extra_args: list[str] = (),  # type: ignore[assignment]
        env: dict[str, str] | None = None,
    ) -> DaemonProcess:
        log = self.log_path.open("ab")
        base = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("NODENET_", "NOTIFY_SOCKET", "JOURNAL_STREAM", "WATCHDOG_"))
        }
        env = {**base, **(env or {})}
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "nodenet.daemon.main",
                "--config",
                str(self.config),
                *extra_args,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        log.close()
        if wait:
            wait_until(self.ready, timeout=30, what=f"{self.directory.name} API")
        return self

    def ready(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise AssertionError(f"nodenetd exited with {self.process.returncode}:\n{self.log()}")
        with api_client(self.socket, timeout=2) as client:
            return client.get("/health").status_code == 200

    def api(self) -> httpx.Client:
        return api_client(self.socket)

    def peers(self) -> dict[str, str]:
        """name → status, from this node's point of view."""
        with self.api() as client:
            return {p["name"]: p["status"] for p in client.get("/v1/peers").json()["peers"]}

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def wait(self, timeout: float = 30) -> int:
        assert self.process is not None
        return self.process.wait(timeout=timeout)

    def kill(self) -> None:
        """kill -9."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it does not go within 20 s."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.kill()


def remove(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
