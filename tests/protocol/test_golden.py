"""Golden byte vectors of the wire format, checked against `docs/protocol.md`.

The fixed inputs below are the only copy: every ```golden block in the doc is generated from
them. The tests check the doc three ways:

1. rebuild every vector with `nodenet.protocol` and compare it with the doc byte for byte;
2. decode every sealed vector *from the doc's hex* with `WireCodec` and compare the messages;
3. re-derive every vector with bare PyNaCl, hashlib and msgpack, following the doc's rules
   as a second implementation would, without any nodenet encoder.

They also check the doc's message-type table against `MessageType`.

After an intentional wire change, `.venv/bin/python tests/protocol/test_golden.py --write`
rewrites the blocks in the doc. Review the diff: a changed vector is a protocol change.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import re
import struct
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import msgpack
import nacl.secret
import nacl.signing
import pytest

from nodenet.protocol.errors import ProtocolError, RemoteProtocolError
from nodenet.protocol.identity import (
    CLAIM_CONTEXT,
    ENVELOPE_CONTEXT,
    SIGNATURE_LEN,
    NodeId,
    format_key_file,
    sign,
)
from nodenet.protocol.keyring import SEAL_OVERHEAD, SEAL_VERSION, ClusterKey, Keyring
from nodenet.protocol.messages import (
    MAX_CLAIM_BYTES,
    MAX_ERROR_TEXT,
    MAX_IDS,
    MAX_OPAQUE_BYTES,
    MAX_PUSH_PULL_MEMBERS,
    MAX_TAG_COUNT,
    MAX_TAGS_BYTES,
    Ack,
    Address,
    Alive,
    Claim,
    Dead,
    Entry,
    EntryAnnounce,
    EntryRequest,
    Error,
    Leave,
    MemberState,
    Message,
    MessageType,
    Nack,
    Ping,
    PingReq,
    PushPull,
    StoreSummary,
    Suspect,
    Sync,
    encode_message,
    unpack,
)
from nodenet.protocol.reconcile import Fingerprint
from nodenet.protocol.wire import PROTOCOL_MAJOR, PROTOCOL_MINOR, FrameReader, WireCodec, WireLimits

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"

# --- the fixed inputs: the one place they are written down ---------------------------------

SEED_A = bytes(range(32))
SEED_B = bytes(range(32, 64))
CLUSTER_KEY = b"\x42" * 32
NOW_MS = 1_700_000_000_000  # 2023-11-14T22:13:20Z; above 2**32, so a uint64 on the wire
ADDRESS_A = ("192.0.2.1", 7950)
ADDRESS_B = ("2001:db8::2", 7950)
TAGS_A = {"role": "web", "name": "node-a"}  # given unsorted: the encoder sorts by key
INCARNATION_A = 1
INCARNATION_B = 2
ENTRY_ID_1 = hashlib.blake2b(b"entry one", digest_size=32).digest()
ENTRY_ID_2 = hashlib.blake2b(b"entry two", digest_size=32).digest()
ENTRY_BYTES = b"opaque signed entry"
SYNC_PAYLOAD = b"\x00\x01\x02\x03"
ERROR_CODE = "busy"
ERROR_TEXT = "too many syncs in progress; retry later"
FUTURE_MINOR = 7
FUTURE_TYPE = 99
FUTURE_TEXTS = ("a message type from a newer minor", "appended", "appended envelope field")
PACKING_PINGS = 40
PACKING_WHAT = "PING seq=1..40 target=b, sender a"


def nonce_of(vector_number: int) -> bytes:
    """The nonce sealing the packet of vector `vector_number`: that byte, 24 times."""
    return bytes([vector_number]) * 24


KEYS = {"a": nacl.signing.SigningKey(SEED_A), "b": nacl.signing.SigningKey(SEED_B)}
ID_A = bytes(KEYS["a"].verify_key)
ID_B = bytes(KEYS["b"].verify_key)
IDS = {"a": ID_A, "b": ID_B}
PEER = {"a": "b", "b": "a"}

Value = bytes | int | str

# --- the vectors, built with nodenet.protocol ----------------------------------------------


@dataclass(frozen=True)
class Vector:
    """One golden block: the fields the doc shows and, if sealed, what must decode from it."""

    fields: dict[str, Value]
    sender: str | None = None
    frame: bool = False
    minor: int = PROTOCOL_MINOR
    messages: tuple[Message, ...] = ()
    skipped: int = 0


def _nonces(first: bytes) -> Callable[[int], bytes]:
    """A nonce source returning `first`, then `first` + 1, + 2, ... (big-endian)."""
    counter = [int.from_bytes(first, "big")]

    def source(size: int) -> bytes:
        value = counter[0]
        counter[0] += 1
        return value.to_bytes(size, "big")

    return source


def _ring(vector_number: int) -> Keyring:
    return Keyring([ClusterKey(CLUSTER_KEY)], nonce_source=_nonces(nonce_of(vector_number)))


def _split(sealed: bytes) -> tuple[bytes, bytes]:
    """Body and signature of a sealed packet, opened with the cluster key."""
    plaintext, _ = Keyring([ClusterKey(CLUSTER_KEY)]).open(sealed)
    return plaintext[:-SIGNATURE_LEN], plaintext[-SIGNATURE_LEN:]


def _claims() -> dict[str, Claim]:
    a = NodeId(ID_A)
    return {
        "alive_a": Alive.create(
            KEYS["a"], incarnation=INCARNATION_A, address=Address(*ADDRESS_A), tags=TAGS_A
        ),
        "alive_b": Alive.create(KEYS["b"], incarnation=INCARNATION_B, address=Address(*ADDRESS_B)),
        "suspect_a_by_b": Suspect.create(KEYS["b"], node=a, incarnation=INCARNATION_A),
        "dead_a_by_b": Dead.create(KEYS["b"], node=a, incarnation=INCARNATION_A),
        "leave_b": Leave.create(KEYS["b"], incarnation=INCARNATION_B),
    }


def _sealed(
    number: int, sender: str, messages: list[Message], shown: dict[str, Claim], *, frame: bool
) -> Vector:
    codec = WireCodec(KEYS[sender], _ring(number))
    fields: dict[str, Value] = {"sender": sender, "now_ms": NOW_MS, "nonce": nonce_of(number)}
    for label, claim in shown.items():
        fields[f"{label}_claim"] = claim.claim
        fields[f"{label}_signature"] = claim.signature
    for i, message in enumerate(messages, 1):
        fields[f"message_{i}"] = encode_message(message)
    if frame:
        (framed,) = codec.encode_frames(messages, NOW_MS)
        sealed = framed[4:]
    else:
        (sealed,) = codec.encode_datagrams(messages, NOW_MS)
    fields["body"], fields["signature"] = _split(sealed)
    fields["sealed"] = sealed
    if frame:
        fields["frame"] = framed
    return Vector(fields, sender=sender, frame=frame, messages=tuple(messages))


def _forward_compat(number: int) -> Vector:
    """Hand-built: what a newer minor version may send, and what this version must accept."""
    body = msgpack.packb(
        [
            PROTOCOL_MAJOR,
            FUTURE_MINOR,
            ID_A,
            NOW_MS,
            [[FUTURE_TYPE, FUTURE_TEXTS[0]], [MessageType.ACK, 7, FUTURE_TEXTS[1]]],
            FUTURE_TEXTS[2],
        ],
        use_bin_type=True,
    )
    signature = sign(KEYS["a"], ENVELOPE_CONTEXT, body)
    sealed = _ring(number).seal(body + signature)
    fields: dict[str, Value] = {
        "sender": "a",
        "now_ms": NOW_MS,
        "nonce": nonce_of(number),
        "body": body,
        "signature": signature,
        "sealed": sealed,
    }
    return Vector(fields, sender="a", minor=FUTURE_MINOR, messages=(Ack(seq=7),), skipped=1)


def _largest_accepted(make: Callable[[int], object], upto: int) -> int:
    """The largest n for which `make(n)` does not raise (assuming a prefix of successes)."""
    n = 0
    while n < upto:
        try:
            make(n + 1)
        except ProtocolError:
            return n
        n += 1
    return n


def _nested(depth: int) -> object:
    return unpack(b"\x91" * (depth - 1) + b"\x90", max_len=depth)


def _constants() -> Vector:
    limits = WireLimits()
    return Vector(
        {
            "seal_version": SEAL_VERSION,
            "seal_overhead": SEAL_OVERHEAD,
            "signature_len": SIGNATURE_LEN,
            "envelope_context": ENVELOPE_CONTEXT,
            "claim_context": CLAIM_CONTEXT,
            "protocol_major": PROTOCOL_MAJOR,
            "protocol_minor": PROTOCOL_MINOR,
            "max_datagram_size": limits.max_datagram_size,
            "max_frame_size": limits.max_frame_size,
            "max_clock_skew_ms": limits.max_clock_skew_ms,
            "max_claim_bytes": MAX_CLAIM_BYTES,
            "max_tags_bytes": MAX_TAGS_BYTES,
            "max_tag_count": MAX_TAG_COUNT,
            "max_ids": MAX_IDS,
            "max_push_pull_members": MAX_PUSH_PULL_MEMBERS,
            "max_opaque_bytes": MAX_OPAQUE_BYTES,
            "max_error_code_bytes": _largest_accepted(
                lambda n: Error(code="x" * n, message=""), 4096
            ),
            "max_error_message_bytes": MAX_ERROR_TEXT,
            "max_nesting_depth": _largest_accepted(_nested, 4096),
        }
    )


def _identities() -> Vector:
    fields: dict[str, Value] = {}
    for who in ("a", "b"):
        key = KEYS[who]
        node = NodeId(IDS[who])
        fields[f"seed_{who}"] = bytes(key)
        fields[f"node_id_{who}"] = bytes(node)
        fields[f"node_id_{who}_text"] = node.text
        fields[f"node_id_{who}_short"] = node.short
        (line,) = (
            x for x in format_key_file(key).decode("ascii").splitlines() if not x.startswith("#")
        )
        fields[f"key_file_{who}_line"] = line
    cluster = ClusterKey(CLUSTER_KEY)
    fields["cluster_key"] = cluster.raw
    fields["cluster_key_text"] = cluster.text
    fields["cluster_key_id"] = cluster.key_id
    return Vector(fields)


def _packing(number: int) -> Vector:
    codec = WireCodec(KEYS["a"], _ring(number))
    pings = [Ping(seq=i, target=NodeId(ID_B)) for i in range(1, PACKING_PINGS + 1)]
    packets = codec.encode_datagrams(pings, NOW_MS)
    receiver = WireCodec(KEYS["b"], Keyring([ClusterKey(CLUSTER_KEY)]))
    counts = [len(receiver.decode_datagram(p, NOW_MS).envelope.messages) for p in packets]
    sixteen = codec.encode_datagrams(pings[:16], NOW_MS)[0]
    size = len(encode_message(pings[0]))
    return Vector(
        {
            "message": PACKING_WHAT,
            "message_size": size,
            "overhead_up_to_15": codec.envelope_overhead(NOW_MS),
            "overhead_16_to_65535": len(sixteen) - 16 * size,
            "datagram_messages": " ".join(map(str, counts)),
            "datagram_sizes": " ".join(str(len(p)) for p in packets),
        }
    )


def build_vectors() -> dict[str, Vector]:
    """Every golden vector, built with the protocol code from the fixed inputs."""
    c = _claims()
    a, b = NodeId(ID_A), NodeId(ID_B)
    push_pull = PushPull(
        join=True,
        members=(MemberState(c["alive_a"]), MemberState(c["alive_b"], c["leave_b"])),
    )
    others: list[Message] = [
        PingReq(seq=3, target=a, address=Address(*ADDRESS_A), nack=True),
        Ack(seq=2),
        Nack(seq=3),
        c["dead_a_by_b"],
        Entry(entry=ENTRY_BYTES),
        EntryAnnounce(ids=(ENTRY_ID_1,)),
        EntryRequest(ids=(ENTRY_ID_1, ENTRY_ID_2)),
        Sync(payload=SYNC_PAYLOAD),
        Error(code=ERROR_CODE, message=ERROR_TEXT),
    ]
    summary = Fingerprint.of((ENTRY_ID_1, ENTRY_ID_2))
    shown_pp = {k: c[k] for k in ("alive_a", "alive_b", "leave_b")}
    return {
        "constants": _constants(),
        "identities": _identities(),
        "ping_datagram": _sealed(1, "a", [Ping(seq=1, target=b)], {}, frame=False),
        "ping_alive_datagram": _sealed(
            2,
            "a",
            [Ping(seq=2, target=b), c["alive_a"]],
            {"alive_a": c["alive_a"]},
            frame=False,
        ),
        "suspect_datagram": _sealed(
            3,
            "b",
            [c["suspect_a_by_b"]],
            {"suspect_a_by_b": c["suspect_a_by_b"]},
            frame=False,
        ),
        "push_pull_frame": _sealed(4, "a", [push_pull], shown_pp, frame=True),
        "other_messages_frame": _sealed(
            5, "b", others, {"dead_a_by_b": c["dead_a_by_b"]}, frame=True
        ),
        "forward_compat_datagram": _forward_compat(6),
        "packing": _packing(7),
        "store_summary_datagram": _sealed(
            8,
            "b",
            [StoreSummary(fingerprint=summary.value, count=summary.count)],
            {},
            frame=False,
        ),
    }


# --- the same vectors, re-derived from the specification alone -----------------------------
# Nothing below uses a nodenet encoder: only the doc's rules, msgpack, PyNaCl and hashlib.


def _pack(obj: object) -> bytes:
    packed: bytes = msgpack.packb(obj, use_bin_type=True)
    return packed


def _spec_address(host: str, port: int) -> list[object]:
    return [ipaddress.ip_address(host).packed, port]


def _spec_claim(plain: list[object], signer: str, claim_context: bytes) -> tuple[bytes, bytes]:
    claim = _pack(plain)
    return claim, KEYS[signer].sign(claim_context + claim).signature


def _spec_claims(claim_context: bytes) -> dict[str, list[object]]:
    """Each claim in message form, `[type, claim bytes, signature]`, built from §11."""
    tags = dict(sorted(TAGS_A.items()))
    plains: dict[str, tuple[list[object], str]] = {
        "alive_a": ([5, ID_A, INCARNATION_A, _spec_address(*ADDRESS_A), tags], "a"),
        "alive_b": ([5, ID_B, INCARNATION_B, _spec_address(*ADDRESS_B), {}], "b"),
        "suspect_a_by_b": ([6, ID_A, INCARNATION_A, ID_B], "b"),
        "dead_a_by_b": ([7, ID_A, INCARNATION_A, ID_B], "b"),
        "leave_b": ([8, ID_B, INCARNATION_B], "b"),
    }
    return {
        name: [plain[0], *_spec_claim(plain, author, claim_context)]
        for name, (plain, author) in plains.items()
    }


def _spec_messages(claim_context: bytes) -> dict[str, list[list[object]]]:
    """The messages of each sealed vector, as plain msgpack-able values (§10-§12)."""
    c = _spec_claims(claim_context)
    return {
        "ping_datagram": [[1, 1, ID_B]],
        "ping_alive_datagram": [[1, 2, ID_B], c["alive_a"]],
        "suspect_datagram": [c["suspect_a_by_b"]],
        "push_pull_frame": [[9, True, [[c["alive_a"], None], [c["alive_b"], c["leave_b"]]]]],
        "other_messages_frame": [
            [2, 3, ID_A, _spec_address(*ADDRESS_A), True],
            [3, 2],
            [4, 3],
            c["dead_a_by_b"],
            [10, ENTRY_BYTES],
            [11, [ENTRY_ID_1]],
            [12, [ENTRY_ID_1, ENTRY_ID_2]],
            [13, SYNC_PAYLOAD],
            [14, ERROR_CODE, ERROR_TEXT],
        ],
        "store_summary_datagram": [[15, _spec_fingerprint((ENTRY_ID_1, ENTRY_ID_2)), 2]],
    }


def _spec_fingerprint(ids: Iterable[bytes]) -> bytes:
    """§16.2: BLAKE2b-512 of (sum of the ids, little-endian, mod 2^256 ‖ count), 16 bytes."""
    ids = list(ids)
    total = sum(int.from_bytes(i, "little") for i in ids) % 2**256
    data = total.to_bytes(32, "little") + len(ids).to_bytes(8, "little")
    return hashlib.blake2b(data).digest()[:16]


def _spec_seal(body: bytes, signer: str, nonce: bytes, ctx: bytes) -> tuple[bytes, bytes]:
    signature = KEYS[signer].sign(ctx + body).signature
    box = nacl.secret.SecretBox(CLUSTER_KEY)
    mac_and_ciphertext = box.encrypt(body + signature, nonce).ciphertext
    return signature, bytes([1]) + nonce + mac_and_ciphertext


def _uint_len(n: int) -> int:
    """Bytes of the smallest msgpack encoding of the non-negative integer `n`."""
    for limit, size in ((0x7F, 1), (0xFF, 2), (0xFFFF, 3), (0xFFFFFFFF, 5)):
        if n <= limit:
            return size
    return 9


def _array_header_len(count: int) -> int:
    return 1 if count <= 15 else 3 if count <= 0xFFFF else 5


def derive(name: str, doc: dict[str, dict[str, str]]) -> dict[str, Value]:
    """Vector `name` computed from the spec; the doc supplies only contexts and nonces."""
    ctx_env = bytes.fromhex(doc["constants"]["envelope_context"])
    ctx_claim = bytes.fromhex(doc["constants"]["claim_context"])
    if name == "identities":
        return _derive_identities()
    if name == "packing":
        return _derive_packing(doc["constants"])
    nonce = bytes.fromhex(doc[name]["nonce"])
    sender = doc[name]["sender"]
    fields: dict[str, Value] = {"sender": sender, "now_ms": NOW_MS, "nonce": nonce}
    if name == "forward_compat_datagram":
        body = _pack(
            [
                1,
                FUTURE_MINOR,
                IDS[sender],
                NOW_MS,
                [[FUTURE_TYPE, FUTURE_TEXTS[0]], [3, 7, FUTURE_TEXTS[1]]],
                FUTURE_TEXTS[2],
            ]
        )
    else:
        claims = _spec_claims(ctx_claim)
        for label in (k.removesuffix("_claim") for k in doc[name] if k.endswith("_claim")):
            _, fields[f"{label}_claim"], fields[f"{label}_signature"] = claims[label]
        messages = _spec_messages(ctx_claim)[name]
        for i, message in enumerate(messages, 1):
            fields[f"message_{i}"] = _pack(message)
        body = _pack([1, 1, IDS[sender], NOW_MS, messages])  # §8.1: major 1, minor 1
    fields["body"] = body
    fields["signature"], sealed = _spec_seal(body, sender, nonce, ctx_env)
    fields["sealed"] = sealed
    if name.endswith("_frame"):
        fields["frame"] = struct.pack(">I", len(sealed)) + sealed
    return fields


def _derive_identities() -> dict[str, Value]:
    fields: dict[str, Value] = {}
    for who, seed in (("a", SEED_A), ("b", SEED_B)):
        public = bytes(nacl.signing.SigningKey(seed).verify_key)
        text = base64.b32encode(public).decode().rstrip("=").lower()
        fields[f"seed_{who}"] = seed
        fields[f"node_id_{who}"] = public
        fields[f"node_id_{who}_text"] = text
        fields[f"node_id_{who}_short"] = text[:10]
        fields[f"key_file_{who}_line"] = (
            "nodenet-ed25519-seed-v1 " + base64.b64encode(seed).decode()
        )
    fields["cluster_key"] = CLUSTER_KEY
    fields["cluster_key_text"] = base64.b64encode(CLUSTER_KEY).decode()
    person = b"nodenet-key-id".ljust(16, b"\x00")
    fields["cluster_key_id"] = hashlib.blake2b(
        CLUSTER_KEY, digest_size=4, person=person
    ).hexdigest()
    return fields


def _derive_packing(constants: dict[str, str]) -> dict[str, Value]:
    limit = int(constants["max_datagram_size"])
    seal = int(constants["seal_overhead"])
    sig = int(constants["signature_len"])
    head = 1 + 1 + 1 + 34 + _uint_len(NOW_MS)  # array(5), major, minor, sender, sent_at_ms

    def overhead(count: int) -> int:
        return seal + head + _array_header_len(count) + sig

    sizes = [len(_pack([1, seq, ID_B])) for seq in range(1, PACKING_PINGS + 1)]
    batches: list[list[int]] = []
    for size in sizes:
        if batches and overhead(len(batches[-1]) + 1) + sum(batches[-1]) + size <= limit:
            batches[-1].append(size)
        else:
            batches.append([size])
    return {
        "message": PACKING_WHAT,
        "message_size": sizes[0],
        "overhead_up_to_15": overhead(1),
        "overhead_16_to_65535": overhead(16),
        "datagram_messages": " ".join(str(len(b)) for b in batches),
        "datagram_sizes": " ".join(str(overhead(len(b)) + sum(b)) for b in batches),
    }


# --- the doc: parsing and rendering golden blocks -------------------------------------------

BLOCK = re.compile(r"^```golden name=([a-z0-9_]+)\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
HEX_WRAP = 64


def flatten(fields: dict[str, Value]) -> dict[str, str]:
    """Field values as the doc spells them: bytes in lowercase hex, numbers in decimal."""
    return {k: v.hex() if isinstance(v, bytes) else str(v) for k, v in fields.items()}


def parse_blocks(text: str) -> dict[str, dict[str, str]]:
    """`{name: {key: value}}` of every golden block; indented lines continue the value."""
    blocks: dict[str, dict[str, str]] = {}
    for match in BLOCK.finditer(text):
        name = match.group(1)
        if name in blocks:
            raise ValueError(f"golden block {name!r} appears twice in the doc")
        fields: dict[str, str] = {}
        key = None
        for line in match.group(2).splitlines():
            if not line.strip():
                continue
            if line[0] in " \t":
                if key is None:
                    raise ValueError(f"golden block {name!r}: continuation line before a key")
                fields[key] += line.strip()
                continue
            key, sep, value = line.partition(":")
            if not sep or key in fields:
                raise ValueError(f"golden block {name!r}: bad or repeated line {line!r}")
            fields[key] = value.strip()
        blocks[name] = fields
    return blocks


def render_block(name: str, vector: Vector) -> str:
    """The text of one golden block, hex wrapped at 32 bytes per line."""
    lines = [f"```golden name={name}"]
    for key, value in vector.fields.items():
        if isinstance(value, bytes) and len(value) * 2 > HEX_WRAP:
            digits = value.hex()
            lines.append(f"{key}:")
            lines.extend(f"  {digits[i : i + HEX_WRAP]}" for i in range(0, len(digits), HEX_WRAP))
        else:
            lines.append(f"{key}: {flatten({key: value})[key]}")
    lines.append("```")
    return "\n".join(lines)


def rewrite_doc(text: str, vectors: dict[str, Vector]) -> str:
    """`text` with every golden block regenerated; every vector must have a block already."""
    missing = set(vectors) - {m.group(1) for m in BLOCK.finditer(text)}
    if missing:
        raise SystemExit(f"docs/protocol.md has no golden block for {sorted(missing)}")
    return BLOCK.sub(lambda m: render_block(m.group(1), vectors[m.group(1)]), text)


def message_type_table(text: str) -> list[tuple[int, str]]:
    """(value, name) rows of the table in the doc's "Message types" section, in order."""
    section = re.search(r"^## \d+\. Message types\n(.*?)(?=^## )", text, re.MULTILINE | re.DOTALL)
    if section is None:
        raise ValueError("docs/protocol.md has no '## N. Message types' section")
    rows = re.findall(r"^\|\s*(\d+)\s*\|\s*`([A-Z_]+)`\s*\|", section.group(1), re.MULTILINE)
    return [(int(value), name) for value, name in rows]


