"""The chaos harness: real nodenetd processes on their own loopback addresses, faults
injected from outside, and the invariant checker every scenario ends with.

Every daemon binds its own 127.A.B.x address (A from the pid, B one per cluster), so
nftables rules can single out the cluster's traffic and nothing else: rules only ever name
these loopback addresses (tests/support/nft.py refuses anything else). Processes are
killed when a cluster is closed, stopped ones (SIGSTOP) included.

Durations and sizes come from `scaled(ci, soak)`: the short value in `make test`, the long
one when `NODENET_SOAK=1` (`make soak`).
"""

from __future__ import annotations

import base64
import collections
import contextlib
import hashlib
import itertools
import json
import os
import random
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families
from support.daemons import DaemonProcess, api_client, free_port, node_dir, remove, short_tmpdir

from nodenet.protocol.entries import decode_entry
from nodenet.protocol.identity import verify

SOAK = os.environ.get("NODENET_SOAK") == "1"
MiB = 1 << 20
API_TOKENS = {"admin": "nnt_chaos_admin", "write": "nnt_chaos_write", "read": "nnt_chaos_read"}
"""Bearer tokens (role → token) every node with `api_tcp` accepts on its TCP listener."""


def write_api_tokens(directory: Path) -> None:
    """The tokens file (`<state_dir>/api-tokens`: sha256, role, name per line, mode 0600)."""
    path = directory / "api-tokens"
    lines = [
        f"{hashlib.sha256(token.encode()).hexdigest()} {role} chaos-{role}"
        for role, token in API_TOKENS.items()
    ]
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)


def scaled(ci: Any, soak: Any) -> Any:
    """The CI value, or the soak value under `NODENET_SOAK=1`."""
    return soak if SOAK else ci


_clusters = itertools.count(1)


def subnet() -> str:
    """A fresh /24 of 127.0.0.0/8 for one cluster: `127.A.B.` (A from the pid)."""
    return f"127.{100 + os.getpid() % 100}.{next(_clusters) % 250 + 1}."


def figure(text: str) -> None:
    """Print one measured figure (pytest shows them with -s, and in the CI log on failure)."""
    print(f"[chaos] {text}", flush=True)


# --- one node -----------------------------------------------------------------------------


class Node:
    """One nodenetd process on its own loopback address."""

    def __init__(self, root: Path, name: str, host: str, *, config: Path, env: dict[str, str]):
        self.root = root
        self.name = name
        self.host = host
        self.config = config
        self.env = env
        self.daemon = DaemonProcess(config)
        self.directory = self.daemon.directory
        self.port = 0
        self.paused = False
        self.down = True
        self.starts = 0

    def __repr__(self) -> str:
        return f"<{self.name} {self.host}:{self.port} pid={self.pid}>"

    @property
    def pid(self) -> int | None:
        process = self.daemon.process
        return process.pid if process is not None and process.poll() is None else None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    # process control

    def start(self, *, wait: bool = True) -> Node:
        self.daemon.start(wait=False, env=self.env)
        self.down = False
        self.paused = False
        self.starts += 1
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 30) -> None:
        wait_for(self.daemon.ready, timeout=timeout, what=f"{self.name} API")

    def alive(self) -> bool:
        """The process is running (possibly stopped by SIGSTOP)."""
        return self.pid is not None

    def pause(self) -> None:
        """SIGSTOP: the process freezes, sockets stay open."""
        self.daemon.signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        """SIGCONT."""
        self.daemon.signal(signal.SIGCONT)
        self.paused = False

    def kill9(self) -> None:
        """kill -9 (a stopped process dies too)."""
        process = self.daemon.process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=10)
        self.down = True
        self.paused = False

    def exit_code(self) -> int | None:
        process = self.daemon.process
        return None if process is None else process.poll()

    # measurements

    def memory(self) -> dict[str, int]:
        """Resident memory in bytes: `rss`, and its `anon` (heap) and `file` (LMDB map,
        libraries) parts, from /proc/PID/status."""
        pid = self.pid
        assert pid is not None, f"{self.name} is not running"
        fields = {"VmRSS": "rss", "RssAnon": "anon", "RssFile": "file"}
        out = {}
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            name, _, rest = line.partition(":")
            if name in fields:
                out[fields[name]] = int(rest.split()[0]) * 1024
        return out

    def open_fds(self) -> int:
        pid = self.pid
        assert pid is not None
        return len(os.listdir(f"/proc/{pid}/fd"))

    def udp_kernel_drops(self) -> int:
        """Datagrams the kernel dropped for this node's UDP socket (receive buffer full)."""
        want = f"{_hex_ip(self.host)}:{self.port:04X}"
        for line in Path("/proc/net/udp").read_text().splitlines()[1:]:
            parts = line.split()
            if parts[1] == want:
                return int(parts[-1])
        return 0

    # the API

    def api(self, timeout: float = 10.0) -> httpx.Client:
        return api_client(self.daemon.socket, timeout=timeout)

    def get(self, path: str, **params: Any) -> Any:
        with self.api() as client:
            response = client.get(path, params=params)
            response.raise_for_status()
            return response.json()

    def peers(self) -> dict[str, str]:
        """name → status as this node sees it (itself included)."""
        return {p["name"]: p["status"] for p in self.get("/v1/peers")["peers"]}

    def store(self) -> tuple[int, str]:
        """(heads, digest) of this node's store."""
        body = self.get("/v1/store")
        return body["entries"], body["digest"]

    def entries(self, prefix: str = "") -> dict[str, str]:
        """key → entry id of every live entry under `prefix` (all pages)."""
        out: dict[str, str] = {}
        after = None
        with self.api(timeout=30) as client:
            while True:
                params: dict[str, Any] = {"prefix": prefix, "limit": 1000}
                if after is not None:
                    params["after"] = after
                response = client.get("/v1/entries", params=params)
                response.raise_for_status()
                body = response.json()
                out.update({e["key"]: e["id"] for e in body["entries"]})
                after = body["next"]
                if after is None:
                    return out

    def metrics(self) -> Metrics:
        with self.api() as client:
            response = client.get("/metrics")
            response.raise_for_status()
            return Metrics.parse(response.text)


