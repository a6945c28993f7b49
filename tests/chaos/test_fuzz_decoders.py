"""Fuzzing the decoders that tests/protocol does not already fuzz, for a time budget each
(2 s in CI, 2 minutes in soak): store entries, the key file and keyring file parsers, the
config loader, stored member records, and reconciliation messages answered from a real
LMDB store (the protocol tests fuzz the wire decoder, tests/protocol/test_fuzz.py, and
reconciliation against an in-memory set, tests/protocol/test_reconcile.py; `make soak`
runs those longer through NODENET_FUZZ_ITERATIONS).

Each fuzzer mutates valid inputs (bytes and, where it helps, decoded structure re-signed so
the mutation reaches the checks after the signature) and asserts that the decoder either
accepts the input or raises its documented error type, nothing else. The seed is printed;
`NODENET_FUZZ_SEED` replays a run.
"""

from __future__ import annotations

import collections
import os
import random
import time
from collections.abc import Callable
from pathlib import Path

import msgpack
import nacl.signing
import pytest
import trio
from chaos.harness import figure, scaled
from chaos.hostile import mutate_tree

from nodenet.daemon.config import ConfigError, load_config
from nodenet.daemon.daemon import member_blob, member_from_blob
from nodenet.protocol.entries import create_entry, decode_entry, entry_id
from nodenet.protocol.errors import LocalProtocolError, RemoteProtocolError
from nodenet.protocol.identity import ENTRY_CONTEXT, format_key_file, parse_key_file, sign, verify
from nodenet.protocol.keyring import ClusterKey, Keyring
from nodenet.protocol.messages import Address, Alive, Dead, Leave, MemberState, Suspect

BUDGET_S = scaled(2.0, 120.0)
SEED = int(os.environ.get("NODENET_FUZZ_SEED", str(time.time_ns() % 2**32)))
KEY = nacl.signing.SigningKey(b"\x07" * 32)
NOW_MS = 1_764_000_000_000


def fuzz(
    name: str,
    generate: Callable[[random.Random], object],
    check: Callable[[object], str],
) -> collections.Counter[str]:
    """Run `check(generate(rng))` until the budget is spent; outcomes by name."""
    rng = random.Random(SEED)
    outcomes: collections.Counter[str] = collections.Counter()
    deadline = time.monotonic() + BUDGET_S
    count = 0
    while time.monotonic() < deadline:
        data = generate(rng)
        try:
            outcomes[check(data)] += 1
        except Exception as exc:
            raise AssertionError(
                f"{name}: input #{count} (seed {SEED}; NODENET_FUZZ_SEED={SEED} replays it)"
                f" raised {type(exc).__name__}: {exc}\ninput: {data!r:.2000}"
            ) from exc
        count += 1
    figure(f"fuzz {name}: {count} inputs in {BUDGET_S:.0f} s (seed {SEED}): {dict(outcomes)}")
    return outcomes


def mutate_bytes(rng: random.Random, data: bytes) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.choice([1, 1, 2, 3, 6])):
        action = rng.randrange(6)
        at = rng.randrange(len(buf) + 1)
        if action == 0 and buf:
            buf[at % len(buf)] ^= 1 << rng.randrange(8)
        elif action == 1 and buf:
            buf[at % len(buf)] = rng.choice(
                [
                    0x00,
                    0x7F,
                    0x80,
                    0xC1,
                    0xD9,
                    0xDC,
                    0xFF,
                    0x0A,
                    0x23,
                    0x3D,
                    0x5B,
                    0x22,
                    rng.randrange(256),
                ]
            )
        elif action == 2:
            buf[at:at] = rng.randbytes(rng.randrange(1, 12))
        elif action == 3:
            del buf[at : at + rng.randrange(1, 20)]
        elif action == 4:
            buf[at:at] = rng.choice(["é".encode(), "\u2028".encode(), b"\xff\xfe", "𝄞".encode()])
        else:
            end = min(len(buf), at + rng.randrange(1, 40))
            buf[at:at] = buf[at:end]
    return bytes(buf)


def _entries() -> list[bytes]:
    return [
        create_entry(KEY, "config/web", b"replicas=3", (NOW_MS << 16) | 1).encoded,
        create_entry(KEY, "k", b"", (NOW_MS << 16) | 2, tombstone=True).encoded,
        create_entry(KEY, "é/" + "x" * 250, bytes(range(256)) * 4, NOW_MS << 16).encoded,
    ]


def _entry_input(rng: random.Random) -> bytes:
    encoded = rng.choice(_ENTRIES)
    if rng.random() < 0.5:
        return mutate_bytes(rng, encoded)
    body, _ = msgpack.unpackb(encoded)
    fields = msgpack.unpackb(body, raw=False)
    fields = mutate_tree(rng, fields)
    try:
        body = msgpack.packb(fields, use_bin_type=True)
    except (ValueError, TypeError, OverflowError):
        return rng.randbytes(40)
    # Re-signed by the author: the mutation reaches the checks after the signature.
    return msgpack.packb([body, sign(KEY, ENTRY_CONTEXT, body)], use_bin_type=True)


_ENTRIES = _entries()


def _check_entry(data: object) -> str:
    assert isinstance(data, bytes)
    try:
        entry = decode_entry(data, now_ms=NOW_MS, max_value=65536, verify=verify)
    except RemoteProtocolError as exc:
        return exc.reason
    assert entry.encoded == data
    assert entry.id == entry_id(data)
    return "decoded"


def test_fuzz_store_entries_decode_or_raise_remote_protocol_errors():
    outcomes = fuzz("store entries", _entry_input, _check_entry)
    assert outcomes["decoded"] > 0
    assert len(outcomes) > 2


