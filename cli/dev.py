"""`nodenet dev`: a local cluster of real daemons on 127.0.0.1, for trying nodenet out.

Starts N `nodenetd` processes that share a fresh cluster key, joined through the first one,
each with its own state directory and API socket under one directory. It prints how to
talk to each node, then watches the cluster and prints every change as the nodes see it,
until Ctrl-C (or `--run-for`), when it stops them all gracefully.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from nodenet.cli.client import ApiClient, ApiError, Unreachable
from nodenet.cli.initfiles import render_config, toml_string, write_atomically

__all__ = ["run_dev"]

POLL_S = 0.5
START_TIMEOUT_S = 60.0


@dataclass
class DevNode:
    """One daemon of the dev cluster."""

    name: str
    directory: Path
    port: int
    process: subprocess.Popen[bytes] | None = None
    view: dict[str, str] = field(default_factory=dict)

    @property
    def config(self) -> Path:
        return self.directory / "nodenet.toml"

    @property
    def socket(self) -> Path:
        return self.directory / "api.sock"

    @property
    def log(self) -> Path:
        return self.directory / "nodenetd.log"

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


def _port_free(port: int) -> bool:
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        with socket.socket(socket.AF_INET, kind) as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


def _ports(base: int, count: int) -> list[int]:
    ports: list[int] = []
    candidate = base
    while len(ports) < count:
        if candidate > 65535:
            raise SystemExit(f"nodenet dev: no {count} free ports from {base} on 127.0.0.1")
        if _port_free(candidate):
            ports.append(candidate)
        candidate += 1
    return ports


def _prepare(root: Path, count: int, base_port: int, profile: str) -> list[DevNode]:
    from nodenet.protocol.keyring import ClusterKey, Keyring

    keyring = Keyring([ClusterKey.generate()]).to_text()
    ports = _ports(base_port, count)
    nodes = [DevNode(f"node{i}", root / f"node{i}", port) for i, port in enumerate(ports)]
    seed = f"127.0.0.1:{nodes[0].port}"
    for node in nodes:
        node.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_atomically(node.directory / "keyring", keyring, mode=0o600)
        text = render_config(
            name=node.name,
            state_dir=node.directory,
            bind="127.0.0.1",
            port=node.port,
            advertise=None,
            seeds=[] if node is nodes[0] else [seed],
            keyring_file=node.directory / "keyring",
        )
        text += (
            f"profile = {toml_string(profile)}\n\n[api]\nsocket = {toml_string(str(node.socket))}\n"
        )
        write_atomically(node.config, text, mode=0o600)
    return nodes


def _start(node: DevNode) -> None:
    log = node.log.open("ab")
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "JOURNAL_STREAM")}
    node.process = subprocess.Popen(
        [sys.executable, "-m", "nodenet.daemon.main", "--config", str(node.config)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,  # Ctrl-C reaches us only; we stop the daemons gracefully
    )
    log.close()


def _peers(node: DevNode) -> dict[str, str] | None:
    try:
        answer = ApiClient(str(node.socket), timeout_s=2).get("/v1/peers")
    except (Unreachable, ApiError, ValueError):
        return None
    return {p["name"]: p["status"] for p in answer["peers"] if not p["self"]}


def _wait_ready(nodes: list[DevNode]) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    pending = list(nodes)
    while pending:
        for node in list(pending):
            if not node.running():
                tail = node.log.read_text(errors="replace")[-2000:] if node.log.exists() else ""
                raise SystemExit(f"nodenet dev: {node.name} exited at start:\n{tail}")
            if _peers(node) is not None:
                pending.remove(node)
        if pending and time.monotonic() > deadline:
            names = ", ".join(n.name for n in pending)
            raise SystemExit(f"nodenet dev: {names} did not start within {START_TIMEOUT_S:.0f} s")
        time.sleep(0.1)


def _print_intro(nodes: list[DevNode], root: Path) -> None:
    exe = Path(sys.executable).parent
    cli = exe / "nodenet" if (exe / "nodenet").exists() else Path("nodenet")
    print(f"{len(nodes)} nodes on 127.0.0.1, state in {root}\n")
    width = max(len(n.name) for n in nodes)
    print(f"{'NODE':<{width}}  {'ADDRESS':<15}  {'PID':>7}  API SOCKET")
    for node in nodes:
        assert node.process is not None
        print(
            f"{node.name:<{width}}  127.0.0.1:{node.port:<5}  {node.process.pid:>7}  {node.socket}"
        )
    print("\nTry, in another terminal:")
    print(f"  {cli} peers --api {nodes[0].socket}")
    print(f"  export NODENET_API={nodes[-1].socket}; {cli} status")
    if len(nodes) > 1:
        victim = nodes[-1]
        assert victim.process is not None
        print(f"  kill -9 {victim.process.pid}   # watch {victim.name} go suspect, then dead")
        print(f"  {exe / 'nodenetd'} --config {victim.config} &   # and come back")
    print("\nWatching the cluster (Ctrl-C stops every node):\n")


def _consensus(nodes: list[DevNode]) -> dict[str, str]:
    """For each node, what most of the running others believe about it."""
    opinions: dict[str, Counter[str]] = {n.name: Counter() for n in nodes}
    for observer in nodes:
        for name, status in observer.view.items():
            if name in opinions:
                opinions[name][status] += 1
    return {name: votes.most_common(1)[0][0] for name, votes in opinions.items() if votes}


def _watch(nodes: list[DevNode], run_for: float | None, started: float) -> None:
    shown: dict[str, tuple[str, int]] = {}
    """Per node, the status last printed and the most other nodes seen to hold it since."""
    running = {n.name: True for n in nodes}
    while run_for is None or time.monotonic() - started < run_for:
        for node in nodes:
            alive = node.running() or _peers(node) is not None
            if alive != running[node.name]:
                running[node.name] = alive
                state = "is running again" if alive else "process stopped"
                print(f"{time.monotonic() - started:7.1f}s  {node.name}: {state}", flush=True)
            view = _peers(node) if alive else None
            node.view = view or {}
        for name, status in sorted(_consensus(nodes).items()):
            voters = sum(1 for n in nodes if name in n.view)
            before, seen_by = shown.get(name, (None, 0))
            if before == status and voters <= seen_by:
                continue  # fewer: a node stopped (printed above) or missed one poll
            shown[name] = (status, voters)
            who = "1 other node sees" if voters == 1 else f"{voters} other nodes see"
            if before == status:  # more nodes have heard of it: the join spreading
                line = f"{name}: {status}  (now {who} it)"
            else:
                line = f"{name}: {f'{before} → {status}' if before else status}  (as {who} it)"
            print(f"{time.monotonic() - started:7.1f}s  {line}", flush=True)
        time.sleep(POLL_S)


def _stop(nodes: list[DevNode]) -> None:
    """Stop every node: those we started, and daemons restarted by hand on a node's state
    directory (the tour does that), which would otherwise outlive the cluster, its ports
    and, without --keep, its directory."""
    from nodenet.daemon.lock import lock_holder

    for node in nodes:
        if node.running():
            assert node.process is not None
            node.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 20
    for node in nodes:
        if node.process is None:
            continue
        try:
            node.process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            node.process.kill()
            node.process.wait()
    strays = [(node, pid) for node in nodes if (pid := lock_holder(node.directory))]
    for node, pid in strays:
        print(f"stopping {node.name} (pid {pid}, started outside nodenet dev)")
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 20
    for node, pid in strays:
        killed = False
        while lock_holder(node.directory) == pid:
            if time.monotonic() > deadline:
                if killed:
                    print(f"{node.name} (pid {pid}) did not stop", file=sys.stderr)
                    break
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                killed, deadline = True, time.monotonic() + 5
            time.sleep(0.1)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _stop_on_signals() -> None:
    """Ctrl-C and SIGTERM stop every node gracefully. Set explicitly: a shell runs
    background jobs with SIGINT ignored, and Python keeps an ignored SIGINT ignored, so
    `nodenet dev … &` could not be stopped with SIGINT; and SIGTERM would end this process
    at once, leaving its daemons (in sessions of their own) running."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)


def run_dev(
    count: int,
    *,
    base_port: int = 7950,
    directory: Path | None = None,
    profile: str = "local",
    keep: bool = False,
    run_for: float | None = None,
) -> int:
    """Run the dev cluster; returns the exit status."""
    if not 1 <= count <= 64:
        raise SystemExit("nodenet dev: --nodes must be 1-64")
    _stop_on_signals()
    root = directory or Path(tempfile.mkdtemp(prefix="nodenet-dev-"))
    nodes = _prepare(root, count, base_port, profile)
    started = time.monotonic()
    try:
        for node in nodes:
            _start(node)
        _wait_ready(nodes)
        _print_intro(nodes, root)
        with contextlib.suppress(KeyboardInterrupt):
            _watch(nodes, run_for, started)
    finally:
        print("\nstopping the nodes (each leaves the cluster first)…", flush=True)
        _stop(nodes)
        if directory is None and not keep:
            shutil.rmtree(root, ignore_errors=True)
        else:
            print(f"state kept in {root}")
    return 0
