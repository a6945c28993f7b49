"""Clusters of real daemons on 127.0.0.1 for `membership.py`: nodenetd and Serf side by side.

Both kinds are started, queried and killed the same way: every process in its own process
group (so a kill takes anything it spawned), ports from a block below the kernel's ephemeral
range that was checked free for UDP and TCP, state in a short /tmp directory, and every
query with a timeout. Each cluster answers "who does member i see, in which state?" through
its own local API: nodenetd's HTTP API on its unix socket (`GET /v1/peers`), Serf's msgpack
RPC on TCP (`members`, the call `serf members` makes). Both clients keep one connection per
member open, so polling costs the daemons one request each and the poller nothing to start.

Also here: the /proc readers (CPU time, RSS, machine load) and `WireCounter`, the nftables
counters that measure both systems' traffic by the same rule.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack

from nodenet.protocol.keyring import ClusterKey, Keyring

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024
QUERY_TIMEOUT_S = 5.0
LOCAL = "127.0.0.1"


# --- ports ---------------------------------------------------------------------------------


def _free(port: int) -> bool:
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        with socket.socket(socket.AF_INET, kind) as sock:
            try:
                sock.bind((LOCAL, port))
            except OSError:
                return False
    return True


def port_block(count: int, *, low: int = 20000, high: int = 32000) -> range:
    """`count` consecutive ports free for UDP and TCP on 127.0.0.1, below the ephemeral range.

    Below 32768 no outgoing connection of either daemon takes one of them by chance, and a
    block makes the packet counters one port range per system."""
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(low, high - count)
        block = range(base, base + count)
        if all(_free(port) for port in block):
            return block
    raise RuntimeError(f"no block of {count} free ports in {low}-{high} on {LOCAL}")


# --- /proc ---------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process, all its threads (/proc/PID/stat)."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime: fields 14 and 15


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of a process in KiB (/proc/PID/status)."""
    found = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                name, value = line.split(":", 1)
                found[name] = int(value.split()[0])
    return found


def smaps_kib(pid: int) -> dict[str, int]:
    """RSS split into anonymous and file-backed (shared libraries, mapped files) KiB."""
    found = {}
    with contextlib.suppress(OSError), open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            name, _, rest = line.partition(":")
            if name in ("Rss", "Anonymous", "Shared_Clean", "Private_Clean"):
                found[name] = int(rest.split()[0])
    return found


@dataclass(frozen=True, slots=True)
class MachineCpu:
    """Whole-machine CPU counters (/proc/stat), in seconds summed over all CPUs."""

    busy: float
    steal: float
    total: float

    @classmethod
    def read(cls) -> MachineCpu:
        """Now."""
        with open("/proc/stat") as f:
            values = [int(v) for v in f.readline().split()[1:]]
        user, nice, system, idle, iowait, irq, softirq, steal = (values + [0] * 8)[:8]
        busy = user + nice + system + irq + softirq
        total = busy + idle + iowait + steal
        return cls(busy / CLK_TCK, steal / CLK_TCK, total / CLK_TCK)


# --- packet counters -----------------------------------------------------------------------