# --- tests ----------------------------------------------------------------------------------

VECTORS = build_vectors()
SEALED = [name for name, v in VECTORS.items() if v.sender is not None]
DERIVABLE = [name for name in VECTORS if name != "constants"]


@pytest.fixture(scope="module")
def doc_text() -> str:
    return DOC.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def doc(doc_text: str) -> dict[str, dict[str, str]]:
    return parse_blocks(doc_text)


def test_given_the_doc_then_it_holds_a_golden_block_for_exactly_each_vector(
    doc: dict[str, dict[str, str]],
):
    assert sorted(doc) == sorted(VECTORS)


@pytest.mark.parametrize("name", list(VECTORS))
def test_given_the_fixed_inputs_when_the_code_rebuilds_a_vector_then_the_doc_bytes_match(
    name: str, doc: dict[str, dict[str, str]]
):
    assert doc[name] == flatten(VECTORS[name].fields), (
        f"golden vector {name!r} differs from what the code produces; if the wire format"
        " changed on purpose, regenerate with `python tests/protocol/test_golden.py --write`"
    )


@pytest.mark.parametrize("name", SEALED)
def test_given_a_sealed_vector_from_the_doc_when_decoded_then_the_expected_envelope(
    name: str, doc: dict[str, dict[str, str]]
):
    vector = VECTORS[name]
    assert vector.sender is not None
    fields = doc[name]
    sealed = bytes.fromhex(fields["sealed"])
    receiver = WireCodec(KEYS[PEER[vector.sender]], Keyring([ClusterKey(CLUSTER_KEY)]))
    if vector.frame:
        reader = FrameReader(receiver.limits.max_frame_size)
        reader.feed(bytes.fromhex(fields["frame"]))
        assert reader.next_frame() == sealed
        assert reader.buffered == 0
        received = receiver.decode_frame(sealed, NOW_MS)
    else:
        received = receiver.decode_datagram(sealed, NOW_MS)
    assert received.key == ClusterKey(CLUSTER_KEY)
    assert received.size == len(sealed)
    envelope = received.envelope
    assert envelope.sender == NodeId(IDS[vector.sender])
    assert envelope.sent_at_ms == int(fields["now_ms"]) == NOW_MS
    assert envelope.minor == vector.minor
    assert envelope.messages == vector.messages
    assert envelope.skipped == vector.skipped