# --- key file and keyring file ----------------------------------------------------------------


def _check_key_file(data: object) -> str:
    assert isinstance(data, bytes)
    try:
        parse_key_file(data, "node.key")
    except LocalProtocolError:
        return "refused"
    return "parsed"


def test_fuzz_key_file_parser_refuses_with_its_own_error():
    valid = format_key_file(KEY)
    fuzz("key file", lambda rng: mutate_bytes(rng, valid), _check_key_file)


def _keyring_text(rng: random.Random) -> object:
    ring = Keyring([ClusterKey(bytes([i]) * 32) for i in range(1, 4)])
    return mutate_bytes(rng, ring.to_text().encode()).decode("utf-8", errors="replace")


def _check_keyring(text: object) -> str:
    assert isinstance(text, str)
    try:
        Keyring.from_text(text, "keyring")
    except LocalProtocolError:
        return "refused"
    return "parsed"


def test_fuzz_keyring_file_parser_refuses_with_its_own_error():
    fuzz("keyring file", _keyring_text, _check_keyring)


# --- the config loader ------------------------------------------------------------------------

CONFIG = """
[node]
name = "web-1"
state_dir = "/tmp/nn-fuzz-state"
tags = { role = "web", dc = "x" }

[network]
bind = "127.0.0.1"
port = 7950
seeds = ["127.0.0.2:7950", "[::1]:7951"]

[cluster]
profile = "lan"
max_clock_skew_s = 300

[membership]
probe_interval_s = 1.0
gossip_nodes = 3

[api]
socket = "/tmp/nn-fuzz-state/api.sock"
socket_mode = "0660"
tcp = "127.0.0.1:7951"

[store]
max_value = 65536
sync_interval_s = 10
piggyback_max_bytes = 1000

[log]
level = "info"

[daemon]
shutdown_timeout_s = 15
leave_timeout_s = 5

[[handlers]]
prefix = "config/"
command = ["/bin/true"]
timeout_s = 30
"""


def test_fuzz_config_loader_refuses_with_config_errors(tmp_path: Path):
    path = tmp_path / "nodenet.toml"

    def check(text: object) -> str:
        assert isinstance(text, bytes)
        path.write_bytes(text)
        try:
            load_config(path, environ={}, euid=1000)
        except ConfigError:
            return "refused"
        return "loaded"

    outcomes = fuzz("config file", lambda rng: mutate_bytes(rng, CONFIG.encode()), check)
    assert outcomes["loaded"] > 0


# --- stored member records --------------------------------------------------------------------


def _member_blobs() -> list[bytes]:
    other = nacl.signing.SigningKey(b"\x08" * 32)
    alive = Alive.create(KEY, incarnation=4, address=Address("127.0.0.1", 7950), tags={"a": "b"})
    return [
        member_blob(MemberState(alive)),
        member_blob(MemberState(alive, Suspect.create(other, node=alive.node, incarnation=4))),
        member_blob(MemberState(alive, Dead.create(other, node=alive.node, incarnation=5))),
        member_blob(MemberState(alive, Leave.create(KEY, incarnation=6))),
    ]


def test_fuzz_stored_member_records_are_read_or_ignored():
    blobs = _member_blobs()

    def check(blob: object) -> str:
        assert isinstance(blob, bytes)
        return "read" if member_from_blob(blob, verify) is not None else "ignored"

    fuzz("member records", lambda rng: mutate_bytes(rng, rng.choice(blobs)), check)


# --- reconciliation answered from LMDB ------------------------------------------------------


def test_fuzz_reconciliation_payloads_against_a_real_lmdb_store(tmp_path: Path):
    from nodenet.daemon.state import StateStore
    from nodenet.daemon.store import EntryStore, LmdbItemSource
    from nodenet.protocol.reconcile import MIN_FRAME_LIMIT, MemoryItemSource, Reconciler

    state = StateStore.open(tmp_path / "state")
    try:
        store = EntryStore(state)
        entries = [
            create_entry(KEY, f"key/{i}", b"v", ((NOW_MS + i * 7) << 16) | (i % 3))
            for i in range(600)
        ]
        trio.run(lambda: store.ingest(entries, now_ms=NOW_MS))
        peer = MemoryItemSource((e.hlc, e.id) for e in entries[::2])
        corpus = []
        for _ in range(5):  # real messages of real sessions, as mutation seeds
            ours, theirs = Reconciler(peer), Reconciler(MemoryItemSource())
            message: bytes | None = ours.initiate()
            while message is not None:
                corpus.append(message)
                message = theirs.receive(message)
                if message is None:
                    break
                corpus.append(message)
                message = ours.receive(message)

        def check(payload: object) -> str:
            assert isinstance(payload, bytes)
            source = LmdbItemSource()
            reconciler = Reconciler(source, frame_limit=MIN_FRAME_LIMIT)
            with state.reader() as (txn, dbs):
                source.bind(txn, dbs)
                try:
                    reply = reconciler.receive(payload)
                except RemoteProtocolError as exc:
                    return exc.reason
            assert reply is None or len(reply) <= MIN_FRAME_LIMIT
            return "answered"

        outcomes = fuzz(
            "reconciliation (LMDB)", lambda rng: mutate_bytes(rng, rng.choice(corpus)), check
        )
        assert outcomes["answered"] > 0
    finally:
        state.close()


@pytest.fixture(autouse=True)
def _seed_banner() -> None:
    print(f"\nfuzz seed {SEED} (NODENET_FUZZ_SEED={SEED} replays it)")