def _hex_ip(host: str) -> str:
    """/proc/net/udp's spelling of an IPv4 address (little-endian hex)."""
    return "".join(f"{int(part):02X}" for part in reversed(host.split(".")))


@dataclass
class Metrics:
    """One scrape: sample name → {labels → value}."""

    samples: dict[str, dict[tuple[tuple[str, str], ...], float]]

    @classmethod
    def parse(cls, text: str) -> Metrics:
        samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = collections.defaultdict(dict)
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                samples[sample.name][tuple(sorted(sample.labels.items()))] = sample.value
        return cls(dict(samples))

    def value(self, name: str, **labels: str) -> float:
        """The sample with exactly these labels (0 if absent)."""
        return self.samples.get(name, {}).get(tuple(sorted(labels.items())), 0.0)

    def by(self, name: str, label: str) -> dict[str, float]:
        """label value → sample, for a metric with one label."""
        return {dict(k)[label]: v for k, v in self.samples.get(name, {}).items() if k}


# --- a cluster ----------------------------------------------------------------------------


class Cluster:
    """N nodes on 127.A.B.1…N; the first three are everyone's seeds.

    Use as a context manager: every process is killed on exit, whatever happened, and the
    state directories are removed unless the test failed (then their logs stay for
    diagnosis and their path is printed)."""

    def __init__(
        self,
        n: int,
        *,
        profile: str = "lan",
        extra: str = "",
        env: dict[str, str] | None = None,
        api_tcp: bool = False,
        names: Iterable[str] | None = None,
        before_start: Callable[[Node], None] | None = None,
    ) -> None:
        self.root = short_tmpdir()
        prefix = self.prefix = subnet()
        self.nodes: list[Node] = []
        hosts = [f"{prefix}{i + 1}" for i in range(n)]
        ports = [free_port(h) for h in hosts]
        seeds = [f"{h}:{p}" for h, p in zip(hosts[:3], ports[:3], strict=True)]
        for i, name in enumerate(names or (f"n{i}" for i in range(n))):
            host = hosts[i]
            config = node_dir(
                self.root,
                name,
                bind=host,
                port=ports[i],
                seeds=[s for s in seeds if s != f"{host}:{ports[i]}"],
                profile=profile,
                extra=extra,
                api_tcp=f"127.0.0.1:{free_port()}" if api_tcp else None,
            )
            if api_tcp:
                write_api_tokens(config.parent)
            node = Node(self.root, name, host, config=config, env=dict(env or {}))
            node.port = ports[i]
            self.nodes.append(node)
        self._before_start = before_start
        self.keep = False

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, kind: object, exc: object, tb: object) -> None:
        self.kill_all()
        if kind is not None:
            figure(f"state directories and logs kept in {self.root}")
            self.keep = True
        else:
            remove(self.root)

    def __getitem__(self, index: int) -> Node:
        return self.nodes[index]

    def __len__(self) -> int:
        return len(self.nodes)

    @property
    def hosts(self) -> list[str]:
        return [n.host for n in self.nodes]

    def outsider(self, index: int = 0) -> str:
        """A loopback address in the cluster's subnet that no node uses (for attackers)."""
        return f"{self.prefix}{200 + index}"

    def start(self, *, together: bool = False, converge_timeout: float = 60.0) -> float:
        """Start every node and wait until all see all alive; the seconds it took.

        By default the seeds (the first three) one after the other, each ready before the
        next starts, then the others at once: nobody knows a non-seed before it has joined,
        so no peer talks to it while it starts. `together` starts every process at once,
        seeds included, as after a power cut (test_startup.py: how the start-up race
        shows)."""
        started = time.monotonic()
        for index, node in enumerate(self.nodes):
            if self._before_start is not None:
                self._before_start(node)
            node.start(wait=not together and index < 3)
        for node in self.nodes:
            node.wait_ready(timeout=60)
        self.wait_membership(timeout=converge_timeout)
        return time.monotonic() - started

    def live(self) -> list[Node]:
        """Nodes running and not paused."""
        return [n for n in self.nodes if not n.down and not n.paused]

    def kill_all(self) -> None:
        for node in self.nodes:
            with contextlib.suppress(Exception):
                node.kill9()

    # convergence

    def membership_view(self, node: Node) -> dict[str, str]:
        return node.peers()

    def membership_agrees(self, expected_alive: Iterable[str] | None = None) -> bool:
        """Every live node sees exactly the live nodes of this cluster alive, and the other
        nodes of the cluster not alive. (Members a hostile peer added of its own are not
        the cluster's: they are ignored here.)"""
        live = self.live()
        alive = set(expected_alive) if expected_alive is not None else {n.name for n in live}
        ours = {n.name for n in self.nodes}
        for node in live:
            view = node.peers()
            if {n for n, status in view.items() if status == "alive" and n in ours} != alive:
                return False
        return True

    def wait_membership(self, *, timeout: float, expected_alive: Iterable[str] | None = None):
        return wait_for(
            lambda: self.membership_agrees(expected_alive),
            timeout=timeout,
            what="the same membership view on every live node",
            diagnose=self.describe_views,
        )

    def describe_views(self) -> str:
        lines = []
        for node in self.live():
            try:
                view = node.peers()
                lines.append(f"{node.name}: {sorted(view.items())}")
            except Exception as exc:  # the diagnosis must not hide the failure
                lines.append(f"{node.name}: {exc!r}")
        return "\n".join(lines)

    def digests(self) -> dict[str, tuple[int, str]]:
        return {n.name: n.store() for n in self.live()}

    def wait_identical_heads(self, *, timeout: float) -> float:
        return wait_for(
            lambda: len({d for _, d in self.digests().values()}) == 1,
            timeout=timeout,
            what="identical store heads (GET /v1/store digest) on every live node",
            diagnose=lambda: json.dumps(self.digests(), indent=1),
        )


