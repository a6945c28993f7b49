"""The daemon: start-up, the services it runs, graceful shutdown and reload.

Start-up is a chain, each step failing with a message that says what to do: lock the state
directory, load (or create) the node key and the keyring, open the state store and load the
member table, bind the sockets, start the membership service, claim the API socket and
serve the API, then tell systemd READY=1 and join seeds and remembered members. Shutdown
reverses it: STOPPING=1, a signed LEAVE that is given time to spread, the API's streams
closed, everything cancelled within `shutdown_timeout_s`.
"""

from __future__ import annotations

import base64
import errno
import functools
import logging
import os
import random
import socket
import time
from collections.abc import Callable, Sequence
from importlib.metadata import version
from pathlib import Path
from typing import Any

import hypercorn.config
import hypercorn.trio
import msgpack
import nacl.signing
import trio

from nodenet.daemon.api import ApiError, EntryWrite, create_app, wrap
from nodenet.daemon.config import DaemonConfig, parse_address
from nodenet.daemon.events import EventHub
from nodenet.daemon.files import remove_leftovers, write_atomically
from nodenet.daemon.handlers import Handlers
from nodenet.daemon.keyfile import load_or_create_node_key
from nodenet.daemon.lock import StateLock, acquire_state_lock, claim_socket_path
from nodenet.daemon.metrics import Metrics
from nodenet.daemon.notify import Notifier
from nodenet.daemon.replication import StoreService
from nodenet.daemon.service import Clock, MembershipService, SystemClock
from nodenet.daemon.state import META_INCARNATION, Delete, Put, StateError, StateStore
from nodenet.daemon.store import DamagedEntries
from nodenet.daemon.tokens import TokenError, Tokens
from nodenet.daemon.transport import Transport, UdpTcpTransport
from nodenet.protocol.entries import (
    MAX_VALUE_LIMIT,
    SignedEntry,
    ValueTooLarge,
    check_key,
    decode_entry,
)
from nodenet.protocol.errors import LocalProtocolError, ProtocolError, RemoteProtocolError
from nodenet.protocol.hlc import hlc_millis
from nodenet.protocol.identity import CachingVerifier, short_ids
from nodenet.protocol.keyring import ClusterKey, Keyring
from nodenet.protocol.members import EventKind, MemberEvent, MemberInfo, MemberStatus
from nodenet.protocol.membership import INCARNATION_CEILING, Membership
from nodenet.protocol.messages import (
    Address,
    MemberState,
    PushPull,
    Tags,
    Verify,
    decode_message,
    encode_message,
    make_tags,
    unpack,
)
from nodenet.protocol.wire import PROTOCOL_MAJOR, PROTOCOL_MINOR, WireCodec, WireLimits

__all__ = ["Daemon", "StartupError"]

STALE_READER_CHECK_S = 60.0

log = logging.getLogger("nodenet.daemon")
REJOIN_FANOUT = 3
JOIN_RETRY_LIMIT_S = 60.0


class StartupError(Exception):
    """The daemon cannot start; the message says why and what to do."""


# --- persistence of the member table ------------------------------------------------------


def member_blob(state: MemberState) -> bytes:
    """A member's signed state as stored: the wire encoding of a one-member PUSH_PULL."""
    return encode_message(PushPull(join=False, members=(state,)))


def member_from_blob(blob: bytes, verify: Verify) -> MemberState | None:
    """Decode and re-verify a stored member (a tampered file cannot inject claims)."""
    try:
        message = decode_message(unpack(blob, max_len=len(blob)), verify)
    except ProtocolError:
        return None
    if isinstance(message, PushPull) and len(message.members) == 1:
        return message.members[0]
    return None


