"""Fuzzing the decoders: whatever arrives, decoding succeeds or raises RemoteProtocolError.

Five generators, each aimed at a deeper layer of the decoder (seal → msgpack → envelope →
message fields → claim fields). Layers behind the seal or a signature are reached by
sealing and signing the mutated bytes with the test keys, as a hostile cluster member
could. CI runs `NODENET_FUZZ_ITERATIONS` (default 200,000) inputs in total; `make soak`
runs ten times more. The seed is printed, and `NODENET_FUZZ_SEED` replays a run.
"""

from __future__ import annotations

import collections
import os
import random
import time
from collections.abc import Callable, Iterator
from typing import Any

import msgpack
from support.strategies import KEYS
from support.wire import ALICE, BOB, NOW_MS, codec, seal_plaintext

from nodenet.protocol.errors import RemoteProtocolError
from nodenet.protocol.identity import CLAIM_CONTEXT, ENVELOPE_CONTEXT, node_id_of, sign
from nodenet.protocol.messages import (
    Ack,
    Address,
    Alive,
    Dead,
    Entry,
    EntryAnnounce,
    Error,
    Leave,
    MemberState,
    Message,
    Ping,
    PingReq,
    PushPull,
    Suspect,
    Sync,
    encode_message,
)
from nodenet.protocol.wire import FrameReader

ITERATIONS = int(os.environ.get("NODENET_FUZZ_ITERATIONS", "200000"))
SEED = int(os.environ.get("NODENET_FUZZ_SEED", str(time.time_ns() % 2**32)))
BOB_ID = node_id_of(BOB)
KEY_BY_ID = {node_id_of(k): k for k in [*KEYS, ALICE, BOB]}


def _seed_messages() -> list[Message]:
    alive = Alive.create(
        ALICE, incarnation=5, address=Address("192.0.2.1", 7950), tags={"role": "db", "dc": "x"}
    )
    return [
        Ping(seq=1, target=BOB_ID),
        PingReq(seq=2, target=BOB_ID, address=Address("::1", 7950), nack=True),
        Ack(seq=3),
        alive,
        Suspect.create(BOB, node=alive.node, incarnation=5),
        Dead.create(BOB, node=alive.node, incarnation=5),
        Leave.create(ALICE, incarnation=6),
        PushPull(
            join=False,
            members=(MemberState(alive, Suspect.create(BOB, node=alive.node, incarnation=5)),),
        ),
        Entry(entry=b"entry bytes"),
        EntryAnnounce(ids=(b"\x01" * 32, b"\x02" * 32)),
        Sync(payload=b"\x00\x01"),
        Error(code="busy", message="try later"),
    ]


SEEDS = [msgpack.unpackb(encode_message(m), use_list=True) for m in _seed_messages()]


def _random_value(rng: random.Random, depth: int = 0) -> Any:
    choice = rng.randrange(9 if depth < 3 else 6)
    if choice == 0:
        return rng.choice([0, 1, -1, 2**32, 2**64 - 1, -(2**63), rng.randrange(-(2**63), 2**64)])
    if choice == 1:
        return rng.randbytes(rng.choice([0, 1, 4, 16, 31, 32, 33, 64, rng.randrange(200)]))
    if choice == 2:
        return "".join(chr(rng.randrange(32, 0x2FFF)) for _ in range(rng.randrange(12)))
    if choice == 3:
        return rng.choice([True, False, None])
    if choice == 4:
        return rng.random() * 1e6
    if choice == 5:
        return msgpack.ExtType(rng.randrange(-128, 128), rng.randbytes(rng.randrange(8)))
    if choice == 6:
        return [_random_value(rng, depth + 1) for _ in range(rng.randrange(6))]
    if choice == 7:
        # str, bin and (invalid) int keys, mixed: the decoder must reject, never crash.
        return {
            rng.choice([f"k{i}", f"k{i}".encode(), i, ""]): _random_value(rng, depth + 1)
            for i in range(rng.randrange(4))
        }
    return rng.choice(SEEDS)