def wait_for(
    condition: Callable[[], Any],
    *,
    timeout: float,
    interval: float = 0.2,
    what: str = "condition",
    diagnose: Callable[[], str] | None = None,
) -> float:
    """Poll `condition` until truthy; the seconds it took. Fails with a diagnosis."""
    start = time.monotonic()
    deadline = start + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if condition():
                return time.monotonic() - start
        except (httpx.HTTPError, OSError, KeyError, ValueError) as exc:
            last = exc
        time.sleep(interval)
    detail = ""
    if diagnose is not None:
        try:
            detail = "\n" + diagnose()
        except Exception as exc:
            detail = f"\n(diagnosis failed: {exc!r})"
    raise AssertionError(f"{what}: not reached within {timeout:.0f} s (last error: {last}){detail}")


# --- membership events, as every node reports them ----------------------------------------


@dataclass(frozen=True)
class Seen:
    """One membership event as `observer` reported it on /v1/events."""

    at: float  # time.monotonic() in the test process
    observer: str
    kind: str  # joined, updated, suspected, refuted, failed, left, reaped
    member: str


class EventRecorder:
    """Follows /v1/events of every node in a thread each (reconnecting and resuming after
    restarts and pauses), so a test can say who suspected or declared whom dead, and when."""

    def __init__(self, nodes: Iterable[Node]) -> None:
        self.nodes = list(nodes)
        self.events: list[Seen] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._follow, args=(n,), daemon=True) for n in self.nodes
        ]

    def __enter__(self) -> EventRecorder:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)

    def _follow(self, node: Node) -> None:
        last_id: str | None = None
        while not self._stop.is_set():
            if node.down or node.paused:
                time.sleep(0.1)
                continue
            try:
                timeout = httpx.Timeout(5.0, read=1.0)
                with api_client(node.daemon.socket, timeout=5) as client:
                    headers = {"Last-Event-ID": last_id} if last_id else {}
                    with client.stream(
                        "GET", "/v1/events", headers=headers, timeout=timeout
                    ) as response:
                        block: dict[str, str] = {}
                        for line in response.iter_lines():
                            if self._stop.is_set():
                                return
                            if line:
                                name, _, value = line.partition(":")
                                block[name] = value.strip()
                                continue
                            if "id" in block:
                                last_id = block["id"]
                            if block.get("event") == "member":
                                data = json.loads(block["data"])
                                self._add(
                                    Seen(
                                        time.monotonic(),
                                        node.name,
                                        data["kind"],
                                        data["member"]["name"],
                                    )
                                )
                            block = {}
            except (httpx.HTTPError, OSError, ValueError):
                time.sleep(0.1)

    def _add(self, seen: Seen) -> None:
        with self._lock:
            self.events.append(seen)

    def select(
        self,
        kind: str,
        *,
        member: str | Iterable[str] | None = None,
        since: float = 0.0,
        until: float = float("inf"),
    ) -> list[Seen]:
        members = {member} if isinstance(member, str) else set(member or ())
        with self._lock:
            return [
                e
                for e in self.events
                if e.kind == kind
                and since <= e.at <= until
                and (not members or e.member in members)
            ]

    def count(self, kind: str, **filters: Any) -> int:
        return len(self.select(kind, **filters))