def read_keyring(path: Path) -> Keyring:
    """Load the keyring file, refusing one that others can read."""
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise StartupError(
            f"no keyring at {path}: create one with `nodenet init`, or copy it from a member"
            " (`nodenet token` on a member, then `nodenet init --token …` here)"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise StartupError(f"cannot read keyring {path}: {exc}") from exc
    if mode & 0o077:
        raise StartupError(
            f"keyring {path} has mode {mode & 0o777:04o}: the cluster keys are secret;"
            f" run `chmod 600 {path}`"
        )
    try:
        return Keyring.from_text(text, str(path))
    except LocalProtocolError as exc:
        raise StartupError(str(exc)) from None


def write_keyring(path: Path, ring: Keyring) -> None:
    """Replace the keyring file atomically (mode 0600, fsynced)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_atomically(path, ring.to_text(), mode=0o600)


def _check_all(
    replication: StoreService, encoded: list[bytes]
) -> list[SignedEntry | RemoteProtocolError]:
    """Verify pre-signed entries (in a worker thread: one Ed25519 verify each)."""
    out: list[SignedEntry | RemoteProtocolError] = []
    for blob in encoded:
        try:
            out.append(replication.check_signed(blob))
        except RemoteProtocolError as exc:
            out.append(exc)
    return out


def _entry_event(entry: SignedEntry, origin: str) -> dict[str, Any]:
    return {**entry_json(entry), "origin": origin}


def entry_json(entry: SignedEntry, *, with_value: bool = True) -> dict[str, Any]:
    """An entry as the API shows it: text values as text, others base64."""
    out: dict[str, Any] = {
        "key": entry.key,
        "id": entry.id.hex(),
        "author": entry.author.text,
        "hlc": entry.hlc,
        "time": _rfc3339(hlc_millis(entry.hlc) / 1000),
        "deleted": entry.tombstone,
        "size": len(entry.value),
    }
    if with_value:
        try:
            out["value"] = entry.value.decode("utf-8")
        except UnicodeDecodeError:
            out["value"] = None
        out["value_b64"] = base64.b64encode(entry.value).decode("ascii")
    return out


def member_json(info: MemberInfo, *, now: float, short_id: str, is_self: bool) -> dict[str, Any]:
    """A member as the API shows it."""
    tags = dict(info.tags)
    return {
        "id": info.node.text,
        "short_id": short_id,
        "name": tags.get("name", info.node.short),
        "address": str(info.address),
        "status": info.status.value,
        "incarnation": info.incarnation,
        "tags": tags,
        "self": is_self,
        "changed_s_ago": round(max(0.0, now - info.changed_at), 3),
    }


class Daemon:
    """One nodenetd: membership service, state, API, systemd glue."""

    def __init__(
        self,
        config: DaemonConfig,
        *,
        clock: Clock | None = None,
        transport: Transport | None = None,
        notifier: Notifier | None = None,
    ) -> None:
        self.config = config
        self.clock = clock or SystemClock()
        self._transport = transport
        self.notifier = notifier or Notifier.from_environ()
        self._status_sent = ""
        self._opened: UdpTcpTransport | None = None
        """The transport `run` opened (None for one passed in); closed when `run` ends."""
        self._keyring_lock = trio.Lock()
        self._tag_changes: dict[str, str | None] = {}
        """Runtime tag changes over the config's (None: deleted); saved in the state store."""
        self.metrics = Metrics()
        self.handlers = Handlers(config.handlers)
        self.tokens = Tokens()
        self.metrics.attach_handlers(self.handlers)
        self.hub = EventHub(first_id=time.time_ns() // 1_000_000 * 1000)
        self.metrics.attach_hub(self.hub)
        self.service: MembershipService | None = None
        self.replication: StoreService | None = None
        self.store: StateStore | None = None
        self.api_socket: Path | None = None
        self._key: nacl.signing.SigningKey | None = None
        self._lock: StateLock | None = None
        self._verify = CachingVerifier()
        self._started_mono = 0.0
        self._started_wall = 0.0
        self._shutdown = trio.Event()
        self._stopping = False
        self._saved_incarnation = -1
        self._api_closed = trio.Event()
        self._store_failed = False

    # --- lifecycle ----------------------------------------------------------------------

    async def run(
        self, *, task_status: trio.TaskStatus[MembershipService] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Start everything, serve until `request_shutdown`, then stop gracefully."""
        c = self.config
        try:
            self._lock = acquire_state_lock(c.state_dir)
        except Exception as exc:  # lock errors carry their own advice
            raise StartupError(str(exc)) from exc
        try:
            await self._run(task_status)
        finally:
            if self._opened is not None:
                self._opened.close()  # the port is free when run() returns
            if self.store is not None:
                with trio.CancelScope(shield=True):
                    await self.store.aclose()
            self._lock.release()

    async def _run(self, task_status: trio.TaskStatus[MembershipService]) -> None:
        c = self.config
        for path in (c.key_file, c.keyring_file):
            for leftover in remove_leftovers(path):
                log.info("removed %s, left by a write that was interrupted", leftover)
        if c.key_file.is_dir():
            raise StartupError(
                f"{c.key_file} is a directory; the node key must be a file: move it away"
            )
        try:
            key, created = load_or_create_node_key(c.key_file)
        except LocalProtocolError as exc:  # KeyFileError: what is wrong and where
            raise StartupError(str(exc)) from exc
        except OSError as exc:
            raise StartupError(
                f"cannot read or create the node key {c.key_file}: {exc.strerror}; run nodenetd"
                " as the user that owns the state directory"
            ) from exc
        self._key = key
        if created:
            log.info("created node key %s", c.key_file)
        try:
            self.tokens = Tokens.load(c.api.tokens_file)
        except (TokenError, OSError) as exc:
            raise StartupError(str(exc)) from exc
        try:
            self.store = await trio.to_thread.run_sync(
                StateStore.open, c.state_dir / "state", c.state
            )
        except Exception as exc:
            raise StartupError(str(exc)) from exc
        blobs = await self.store.load_members()
        if created and blobs:
            log.warning(
                "created a new node key %s although the state remembers %d members: this node"
                " joins as a new member; if its key was lost by mistake, stop it and restore"
                " the key from a backup",
                c.key_file,
                len(blobs),
            )
        if not os.path.lexists(c.keyring_file):
            if blobs:
                # A new cluster key would cut this node off from the cluster it remembers.
                raise StartupError(
                    f"no keyring at {c.keyring_file}, but the state remembers {len(blobs)}"
                    " members of a cluster: restore the keyring from a backup or get one from a"
                    " member (`nodenet token` there, `nodenet init --token` here), or move the"
                    " state directory away to start a new cluster"
                )
            ring = Keyring([ClusterKey.generate()])
            try:
                await trio.to_thread.run_sync(write_keyring, c.keyring_file, ring)
            except OSError as exc:
                raise StartupError(
                    f"no keyring at {c.keyring_file} and cannot create one: {exc.strerror};"
                    " write it with `nodenet init`, or make its directory writable"
                ) from exc
            log.warning(
                "no keyring at %s: created one with a new cluster key %s; other nodes need it"
                " (`nodenet token`)",
                c.keyring_file,
                ring.primary.key_id,
            )
        ring = read_keyring(c.keyring_file)
        try:
            stored_incarnation = await self.store.load_incarnation()
        except StateError as exc:
            raise StartupError(
                f"{exc}; the node must not reuse an incarnation: restore the state directory"
                " from a backup, or move it away (the node then rejoins as new)"
            ) from exc
        if stored_incarnation >= INCARNATION_CEILING - 1:
            raise StartupError(
                f"the stored incarnation {stored_incarnation} is at the ceiling (2^63); this"
                " node's identity is used up: move the state directory away and start anew"
            )
        try:
            self._tag_changes = await self.store.load_tag_changes()
        except StateError as exc:
            log.warning("%s; starting with the config's tags", exc)
        states = [s for s in (member_from_blob(b, self._verify) for b in blobs.values()) if s]
        if len(states) != len(blobs):
            log.warning("ignored %d unreadable member records", len(blobs) - len(states))

        transport = self._transport
        if transport is None:
            real = UdpTcpTransport(c.bind)
            try:
                await real.open()
            except OSError as exc:
                raise StartupError(exc.strerror or str(exc)) from exc
            transport = self._opened = real
        advertise = c.advertise
        now = self.clock.now()
        self._started_mono = now
        self._started_wall = time.time()
        core = Membership(
            key=key,
            address=advertise,
            now=now,
            rng=random.Random(int.from_bytes(os.urandom(16), "big")),
            config=c.membership,
            tags=self._tags_with_changes(c.tags),
            incarnation=stored_incarnation + 1,
            seeds=c.seeds,
        )
        core.restore(now, states)
        try:
            await self.store.save_incarnation(core.incarnation)
        except StateError as exc:  # the first write: damage inside data.mdb shows here
            raise StartupError(
                f"{exc}; the state store cannot be written: restore the state directory from a"
                " backup (docs/operations.md), or move it away (the node then rejoins as new)"
            ) from exc
        self._saved_incarnation = core.incarnation
        codec = WireCodec(
            key,
            ring,
            limits=WireLimits(max_clock_skew_ms=int(c.max_clock_skew_s * 1000)),
            verify=None,
        )
        self.service = MembershipService(
            core,
            codec,
            transport,
            clock=self.clock,
            on_events=self._on_events,
            on_rtts=self.metrics.observe_rtts,
        )
        self.replication = StoreService(
            self.store,
            self.service,
            key,
            config=c.store,
            on_entries=self._on_entries,
        )
        self.metrics.attach(self.service, self.replication)
        log.info(
            "node %s (%s) on %s, advertising %s; cluster key %s; %d remembered members",
            core.node_id.text,
            c.name,
            transport.local,
            advertise,
            ring.primary.key_id,
            len(states),
        )
        async with trio.open_nursery() as nursery:
            await nursery.start(self.service.run)
            await nursery.start(self.replication.run)
            await nursery.start(self.handlers.run)
            await nursery.start(self._serve_api)
            nursery.start_soon(self.notifier.run_watchdog)
            nursery.start_soon(self._clear_stale_readers)
            known = [s.alive.address for s in states if s.status is None]
            rng = random.Random()
            targets = list(c.seeds) + rng.sample(known, min(REJOIN_FANOUT, len(known)))
            if targets:
                nursery.start_soon(self._join_at_start, targets)
            self._status_sent = self._status_line()
            self.notifier.ready(self._status_sent)
            task_status.started(self.service)
            await self._shutdown.wait()
            await self._stop(nursery)

    async def _join_at_start(self, targets: Sequence[Address]) -> None:
        """Join seeds and remembered members, retrying with backoff while we are alone.

        Nodes of a cluster often start together; the first attempt may find the seed not
        listening yet. After `JOIN_RETRY_LIMIT_S` the core's reconnect loop takes over."""
        assert self.service is not None
        unique = list(dict.fromkeys(targets))
        delay = 0.5
        waited = 0.0
        while True:
            results = await self.service.join(unique)
            if not all(results) or self.service.core.cluster_size() > 1:
                if self.replication is not None:
                    self.replication.joined()
                return
            if waited >= JOIN_RETRY_LIMIT_S:
                log.warning(
                    "could not reach any seed or remembered member; retrying every %.0f s",
                    self.config.membership.reconnect_interval_s,
                )
                return
            await trio.sleep(delay)
            waited += delay
            delay = min(delay * 2, 2.0)

    @property
    def stopping(self) -> bool:
        """Whether a graceful shutdown has begun."""
        return self._shutdown.is_set()

    def request_shutdown(self) -> None:
        """Begin a graceful shutdown (SIGTERM, SIGINT, `POST /v1/leave`)."""
        self._shutdown.set()

    async def _stop(self, nursery: trio.Nursery) -> None:
        assert self.service is not None
        self._stopping = True
        self.notifier.stopping("leaving the cluster")
        with trio.move_on_after(self.config.shutdown_timeout_s) as scope:
            if self.store is not None:
                # The LEAVE takes the next incarnation: record it first, so that if we are
                # killed while it spreads, the next start is above it and its ALIVE is heard.
                await self.store.save_incarnation(self.service.core.incarnation + 1)
            spread = await self.service.leave(self.config.leave_timeout_s)
            log.info("left the cluster (%s)", "LEAVE spread" if spread else "leave timeout reached")
            self.hub.close()
            self._api_closed.set()
        if scope.cancelled_caught:
            log.warning("graceful shutdown took longer than %.0f s", self.config.shutdown_timeout_s)
        nursery.cancel_scope.cancel()

    def reload(self, config: DaemonConfig) -> None:
        """SIGHUP: apply the reloadable settings (tags, keyring; log level is the caller's)."""
        assert self.service is not None
        self.notifier.reloading("reloading configuration")
        try:
            ring = read_keyring(config.keyring_file)
        except StartupError as exc:
            log.error("reload: keeping the current keyring: %s", exc)
        else:
            self.service.codec.keyring = ring
        tags = self._tags_with_changes(config.tags)
        if tags != self._tags_with_changes(self.config.tags):
            self.service.set_tags(dict(tags))
        self.handlers.reload(config.handlers)
        try:
            self.tokens = Tokens.load(config.api.tokens_file)
        except (TokenError, OSError) as exc:
            log.error("reload: keeping the current API tokens: %s", exc)
        self.config = config
        log.info("reloaded configuration from %s", config.source)
        self._status_sent = self._status_line()
        self.notifier.ready(self._status_sent)

    async def _clear_stale_readers(self) -> None:
        """Every minute, free the state store's read slots of processes that died."""
        while self.store is not None:
            await trio.sleep(STALE_READER_CHECK_S)
            try:
                await trio.to_thread.run_sync(self.store.clear_stale_readers)
            except Exception as exc:  # lmdb.Error: it must never stop the daemon
                log.warning("checking the state store's read slots failed: %s", exc)

    def _status_line(self) -> str:
        if self.service is None:
            return "starting"
        counts = self._counts()
        return f"{counts['alive'] + 1} alive, {counts['suspect']} suspect, {counts['dead']} dead"

    # --- API ----------------------------------------------------------------------------

    async def _serve_api(
        self, *, task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED
    ) -> None:
        c = self.config
        try:
            claim_socket_path(c.api.socket)
        except Exception as exc:
            raise StartupError(str(exc)) from exc
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(str(c.api.socket))
        os.chmod(c.api.socket, c.api.socket_mode)
        sock.listen(128)
        sock.setblocking(False)
        self.api_socket = c.api.socket
        hconfig = hypercorn.config.Config()
        hconfig.bind = [f"fd://{sock.fileno()}"]
        if c.api.tcp is not None:
            hconfig.bind.append(str(c.api.tcp))
        hconfig.accesslog = None
        hconfig.errorlog = logging.getLogger("nodenet.api")
        if _not_hypercorn_banner not in hconfig.errorlog.filters:
            hconfig.errorlog.addFilter(_not_hypercorn_banner)
        hconfig.graceful_timeout = 2.0
        hconfig.keep_alive_timeout = 30.0
        app = wrap(create_app(self), lambda: self.tokens)
        log.info(
            "API on %s (mode %04o)%s",
            c.api.socket,
            c.api.socket_mode,
            f" and http://{c.api.tcp} (tokens)" if c.api.tcp is not None else "",
        )
        try:
            await hypercorn.trio.serve(
                app,  # type: ignore[arg-type]
                hconfig,
                shutdown_trigger=self._api_closed.wait,
                task_status=task_status,
            )
        finally:
            sock.detach()  # hypercorn owns and has closed the descriptor
            c.api.socket.unlink(missing_ok=True)

    def _counts(self) -> dict[str, int]:
        assert self.service is not None
        counts = {s.value: 0 for s in MemberStatus}
        for member in self.service.core.members():
            counts[member.status.value] += 1
        return counts

    def self_info(self) -> dict[str, Any]:
        """`GET /v1/self`."""
        assert self.service is not None
        core, ring = self.service.core, self.service.codec.keyring
        now = self.clock.now()
        me = core.self_info(now)
        return {
            "id": me.node.text,
            "short_id": me.node.short,
            "name": self.config.name,
            "address": str(me.address),
            "status": me.status.value,
            "incarnation": me.incarnation,
            "tags": dict(me.tags),
            "awareness": core.awareness,
            "version": version("nodenetd"),
            "protocol": f"{PROTOCOL_MAJOR}.{PROTOCOL_MINOR}",
            "uptime_s": round(now - self._started_mono, 3),
            "members": self._counts(),
            "keyring": {"primary": ring.primary.key_id, "keys": len(ring.keys)},
        }

    def peers(self) -> list[dict[str, Any]]:
        """Every member and ourselves."""
        assert self.service is not None
        core = self.service.core
        now = self.clock.now()
        infos = [core.self_info(now), *core.members()]
        shorts = short_ids(i.node for i in infos)
        return [
            member_json(info, now=now, short_id=shorts[info.node], is_self=index == 0)
            for index, info in enumerate(infos)
        ]

    async def join(self, addresses: list[str]) -> list[dict[str, Any]]:
        """Push-pull with each address."""
        assert self.service is not None
        parsed = []
        for text in addresses:
            try:
                parsed.append(parse_address(text))
            except ValueError as exc:
                raise ApiError(400, "bad_request", str(exc)) from None
        failures = await self.service.join(parsed)
        if self.replication is not None and not all(failures):
            self.replication.joined()
        return [
            {"address": str(a), "ok": not f, **({"error": f} if f else {})}
            for a, f in zip(parsed, failures, strict=True)
        ]

    async def leave(self) -> None:
        """Spread our LEAVE, then shut down."""
        assert self.service is not None
        if self._stopping:
            raise ApiError(409, "conflict", "already leaving")
        self.request_shutdown()

    def _tags_with_changes(self, config_tags: Tags) -> Tags:
        """The config's tags with the runtime changes (`nodenet tags`) over them; the
        config's alone if together they no longer make valid tags (an edited config)."""
        tags = dict(config_tags)
        for key, value in self._tag_changes.items():
            if value is None:
                tags.pop(key, None)
            else:
                tags[key] = value
        try:
            return make_tags(tags)
        except LocalProtocolError as exc:
            log.warning(
                "tags changed at runtime no longer fit with the config's (%s); using"
                " the config's tags",
                exc,
            )
            return config_tags

    async def update_tags(self, set_tags: dict[str, str], delete: list[str]) -> dict[str, str]:
        """Apply tag changes and record them, so that they outlive a restart."""
        assert self.service is not None
        assert self.store is not None
        if "name" in delete or "name" in set_tags:
            raise ApiError(
                400, "bad_request", "the name tag follows node.name: change it in the config"
            )
        tags = dict(self.service.core.self_info(self.clock.now()).tags)
        for key in delete:
            tags.pop(key, None)
        tags.update(set_tags)
        try:
            make_tags(tags)
            self.service.set_tags(tags)
        except LocalProtocolError as exc:
            status = 409 if "leaving" in str(exc) else 400
            raise ApiError(
                status, "conflict" if status == 409 else "bad_request", str(exc)
            ) from None
        base = dict(self.config.tags)
        changes: dict[str, str | None] = {k: v for k, v in tags.items() if base.get(k) != v}
        changes.update({k: None for k in base if k not in tags})
        try:
            await self.store.save_tag_changes(changes)
        except StateError as exc:
            raise ApiError(
                503, "unavailable", f"tags changed but not saved (lost at restart): {exc}"
            ) from None
        self._tag_changes = changes
        return tags

    def keys(self) -> dict[str, Any]:
        """The keyring by key id."""
        assert self.service is not None
        ring = self.service.codec.keyring
        return {
            "primary": ring.primary.key_id,
            "keys": [{"id": k.key_id, "primary": k == ring.primary} for k in ring.keys],
        }

    def _find_key(self, key_id: str) -> ClusterKey:
        assert self.service is not None
        for key in self.service.codec.keyring.keys:
            if key.key_id == key_id:
                return key
        raise ApiError(
            404,
            "not_found",
            f"no installed cluster key has id {key_id!r} (see `nodenet keys list`, GET /v1/keys)",
        )

    async def _change_keyring(
        self, change: Callable[[Keyring], Keyring | None], what: str
    ) -> dict[str, Any]:
        """Apply `change` to the current keyring (None: nothing to do), write it, use it.

        One change at a time: two concurrent changes would each start from the same ring,
        and the later write would undo the earlier one (both acknowledged)."""
        assert self.service is not None
        async with self._keyring_lock:
            ring = change(self.service.codec.keyring)
            if ring is None:
                return self.keys()
            try:
                await trio.to_thread.run_sync(write_keyring, self.config.keyring_file, ring)
            except OSError as exc:
                raise ApiError(
                    507 if exc.errno in (errno.ENOSPC, errno.EDQUOT) else 503,
                    "insufficient_storage"
                    if exc.errno in (errno.ENOSPC, errno.EDQUOT)
                    else "unavailable",
                    f"cannot write the keyring {self.config.keyring_file}: {exc.strerror};"
                    " it is unchanged",
                ) from None
            self.service.codec.keyring = ring
            log.info("keyring: %s", what)
            return self.keys()

    async def install_key(self, key: str) -> dict[str, Any]:
        """Install a key."""
        try:
            new = ClusterKey.from_text(key)
        except LocalProtocolError as exc:
            raise ApiError(400, "bad_request", str(exc)) from None
        return await self._change_keyring(
            lambda ring: None if new in ring.keys else ring.install(new),
            f"installed key {new.key_id}",
        )

    async def use_key(self, key_id: str) -> dict[str, Any]:
        """Make a key primary."""
        key = self._find_key(key_id)

        def use(ring: Keyring) -> Keyring:
            try:
                return ring.use(key)
            except LocalProtocolError as exc:  # removed meanwhile
                raise ApiError(409, "conflict", str(exc)) from None

        return await self._change_keyring(use, f"primary is now {key_id}")

    async def remove_key(self, key_id: str) -> dict[str, Any]:
        """Remove a secondary key."""
        key = self._find_key(key_id)

        def remove(ring: Keyring) -> Keyring:
            try:
                return ring.remove(key)
            except LocalProtocolError as exc:
                raise ApiError(409, "conflict", str(exc)) from None

        return await self._change_keyring(remove, f"removed key {key_id}")

    def health(self) -> tuple[bool, dict[str, str]]:
        """Readiness checks."""
        checks = {
            "membership": "ok" if self.service is not None and not self._stopping else "stopping",
            "state": "ok" if self.store is not None and not self._store_failed else "failing",
            "store": "ok" if self.replication is not None and not self._stopping else "stopping",
        }
        return all(v == "ok" for v in checks.values()), checks

    def metrics_text(self) -> bytes:
        """Prometheus text."""
        return self.metrics.render()

    # --- the store ------------------------------------------------------------------------

    def _on_entries(self, entries: list[SignedEntry], origin: str) -> None:
        for entry in entries:
            self.hub.publish(
                "entry", functools.partial(_entry_event, entry, origin), size=len(entry.value)
            )
        self.handlers.dispatch(entries, origin)

    def _replication(self) -> StoreService:
        if self.replication is None or self._stopping:
            raise ApiError(503, "unavailable", "the store is not serving (starting or stopping)")
        return self.replication

    async def put_entries(self, writes: Sequence[EntryWrite]) -> list[dict[str, Any]]:
        """Write entries (ours, or pre-signed) atomically; answers once durably committed.

        Every entry is checked first; one bad entry refuses the whole batch, naming it."""
        replication = self._replication()
        entries: list[SignedEntry] = []
        signed = [w.signed for w in writes if w.signed is not None]
        checked = iter(await trio.to_thread.run_sync(_check_all, replication, signed))
        for index, write in enumerate(writes):
            where = f"entries[{index}]: " if len(writes) > 1 else ""
            if write.signed is not None:
                outcome = next(checked)
                if isinstance(outcome, RemoteProtocolError):
                    status = 413 if outcome.reason == "too_large" else 400
                    raise ApiError(status, outcome.reason, where + str(outcome))
                entries.append(outcome)
                continue
            try:
                entries.append(replication.sign(write.key, write.value, tombstone=write.tombstone))
            except ValueTooLarge as exc:
                raise ApiError(413, "too_large", where + str(exc)) from None
            except LocalProtocolError as exc:
                raise ApiError(400, "bad_request", where + str(exc)) from None
        try:
            outcomes = await replication.submit(entries)
        except StateError as exc:
            raise ApiError(507, "insufficient_storage", str(exc)) from None
        return [
            {**entry_json(e, with_value=False), "outcome": o}
            for e, o in zip(entries, outcomes, strict=True)
        ]

    async def get_entry(self, key: str) -> dict[str, Any] | None:
        """The head of `key` (None if absent or deleted)."""
        replication = self._replication()
        try:
            check_key(key)
        except LocalProtocolError as exc:
            raise ApiError(400, "bad_request", str(exc)) from None
        try:
            encoded = await trio.to_thread.run_sync(replication.store.head_sync, key)
        except DamagedEntries as exc:
            await self._repair(exc.keys)
            raise ApiError(
                503,
                "unavailable",
                f"the stored entry for key {key!r} was damaged on disk; it was dropped and is"
                " fetched again from a peer by anti-entropy: retry shortly",
            ) from None
        if encoded is None:
            return None
        entry = self._decode_stored(encoded)
        return None if entry.tombstone else entry_json(entry)

    async def list_entries(self, prefix: str, after: str | None, limit: int) -> dict[str, Any]:
        """Live heads under `prefix` in key order, and the key to continue `after`."""
        replication = self._replication()
        blobs, damaged = await trio.to_thread.run_sync(
            replication.store.list_sync, prefix, after, limit + 1
        )
        if damaged:
            await self._repair(damaged)
        more = len(blobs) > limit
        entries = [self._decode_stored(b) for b in blobs[:limit]]
        return {
            "entries": [entry_json(e) for e in entries if not e.tombstone],
            "next": entries[-1].key if more else None,
        }

    async def _repair(self, keys: list[str]) -> None:
        """Drop stored heads whose bytes no longer hash to their id (see StoreService)."""
        await self._replication().forget_damaged(keys=keys)

    async def store_summary(self) -> dict[str, Any]:
        """Entry count and a digest of every head (equal on replicas in sync)."""
        replication = self._replication()
        digest = await trio.to_thread.run_sync(replication.store.digest_sync)
        return {"entries": replication.store.count, "digest": digest.hex()}

    def _decode_stored(self, encoded: bytes) -> SignedEntry:
        # What the store holds was verified on the way in; re-checking the signature on
        # every read would cost an Ed25519 verify per entry listed.
        return decode_entry(
            encoded, now_ms=2**47, max_value=MAX_VALUE_LIMIT, verify=lambda *_: True
        )

    # --- events ---------------------------------------------------------------------------

    def _on_events(self, events: list[MemberEvent]) -> None:
        assert self.service is not None
        core = self.service.core
        self.metrics.observe_events(events)
        if self.notifier.enabled and (line := self._status_line()) != self._status_sent:
            self._status_sent = line  # `systemctl status` shows the cluster as it is now
            self.notifier.status(line)
        if self.replication is not None:
            self.replication.membership_events(events)
        now = self.clock.now()
        states = {s.alive.node: s for s in core.states()}
        for event in events:
            node = event.member.node
            is_self = node == core.node_id
            self.hub.publish(
                "member",
                {
                    "kind": event.kind.value,
                    "member": member_json(
                        event.member, now=now, short_id=node.short, is_self=is_self
                    ),
                    "at": _rfc3339(self._started_wall + (event.at - self._started_mono)),
                },
            )
            log.info("%s %s (%s)", event.kind.value, event.member.name, event.member.address)
            if self.store is None or is_self:
                continue
            if event.kind is EventKind.REAPED:
                self._save([Delete("members", node)])
            elif node in states:
                self._save([Put("members", node, member_blob(states[node]))])
        if core.incarnation != self._saved_incarnation:
            self._saved_incarnation = core.incarnation
            self._save([Put("meta", META_INCARNATION, msgpack.packb(core.incarnation))])

    def _save(self, ops: list[Put | Delete]) -> None:
        """Queue a membership change for the store; never let the store stop the daemon."""
        if self.store is None:
            return
        try:
            self.store.write_nowait(ops)
            self._store_failed = False
        except trio.WouldBlock:
            log.warning("state store queue is full; a membership change was not persisted")
        except StateError as exc:
            self._store_failed = True
            log.error("cannot persist membership change: %s", exc)


def _not_hypercorn_banner(record: logging.LogRecord) -> bool:
    # "Running on http://… (CTRL + C to quit)": a terminal program's banner, wrong under
    # systemd; the daemon logs its own line saying where the API listens.
    return not str(record.msg).startswith("Running on ")


def _rfc3339(timestamp: float) -> str:
    return (
        time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(timestamp))
        + f".{int(timestamp % 1 * 1000):03d}Z"
    )