def _mutate_tree(value: Any, rng: random.Random) -> Any:
    """Replace, drop, add or recurse into one part of a decoded msgpack tree."""
    if isinstance(value, list) and value:
        value = list(value)
        i = rng.randrange(len(value))
        action = rng.randrange(5)
        if action == 0:
            value[i] = _random_value(rng)
        elif action == 1:
            del value[i]
        elif action == 2:
            value.insert(i, _random_value(rng))
        elif (
            action == 3
            and isinstance(value[i], bytes)
            and value[i][:1] in (b"\x93", b"\x94", b"\x95")
        ):
            value[i] = _mutate_claim(value[i], rng)
        else:
            value[i] = _mutate_tree(value[i], rng)
        return value
    if isinstance(value, dict):
        value = dict(value)
        if value and rng.random() < 0.5:
            value[rng.choice(list(value))] = _random_value(rng)
        else:
            value[rng.choice(["x", b"x", 1])] = rng.choice(["v", b"v", 1])
        return value
    return _random_value(rng)


def _mutate_claim(claim: bytes, rng: random.Random) -> bytes:
    try:
        tree = msgpack.unpackb(claim, use_list=True)
    except Exception:
        return _mutate_bytes(claim, rng)
    return msgpack.packb(_mutate_tree(tree, rng), use_bin_type=True)


def _mutate_bytes(data: bytes, rng: random.Random) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randrange(1, 4)):
        action = rng.randrange(4)
        if action == 0 and buf:
            buf[rng.randrange(len(buf))] ^= 1 << rng.randrange(8)
        elif action == 1 and buf:
            del buf[rng.randrange(len(buf)) :]
        elif action == 2:
            at = rng.randrange(len(buf) + 1)
            buf[at:at] = rng.randbytes(rng.randrange(1, 9))
        elif buf:
            buf[rng.randrange(len(buf))] = rng.choice(
                [0x00, 0x7F, 0x80, 0xC1, 0xD9, 0xDC, 0xDD, 0xFF]
            )
    return bytes(buf)


def _resign_claims(tree: Any) -> Any:
    """Sign claims whose author we hold a key for, so mutations get past claim signatures."""
    if isinstance(tree, list):
        if len(tree) >= 3 and tree[0] in (5, 6, 7, 8) and isinstance(tree[1], bytes):
            try:
                inner = msgpack.unpackb(tree[1], use_list=True)
                author = inner[3] if inner[0] in (6, 7) else inner[1]
                key = KEY_BY_ID.get(author)
            except Exception:
                key = None
            if key is not None:
                tree = [tree[0], tree[1], sign(key, CLAIM_CONTEXT, tree[1]), *tree[3:]]
        return [_resign_claims(item) for item in tree]
    return tree


def _envelope_body(messages: Any, rng: random.Random) -> bytes:
    header: list[Any] = [1, 0, node_id_of(ALICE), NOW_MS, messages]
    if rng.random() < 0.1:
        header = _mutate_tree(header, rng)
    return msgpack.packb(header, use_bin_type=True)


def _signed(body: bytes) -> bytes:
    return body + sign(ALICE, ENVELOPE_CONTEXT, body)


# --- the five generators ----------------------------------------------------------------


def gen_random_bytes(rng: random.Random) -> bytes:
    return rng.randbytes(rng.choice([0, 1, 40, 41, 42, 100, 1400, 1401, rng.randrange(1500)]))


def gen_mutated_datagram(rng: random.Random) -> bytes:
    messages = [rng.choice(_SEED_OBJECTS) for _ in range(rng.randrange(1, 4))]
    (datagram, *_) = _SENDER.encode_datagrams(messages, NOW_MS)
    return _mutate_bytes(datagram, rng)