# --- load ---------------------------------------------------------------------------------


@dataclass
class WriteLoad:
    """Submits entries at a steady rate to random live nodes from `threads` threads and
    records what was acknowledged (key → entry id). Keys are unique, so every
    acknowledged key must end up with exactly that id on every node."""

    cluster: Cluster
    rate: float  # entries per second, all threads together
    prefix: str
    threads: int = 2
    value_size: int = 64
    targets: Callable[[], list[Node]] | None = None
    acked: dict[str, str] = field(default_factory=dict)
    failures: collections.Counter[str] = field(default_factory=collections.Counter)
    latencies: list[float] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _workers: list[threading.Thread] = field(default_factory=list)
    _seq: Iterator[int] = field(default_factory=itertools.count)

    def __enter__(self) -> WriteLoad:
        for i in range(self.threads):
            worker = threading.Thread(target=self._run, args=(i,), daemon=True)
            self._workers.append(worker)
            worker.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.join(timeout=30)

    def _run(self, index: int) -> None:
        rng = random.Random(index)
        period = self.threads / self.rate
        next_at = time.monotonic()
        while not self._stop.is_set():
            next_at += period
            candidates = (self.targets or self.cluster.live)()
            if candidates:
                node = rng.choice(candidates)
                with self._lock:
                    key = f"{self.prefix}/{next(self._seq):07d}"
                value = base64.b64encode(rng.randbytes(self.value_size * 3 // 4)).decode()
                started = time.monotonic()
                try:
                    with node.api(timeout=5) as client:
                        response = client.post("/v1/entries", json={"key": key, "value": value})
                    if response.status_code == 200:
                        with self._lock:
                            self.acked[key] = response.json()["id"]
                            self.latencies.append(time.monotonic() - started)
                    else:
                        self.failures[f"HTTP {response.status_code}"] += 1
                except (httpx.HTTPError, OSError) as exc:
                    self.failures[type(exc).__name__] += 1
            delay = next_at - time.monotonic()
            if delay > 0:
                self._stop.wait(delay)
            else:
                next_at = time.monotonic()

    def snapshot(self) -> dict[str, str]:
        with self._lock:
            return dict(self.acked)


# --- the invariant checker ----------------------------------------------------------------


@dataclass
class Report:
    """What the invariant checker measured."""

    membership_s: float = 0.0
    heads_s: float = 0.0
    heads: int = 0
    acked: int = 0
    verified: int = 0
    rss: dict[str, dict[str, int]] = field(default_factory=dict)

    def lines(self) -> list[str]:
        rss = [m["rss"] for m in self.rss.values()]
        anon = [m["anon"] for m in self.rss.values()]
        return [
            f"membership identical on every live node after {self.membership_s:.1f} s",
            f"store heads identical after {self.heads_s:.1f} s ({self.heads} heads per node)",
            f"acknowledged entries present on every node: {self.acked}",
            f"entries decoded with signature verification after stop: {self.verified}",
            f"RSS per process: {min(rss) / MiB:.0f}-{max(rss) / MiB:.0f} MiB"
            f" (anonymous {min(anon) / MiB:.0f}-{max(anon) / MiB:.0f} MiB)",
        ]


def check_invariants(
    cluster: Cluster,
    acked: dict[str, str],
    *,
    prefix: str = "",
    rss_limit: int = 250 * MiB,
    timeout: float = 120.0,
    expected_alive: Iterable[str] | None = None,
    verify_after_stop: bool = True,
) -> Report:
    """The checks every scenario ends with, on the live nodes:

    1. the same membership view everywhere (every live node alive, nobody else);
    2. identical store heads (the `GET /v1/store` digest);
    3. every acknowledged submit present, with its id, on every node;
    4. each process's RSS under `rss_limit`;
    5. then (`verify_after_stop`) every node is killed with SIGKILL and its LMDB is opened
       and checked: every stored entry decodes with its signature verified, and the
       indexes (heads, ids, summary) agree with the entries.
    """
    report = Report(acked=len(acked))
    report.membership_s = cluster.wait_membership(timeout=timeout, expected_alive=expected_alive)
    report.heads_s = cluster.wait_identical_heads(timeout=timeout)
    live = cluster.live()
    for node in live:
        present = node.entries(prefix)
        missing = [k for k, i in acked.items() if present.get(k) != i]
        assert not missing, (
            f"{node.name} lacks {len(missing)} of {len(acked)} acknowledged entries,"
            f" e.g. {missing[:5]}"
        )
        report.rss[node.name] = node.memory()
    report.heads = live[0].store()[0]
    for name, memory in report.rss.items():
        assert memory["rss"] < rss_limit, (
            f"{name} uses {memory['rss'] / MiB:.0f} MiB resident, over {rss_limit / MiB:.0f}"
        )
    if verify_after_stop:
        cluster.kill_all()
        for node in live:
            report.verified += verify_state(node.directory / "state")
    for line in report.lines():
        figure(line)
    return report


def verify_state(path: Path) -> int:
    """Open a stopped node's LMDB and check it: every entry decodes with a valid signature,
    `heads`, `ids` and `summary` agree with `entries`. Returns the number of entries."""
    from nodenet.daemon.state import StateStore

    state = StateStore.open(path)
    try:
        with state.reader() as (txn, dbs):
            entries = 0
            total = 0
            by_item: dict[bytes, str] = {}
            for item, encoded in txn.cursor(dbs["entries"]):
                entry = decode_entry(encoded, now_ms=2**47, max_value=1 << 20, verify=verify)
                assert item == entry.hlc.to_bytes(8, "big") + entry.id, f"{path}: misfiled entry"
                assert txn.get(entry.id, db=dbs["ids"]) == item[:8], f"{path}: ids index"
                by_item[item] = entry.key
                total += int.from_bytes(entry.id, "little")
                entries += 1
            heads = 0
            for key, raw in txn.cursor(dbs["heads"]):
                item = raw[:8] + raw[40:72]
                assert by_item.get(item) == key.decode(), f"{path}: head of {key!r} dangles"
                heads += 1
            assert heads == entries, f"{path}: {heads} heads for {entries} entries"
            count = 0
            summed = 0
            for _, raw in txn.cursor(dbs["summary"]):
                count += int.from_bytes(raw[:4], "little")
                summed += int.from_bytes(raw[4:36], "little")
            assert count == entries, f"{path}: summary counts {count}, entries {entries}"
            assert summed % (1 << 256) == total % (1 << 256), f"{path}: summary id sums differ"
    finally:
        state.close()
    return entries


# --- processes and mounts -----------------------------------------------------------------


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Callable[[str], None]]:
    """Mount a tmpfs of `size` on `path`; yields `resize(new_size)`; always unmounted."""
    path.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)],
        capture_output=True,
        text=True,
        timeout=10,
    )
    if result.returncode != 0:
        raise PermissionError(
            f"mount -t tmpfs -o size={size} tmpfs {path}: exit {result.returncode}:"
            f" {result.stderr.strip()}"
        )

    def resize(new_size: str) -> None:
        subprocess.run(
            ["mount", "-o", f"remount,size={new_size}", str(path)],
            check=True,
            capture_output=True,
            timeout=10,
        )

    try:
        yield resize
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False, timeout=10)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]