@pytest.mark.parametrize("name", DERIVABLE)
def test_given_only_the_spec_when_a_vector_is_rederived_with_bare_libraries_then_it_matches(
    name: str, doc: dict[str, dict[str, str]]
):
    assert doc[name] == flatten(derive(name, doc))


def test_given_the_doc_contexts_then_they_are_the_spelled_out_ascii_strings(
    doc: dict[str, dict[str, str]],
):
    constants = doc["constants"]
    assert bytes.fromhex(constants["envelope_context"]) == b"nodenet/envelope/v1\x00"
    assert bytes.fromhex(constants["claim_context"]) == b"nodenet/claim/v1\x00"


def test_given_the_doc_message_type_table_then_it_lists_the_enum_in_order(doc_text: str):
    assert message_type_table(doc_text) == [(t.value, t.name) for t in MessageType]


def test_given_one_changed_hex_digit_in_the_doc_then_the_comparison_fails(
    doc_text: str, doc: dict[str, dict[str, str]]
):
    line = doc["ping_datagram"]["sealed"][HEX_WRAP : 2 * HEX_WRAP]
    assert line in doc_text
    flipped = line[:-1] + ("0" if line[-1] != "0" else "1")
    tampered = parse_blocks(doc_text.replace(line, flipped, 1))
    assert tampered["ping_datagram"]["sealed"] != doc["ping_datagram"]["sealed"]
    assert tampered["ping_datagram"] != flatten(derive("ping_datagram", tampered))


def test_given_a_tampered_sealed_vector_when_decoded_then_rejected(
    doc: dict[str, dict[str, str]],
):
    sealed = bytearray.fromhex(doc["ping_datagram"]["sealed"])
    sealed[-1] ^= 0x01
    receiver = WireCodec(KEYS["b"], Keyring([ClusterKey(CLUSTER_KEY)]))
    with pytest.raises(RemoteProtocolError):
        receiver.decode_datagram(bytes(sealed), NOW_MS)


def _print_blocks(names: Iterable[str]) -> None:
    for name in names:
        print(render_block(name, VECTORS[name]), end="\n\n")


if __name__ == "__main__":
    if sys.argv[1:] == ["--write"]:
        DOC.write_text(rewrite_doc(DOC.read_text(encoding="utf-8"), VECTORS), encoding="utf-8")
        print(f"rewrote the golden blocks in {DOC}")
    else:
        _print_blocks(VECTORS)