def gen_sealed_garbage(rng: random.Random) -> bytes:
    if rng.random() < 0.5:
        return seal_plaintext(rng.randbytes(rng.randrange(200)))
    body = msgpack.packb([_random_value(rng) for _ in range(rng.randrange(7))], use_bin_type=True)
    return seal_plaintext(_mutate_bytes(body, rng) + rng.randbytes(64))


def gen_signed_mutated_bytes(rng: random.Random) -> bytes:
    messages = [rng.choice(SEEDS) for _ in range(rng.randrange(1, 4))]
    body = _mutate_bytes(
        msgpack.packb([1, 0, node_id_of(ALICE), NOW_MS, messages], use_bin_type=True), rng
    )
    return seal_plaintext(_signed(body))


def gen_signed_mutated_tree(rng: random.Random) -> bytes:
    messages = [rng.choice(SEEDS) for _ in range(rng.randrange(1, 4))]
    for _ in range(rng.randrange(1, 3)):
        messages = _mutate_tree(messages, rng)
    return seal_plaintext(_signed(_envelope_body(_resign_claims(messages), rng)))


_SEED_OBJECTS = _seed_messages()
_SENDER = codec(ALICE)
GENERATORS: list[Callable[[random.Random], bytes]] = [
    gen_random_bytes,
    gen_mutated_datagram,
    gen_sealed_garbage,
    gen_signed_mutated_bytes,
    gen_signed_mutated_tree,
]


def _inputs(rng: random.Random, count: int) -> Iterator[tuple[str, bytes]]:
    for i in range(count):
        generator = GENERATORS[i % len(GENERATORS)]
        try:
            yield generator.__name__, generator(rng)
        except (ValueError, TypeError, OverflowError):
            # msgpack could not encode the mutated tree (e.g. an int beyond 64 bits);
            # the decoder still gets a look at random bytes instead.
            yield generator.__name__, rng.randbytes(64)


def test_given_fuzzed_datagrams_and_frames_when_decoded_then_only_remote_protocol_errors():
    rng = random.Random(SEED)
    print(f"\nfuzz seed {SEED} (replay with NODENET_FUZZ_SEED={SEED}), {ITERATIONS} inputs")
    receiver = codec(BOB, max_datagram_size=65507)
    outcomes: collections.Counter[tuple[str, str]] = collections.Counter()
    started = time.perf_counter()
    for i, (name, data) in enumerate(_inputs(rng, ITERATIONS)):
        as_frame = i % 7 == 0
        try:
            if as_frame:
                # Frames: random length headers and chunking go through the FrameReader.
                reader = FrameReader(receiver.limits.max_frame_size)
                length = len(data) if rng.random() < 0.9 else rng.randrange(2**32)
                stream = length.to_bytes(4, "big") + data
                cut = rng.randrange(len(stream) + 1)
                reader.feed(stream[:cut])
                frame = reader.next_frame()
                if frame is None:
                    reader.feed(stream[cut:])
                    frame = reader.next_frame()
                if frame is not None:
                    receiver.decode_frame(frame, NOW_MS)
            else:
                receiver.decode_datagram(data, NOW_MS)
            outcomes[name, "decoded"] += 1
        except RemoteProtocolError as exc:
            outcomes[name, type(exc).__name__] += 1
        except Exception as exc:  # the property under test: nothing else may escape
            raise AssertionError(
                f"{name} input #{i} (seed {SEED}) raised {type(exc).__name__}: {exc}\n"
                f"input: {data.hex()}"
            ) from exc
    elapsed = time.perf_counter() - started
    print(f"{ITERATIONS} inputs in {elapsed:.1f} s ({ITERATIONS / elapsed:,.0f}/s)")
    for (name, outcome), count in sorted(outcomes.items()):
        print(f"  {name:<26} {outcome:<20} {count:>8}")
    assert sum(outcomes.values()) == ITERATIONS
    # The generators must reach the deep layers, or the fuzz proves little.
    reached = {outcome for (_, outcome), _ in outcomes.items()}
    assert {"decoded", "Undecryptable", "MalformedMessage", "BadSignature"} <= reached