class WireCounter:
    """Bytes and packets sent to and from a port range on 127.0.0.1, counted by nftables.

    One table with one output-hook chain. For the measured port range it counts UDP to the
    range, TCP to the range and TCP from the range (replies to connections the range
    accepted), each packet once: a loopback packet crosses the output hook once, and each
    rule ends with `accept` so no packet reaches a second counter. Bytes are IP packet
    lengths: IP and UDP/TCP headers included, TCP's ACKs and handshakes included, which is
    what the traffic costs a network. Only 127.0.0.1 and the given ports are matched, and
    the table is deleted by `close()` (and, should a run have died, at the next start).

    Without nft (not root, not installed) it falls back to the loopback interface's
    transmit counters in /proc/net/dev: the same method for both systems still, but
    whole-interface, so anything else on loopback is counted too; `method` says which.
    """

    TABLE = "nodenet_bench"

    def __init__(self) -> None:
        self.method = "nft"
        self._range: range | None = None
        self._nft = shutil.which("nft")
        if self._nft is None or os.geteuid() != 0:
            self.method = "lo"
            return
        self._delete_table()
        try:
            self._run(
                f"add table inet {self.TABLE}\n"
                f"add counter inet {self.TABLE} c_udp\n"
                f"add counter inet {self.TABLE} c_tcp\n"
                f"add chain inet {self.TABLE} out"
                " { type filter hook output priority 0; policy accept; }\n"
            )
        except (subprocess.CalledProcessError, OSError):
            self._delete_table()
            self.method = "lo"

    def _run(self, script: str) -> str:
        assert self._nft is not None
        return subprocess.run(
            [self._nft, "-f", "-"] if script else [self._nft],
            input=script,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout

    def _delete_table(self) -> None:
        if self._nft is not None:
            subprocess.run(
                [self._nft, "delete", "table", "inet", self.TABLE],
                capture_output=True,
                timeout=10,
                check=False,
            )

    def watch(self, ports: range) -> None:
        """Count traffic of this port range from now on (replacing the previous range)."""
        self._range = ports
        if self.method != "nft":
            return
        lo, hi = ports.start, ports.stop - 1
        rule = f"add rule inet {self.TABLE} out ip saddr {LOCAL} ip daddr {LOCAL}"
        self._run(
            f"flush chain inet {self.TABLE} out\n"
            f"{rule} udp dport {lo}-{hi} counter name c_udp accept\n"
            f"{rule} tcp dport {lo}-{hi} counter name c_tcp accept\n"
            f"{rule} tcp sport {lo}-{hi} counter name c_tcp accept\n"
        )

    def read(self) -> dict[str, int]:
        """Cumulative {udp,tcp}_{bytes,packets} (for `lo`: all of loopback as `udp`)."""
        if self.method != "nft":
            with open("/proc/net/dev") as f:
                for line in f:
                    name, _, rest = line.partition(":")
                    if name.strip() == "lo":
                        v = rest.split()
                        return {
                            "udp_bytes": int(v[8]),
                            "udp_packets": int(v[9]),
                            "tcp_bytes": 0,
                            "tcp_packets": 0,
                        }
            return dict.fromkeys(("udp_bytes", "udp_packets", "tcp_bytes", "tcp_packets"), 0)
        assert self._nft is not None
        listing = subprocess.run(
            [self._nft, "-j", "list", "counters", "table", "inet", self.TABLE],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout
        out = {}
        for item in json.loads(listing)["nftables"]:
            counter = item.get("counter")
            if counter is not None:
                kind = counter["name"].removeprefix("c_")
                out[f"{kind}_bytes"] = counter["bytes"]
                out[f"{kind}_packets"] = counter["packets"]
        return out

    def close(self) -> None:
        """Remove every rule and counter this run added."""
        if self.method == "nft":
            self._delete_table()


# --- API clients ---------------------------------------------------------------------------


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("nodenetd", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class NodenetApi:
    """nodenetd's HTTP API over its unix socket, one kept-alive connection."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn: _UnixHTTPConnection | None = None

    def get(self, target: str) -> bytes:
        """The body of a 200 answer (raises OSError or http.client errors otherwise)."""
        for attempt in (1, 2):  # the server may have closed an idle kept-alive connection
            fresh = self._conn is None
            if self._conn is None:
                self._conn = _UnixHTTPConnection(str(self.path), QUERY_TIMEOUT_S)
            try:
                self._conn.request("GET", target)
                response = self._conn.getresponse()
                body = response.read()
                break
            except (OSError, http.client.HTTPException):
                self.close()
                if fresh or attempt == 2:
                    raise
        if response.status != 200:
            raise OSError(f"GET {target}: HTTP {response.status}")
        return body

    def statuses(self) -> dict[str, str]:
        """name → status, as this member sees the cluster (itself included)."""
        peers = json.loads(self.get("/v1/peers"))["peers"]
        return {p["name"]: p["status"] for p in peers}

    def close(self) -> None:
        """Drop the connection."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class SerfRpc:
    """Serf's agent RPC (msgpack over TCP), enough for `members`; one kept connection."""

    def __init__(self, port: int) -> None:
        self.port = port
        self._sock: socket.socket | None = None
        self._unpacker = msgpack.Unpacker(raw=False)
        self._seq = 0

    def _connect(self) -> None:
        self._sock = socket.create_connection((LOCAL, self.port), timeout=QUERY_TIMEOUT_S)
        self._unpacker = msgpack.Unpacker(raw=False)
        self._call("handshake", {"Version": 1}, has_body=False)

    def _next(self) -> Any:
        assert self._sock is not None
        while True:
            try:
                return next(self._unpacker)
            except StopIteration:
                data = self._sock.recv(65536)
                if not data:
                    raise ConnectionError("serf closed the RPC connection") from None
                self._unpacker.feed(data)

    def _call(self, command: str, body: Any = None, *, has_body: bool = True) -> Any:
        assert self._sock is not None
        seq, self._seq = self._seq, self._seq + 1
        request = msgpack.packb({"Command": command, "Seq": seq})
        if body is not None:
            request += msgpack.packb(body)
        self._sock.sendall(request)
        header = self._next()
        if header.get("Error"):
            raise OSError(f"serf RPC {command}: {header['Error']}")
        return self._next() if has_body else None

    def statuses(self) -> dict[str, str]:
        """name → status (alive, leaving, left, failed), this member included."""
        for attempt in (1, 2):  # as for nodenetd: a kept connection may have been dropped
            fresh = self._sock is None
            try:
                if self._sock is None:
                    self._connect()
                members = self._call("members")["Members"]
                break
            except (OSError, ValueError):
                self.close()
                if fresh or attempt == 2:
                    raise
        return {m["Name"]: m["Status"] for m in members}

    def close(self) -> None:
        """Drop the connection."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None


# --- clusters ------------------------------------------------------------------------------


class Cluster:
    """N daemons of one kind; subclasses say how to start and ask one."""

    system = ""
    dead_status = ""
    executable = ""

    def __init__(self, n: int, key: ClusterKey) -> None:
        self.n = n
        self.key = key
        self.root = Path(tempfile.mkdtemp(prefix=f"nb{self.system[:2]}"))
        self.names = [f"{self.system[0]}{i}" for i in range(n)]
        self.ports = port_block(n)
        self.processes: list[subprocess.Popen[bytes]] = []
        self.clients: list[Any] = []

    def command(self, i: int) -> list[str]:
        """The command line of member i."""
        raise NotImplementedError

    def prepare(self, i: int) -> None:
        """Files member i needs before it starts."""

    def client(self, i: int) -> Any:
        """A query client for member i."""
        raise NotImplementedError

    def cli(self, i: int) -> list[str]:
        """The command a person runs to list members through member i."""
        raise NotImplementedError

    def start(self) -> float:
        """Start every member at once (node 0 first); the monotonic time of the first spawn."""
        for i in range(self.n):
            self.prepare(i)
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("NODENET_", "NOTIFY_SOCKET", "JOURNAL_STREAM", "SERF_"))
        }
        started = time.monotonic()
        for i in range(self.n):
            with open(self.root / f"{self.names[i]}.log", "ab") as log:
                self.processes.append(
                    subprocess.Popen(
                        self.command(i),
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        stdin=subprocess.DEVNULL,
                        env=env,
                        start_new_session=True,  # its own process group: killpg takes all
                    )
                )
        self.clients = [self.client(i) for i in range(self.n)]
        return started

    @property
    def pids(self) -> list[int]:
        """Process ids of the members still running."""
        return [p.pid for p in self.processes if p.poll() is None]

    def check_running(self) -> None:
        """Fail with the log's tail if a member has exited by itself."""
        for i, process in enumerate(self.processes):
            if process.poll() is not None and process.returncode != -signal.SIGKILL:
                tail = self.log(i)[-2000:]
                raise RuntimeError(
                    f"{self.system} member {self.names[i]} exited with {process.returncode}:\n"
                    f"{tail}"
                )

    def log(self, i: int) -> str:
        """Member i's output."""
        path = self.root / f"{self.names[i]}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def statuses(self, i: int) -> dict[str, str] | None:
        """name → status as member i sees it, or None if it does not answer (yet)."""
        try:
            return self.clients[i].statuses()
        except (OSError, ValueError, http.client.HTTPException):
            return None

    def kill(self, i: int) -> None:
        """SIGKILL member i and everything in its process group."""
        process = self.processes[i]
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        self.clients[i].close()

    def close(self) -> None:
        """Kill every member and delete the cluster's files."""
        for i in range(len(self.processes)):
            with contextlib.suppress(Exception):
                self.clients[i].close() if i < len(self.clients) else None
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.processes[i].pid, signal.SIGKILL)
        for process in self.processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=10)
        shutil.rmtree(self.root, ignore_errors=True)


class NodenetCluster(Cluster):
    """`nodenetd` processes, profile `lan`, joined through member 0."""

    system = "nodenet"
    dead_status = "dead"

    def __init__(
        self,
        n: int,
        key: ClusterKey,
        *,
        profile: str = "lan",
        settings: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(n, key)
        self.profile = profile
        self.settings = settings or {}
        """Extra config settings, {"section.key": value}, e.g. {"store.sync_interval_s": 60}."""
        self.bin = Path(sys.executable).parent

    def _dir(self, i: int) -> Path:
        return self.root / self.names[i]

    def socket(self, i: int) -> Path:
        """Member i's API socket."""
        return self._dir(i) / "api.sock"

    def prepare(self, i: int) -> None:
        directory = self._dir(i)
        directory.mkdir(mode=0o700)
        keyring = directory / "keyring"
        fd = os.open(keyring, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(Keyring([self.key]).to_text())
        seeds = [] if i == 0 else [f"{LOCAL}:{self.ports[0]}"]
        config: dict[str, dict[str, Any]] = {
            "node": {"name": self.names[i], "state_dir": str(directory)},
            "network": {"bind": LOCAL, "port": self.ports[i], "seeds": seeds},
            "cluster": {"keyring_file": str(keyring), "profile": self.profile},
            "api": {"socket": str(self.socket(i))},
        }
        for dotted, value in self.settings.items():
            section, _, key = dotted.partition(".")
            config.setdefault(section, {})[key] = value
        (directory / "nodenet.toml").write_text(
            "".join(
                f"[{section}]\n"
                + "".join(f"{key} = {json.dumps(value)}\n" for key, value in values.items())
                for section, values in config.items()
            )
        )

    def command(self, i: int) -> list[str]:
        return [
            sys.executable,
            "-m",
            "nodenet.daemon.main",
            "--config",
            str(self._dir(i) / "nodenet.toml"),
        ]

    def client(self, i: int) -> NodenetApi:
        return NodenetApi(self.socket(i))

    def cli(self, i: int) -> list[str]:
        return [str(self.bin / "nodenet"), "peers", "--api", str(self.socket(i))]

    def counters(self, i: int) -> dict[str, float] | None:
        """Member i's traffic and protocol counters from /metrics, e.g. `bytes_udp_out`."""
        try:
            text = self.clients[i].get("/metrics").decode()
        except (OSError, http.client.HTTPException):
            return None
        out = {}
        for line in text.splitlines():
            found = _SERIES.match(line)
            if found is None or found["name"] not in _COUNTERS:
                continue
            labels = dict(_LABEL.findall(found["labels"] or ""))
            parts = [_COUNTERS[found["name"]], labels.get("transport"), labels.get("direction")]
            out["_".join(p for p in parts if p)] = float(found["value"])
        return out


_SERIES = re.compile(r"^(?P<name>[a-z_]+)(?:\{(?P<labels>[^}]*)\})? (?P<value>\S+)$")
_LABEL = re.compile(r'(\w+)="([^"]*)"')
_COUNTERS = {
    "nodenet_transport_bytes_total": "bytes",
    "nodenet_datagrams_total": "datagrams",
    "nodenet_tcp_connections_total": "tcp_connections",
    "nodenet_probes_total": "probes",
    "nodenet_indirect_probes_total": "indirect_probes",
    "nodenet_gossip_datagrams_total": "gossip_datagrams",
    "nodenet_push_pulls_total": "push_pulls",
    "nodenet_suspicions_total": "suspicions",
    "nodenet_sync_sessions_total": "sync_sessions",
    "nodenet_sync_bytes_total": "sync_bytes",
}


class SerfCluster(Cluster):
    """`serf agent` processes (lan profile, its default), joined through member 0."""

    system = "serf"
    dead_status = "failed"
    executable = shutil.which("serf") or "serf"

    def __init__(self, n: int, key: ClusterKey) -> None:
        super().__init__(n, key)
        self.rpc_ports = port_block(n)
        while set(self.rpc_ports) & set(self.ports):
            self.rpc_ports = port_block(n)

    def command(self, i: int) -> list[str]:
        command = [
            self.executable,
            "agent",
            f"-node={self.names[i]}",
            f"-bind={LOCAL}:{self.ports[i]}",
            f"-rpc-addr={LOCAL}:{self.rpc_ports[i]}",
            f"-encrypt={self.key.text}",
            "-profile=lan",
        ]
        if i:
            # -join exits if member 0 is not listening yet; -retry-join retries, every 1 s
            # (Serf's minimum; nodenetd retries after 0.5 s, then 1 s, then every 2 s).
            command += [f"-retry-join={LOCAL}:{self.ports[0]}", "-retry-interval=1s"]
        return command

    def client(self, i: int) -> SerfRpc:
        return SerfRpc(self.rpc_ports[i])

    def cli(self, i: int) -> list[str]:
        return [self.executable, "members", f"-rpc-addr={LOCAL}:{self.rpc_ports[i]}"]


@contextlib.contextmanager
def running(cluster: Cluster, *, logs: str | None = None, run: int = 0) -> Iterator[Cluster]:
    """The cluster, killed and deleted on the way out whatever happens (its members' logs
    first copied to `logs`/SYSTEM-nN-RUN/ if asked)."""
    try:
        yield cluster
    finally:
        try:
            if logs is not None:
                target = Path(logs) / f"{cluster.system}-n{cluster.n}-{run}"
                target.mkdir(parents=True, exist_ok=True)
                for log in cluster.root.glob("*.log"):
                    shutil.copy(log, target / log.name)
                for log in cluster.root.glob("*/nodenetd.log"):
                    shutil.copy(log, target / f"{log.parent.name}.log")
        finally:
            cluster.close()
