"""The replicated store through the API of two in-process daemons (real sockets and LMDB)."""

from __future__ import annotations

import base64
import json
import re

import msgpack
import nacl.signing
import pytest
import trio

from nodenet.protocol.entries import MAX_FUTURE_MS, create_entry
from nodenet.protocol.hlc import pack_hlc
from nodenet.protocol.identity import ENTRY_CONTEXT, sign

STRANGER = nacl.signing.SigningKey(b"\x77" * 32)
MALLORY = nacl.signing.SigningKey(b"\x66" * 32)


async def joined(pair) -> tuple:
    a, b = pair
    response = await b.http.post("/v1/join", json={"addresses": [a.address]})
    assert response.status_code == 200
    return a, b


async def eventually(check, timeout: float = 15) -> None:
    with trio.fail_after(timeout):
        while not await check():
            await trio.sleep(0.05)


async def test_submit_get_list_delete_and_replication(pair):
    a, b = await joined(pair)
    written = await a.http.post("/v1/entries", json={"key": "app/config", "value": "replicas=3"})
    assert written.status_code == 200
    meta = written.json()
    assert meta["key"] == "app/config"
    assert len(meta["id"]) == 64
    assert meta["author"] == (await a.http.get("/v1/self")).json()["id"]

    async def on_b() -> bool:
        return (await b.http.get("/v1/entries/app/config")).status_code == 200

    await eventually(on_b)
    got = (await b.http.get("/v1/entries/app/config")).json()
    assert (got["value"], got["id"]) == ("replicas=3", meta["id"])

    batch = {
        "entries": [
            {"key": f"app/{i}", "value_b64": base64.b64encode(bytes([i])).decode()}
            for i in range(5)
        ]
    }
    assert len((await b.http.post("/v1/entries", json=batch)).json()["entries"]) == 5
    listed = (await b.http.get("/v1/entries", params={"prefix": "app/", "limit": 3})).json()
    assert [e["key"] for e in listed["entries"]] == ["app/0", "app/1", "app/2"]
    more = (
        await b.http.get("/v1/entries", params={"prefix": "app/", "after": listed["next"]})
    ).json()
    assert [e["key"] for e in more["entries"]] == ["app/3", "app/4", "app/config"]

    deleted = await b.http.delete("/v1/entries/app/config")
    assert deleted.json()["deleted"] is True

    async def gone_on_a() -> bool:
        return (await a.http.get("/v1/entries/app/config")).status_code == 404

    await eventually(gone_on_a)
    missing = await a.http.get("/v1/entries/app/config")
    assert missing.json()["error"]["code"] == "not_found"

    async def same_heads() -> bool:
        x, y = (await a.http.get("/v1/store")).json(), (await b.http.get("/v1/store")).json()
        return x == y

    await eventually(same_heads)


async def test_entries_appear_on_the_event_stream(pair):
    a, _ = pair
    seen: list[dict] = []

    async def read() -> None:
        async with a.http.stream("GET", "/v1/events") as response:
            async for line in response.aiter_lines():
                if line.startswith("event: entry"):
                    seen.append({})
                elif line.startswith("data: ") and seen and not seen[-1]:
                    seen[-1] = json.loads(line[6:])
                    return

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(read)
            await trio.sleep(0.2)
            await a.http.post("/v1/entries", json={"key": "watched", "value": "1"})
    assert seen[0]["key"] == "watched"
    assert seen[0]["origin"] == "local"


def _signed(
    fields: list, signer: nacl.signing.SigningKey, *, signature: bytes | None = None
) -> str:
    body = msgpack.packb(fields, use_bin_type=True)
    entry = msgpack.packb([body, signature or sign(signer, ENTRY_CONTEXT, body)], use_bin_type=True)
    return base64.b64encode(entry).decode()


def _now_hlc() -> int:
    import time

    return pack_hlc(time.time_ns() // 1_000_000, 0)


async def test_a_pre_signed_entry_from_another_author_is_stored(pair):
    a, _ = pair
    entry = create_entry(STRANGER, "imported", b"ok", _now_hlc())
    response = await a.http.post(
        "/v1/entries", json={"signed": base64.b64encode(entry.encoded).decode()}
    )
    assert response.status_code == 200
    assert response.json()["id"] == entry.id.hex()


@pytest.mark.parametrize(
    ("case", "status", "code"),
    [
        ("tampered value", 400, "bad_signature"),
        ("forged author", 400, "bad_signature"),
        ("future hlc", 400, "future"),
        ("oversized value", 413, "too_large"),
        ("key not utf-8", 400, "malformed"),
    ],
)
async def test_bad_signed_entries_are_refused_with_a_clear_error_and_not_stored(
    pair, case, status, code
):
    a, _ = pair
    honest = create_entry(STRANGER, "target", b"value", _now_hlc())
    fields = list(msgpack.unpackb(msgpack.unpackb(honest.encoded)[0]))
    if case == "tampered value":
        fields[2] = b"evil"
        signed = _signed(fields, STRANGER, signature=honest.signature)
    elif case == "forged author":
        signed = _signed(fields, MALLORY)  # claims STRANGER wrote it, signed by Mallory
    elif case == "future hlc":
        fields[4] = _now_hlc() + ((MAX_FUTURE_MS + 60_000) << 16)
        signed = _signed(fields, STRANGER)
    elif case == "oversized value":
        fields[2] = b"x" * 70_000
        signed = _signed(fields, STRANGER)
    else:
        body = msgpack.packb(fields, use_bin_type=True).replace(b"\xa6target", b"\xa6\xff\xfearget")
        signed = base64.b64encode(
            msgpack.packb([body, sign(STRANGER, ENTRY_CONTEXT, body)], use_bin_type=True)
        ).decode()
    response = await a.http.post("/v1/entries", json={"signed": signed})
    assert (response.status_code, response.json()["error"]["code"]) == (status, code)
    assert response.json()["error"]["message"]
    assert (await a.http.get("/v1/entries/target")).status_code == 404
    assert (await a.http.get("/v1/store")).json()["entries"] == 0


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"key": "k" * 300, "value": "v"}, 400),
        ({"key": "é" * 200, "value": "v"}, 400),  # 200 characters but 400 bytes
        ({"key": "bad\udcffkey", "value": "v"}, 400),
        ({"key": "k", "value": "v" * 70_000}, 413),
        ({"key": "k"}, 400),
        ({"key": "k", "value": "v", "value_b64": "dg=="}, 400),
        ({"key": "k", "value_b64": "###"}, 400),
        ({"value": "no key"}, 400),
        ({"key": "line\nbreak", "value": "v"}, 400),
        # no coercion: the schema says boolean and string (schemathesis ST201 found `0`)
        ({"key": "k", "value": "v", "delete": 0}, 422),
        ({"key": "k", "value": 5}, 422),
        # Parts of a request that would be silently ignored (adversarial review):
        ({"key": "k", "value": "v", "entries": [{"key": "j", "value": "w"}]}, 400),
        ({"key": "k", "value": "v", "delete": True}, 400),
        ({"key": "k", "value": "v", "vlaue": "typo"}, 422),
        ({"entries": [{"key": "k", "value": "v", "extra": 1}]}, 422),
    ],
)
async def test_bad_writes_get_clear_errors(pair, body, status):
    a, _ = pair
    content = json.dumps(body).encode()
    response = await a.http.post(
        "/v1/entries", content=content, headers={"content-type": "application/json"}
    )
    assert response.status_code == status, response.text
    assert response.json()["error"]["message"]


async def test_bad_entries_on_the_wire_are_counted_and_not_stored(pair):
    a, b = await joined(pair)
    honest = create_entry(STRANGER, "wire", b"value", _now_hlc())
    fields = list(msgpack.unpackb(msgpack.unpackb(honest.encoded)[0]))
    fields[2] = b"tampered"
    tampered = base64.b64decode(_signed(fields, STRANGER, signature=honest.signature))
    future_fields = list(fields)
    future_fields[2] = b"v"
    future_fields[4] = _now_hlc() + ((MAX_FUTURE_MS + 60_000) << 16)
    future = base64.b64decode(_signed(future_fields, STRANGER))
    service = b.daemon.service
    from nodenet.protocol.messages import Entry

    for blob in (tampered, future, b"\x92garbage"):
        (datagram,) = service.codec.encode_datagrams([Entry(entry=blob)], service.clock.wall_ms())
        await service.transport.send_datagram(datagram, a.daemon.config.advertise)

    async def counted() -> bool:
        rejected = a.daemon.replication.stats.rejected
        return sum(rejected.values()) >= 3

    await eventually(counted)
    assert {"bad_signature", "future", "malformed"} <= set(a.daemon.replication.stats.rejected)
    assert (await a.http.get("/v1/entries/wire")).status_code == 404
    metrics = (await a.http.get("/metrics")).text
    assert 'nodenet_entries_rejected_total{reason="bad_signature"} 1.0' in metrics


async def test_a_batch_is_atomic_and_a_bad_entry_is_named(pair):
    a, _ = pair
    body = {"entries": [{"key": "ok/1", "value": "v"}, {"key": "ok/2", "value_b64": "###"}]}
    response = await a.http.post("/v1/entries", json=body)
    assert response.status_code == 400
    body = {"entries": [{"key": "ok/1", "value": "v"}, {"key": "bad\nkey", "value": "v"}]}
    response = await a.http.post("/v1/entries", json=body)
    assert response.status_code == 400
    assert response.json()["error"]["message"].startswith("entries[1]: ")
    assert (await a.http.get("/v1/store")).json()["entries"] == 0  # nothing of the batch


async def test_writes_report_their_outcome_and_listing_knows_when_it_ends(pair):
    a, _ = pair
    entry = create_entry(STRANGER, "same", b"v", _now_hlc())
    signed = {"signed": base64.b64encode(entry.encoded).decode()}
    assert (await a.http.post("/v1/entries", json=signed)).json()["outcome"] == "stored"
    assert (await a.http.post("/v1/entries", json=signed)).json()["outcome"] == "duplicate"
    for i in range(3):
        await a.http.post("/v1/entries", json={"key": f"page/{i}", "value": "x" * i})
    page = (await a.http.get("/v1/entries", params={"prefix": "page/", "limit": 3})).json()
    assert page["next"] is None  # exactly three: nothing follows
    assert [e["size"] for e in page["entries"]] == [0, 1, 2]
    first = (await a.http.get("/v1/entries", params={"prefix": "page/", "limit": 2})).json()
    assert first["next"] == "page/1"


async def test_resuming_events_with_an_id_from_another_run_starts_with_a_reset(pair):
    a, _ = pair
    await a.http.post("/v1/entries", json={"key": "e", "value": "1"})
    lines = []
    with trio.fail_after(10):
        async with a.http.stream("GET", "/v1/events", params={"after": 5}) as response:
            async for line in response.aiter_lines():
                lines.append(line)
                if line.startswith("event: entry"):
                    break
    assert "event: reset" in lines
    reset_id = int(lines[lines.index("event: reset") - 1].removeprefix("id: "))
    assert reset_id > 5  # resuming after it continues with what the daemon holds


async def test_gossiped_copies_of_a_held_entry_are_dropped_before_verification(pair):
    a, b = await joined(pair)
    from nodenet.protocol.messages import Entry

    entry = create_entry(STRANGER, "copies", b"value", _now_hlc())
    service = b.daemon.service
    stats = a.daemon.replication.stats

    async def send_copy() -> None:
        (datagram,) = service.codec.encode_datagrams(
            [Entry(entry=entry.encoded)], service.clock.wall_ms()
        )
        await service.transport.send_datagram(datagram, a.daemon.config.advertise)

    await send_copy()

    async def stored() -> bool:
        return (await a.http.get("/v1/entries/copies")).status_code == 200

    await eventually(stored)
    verified = sum(stats.ingested.values()) + sum(stats.rejected.values())
    for _ in range(4):
        await send_copy()

    async def skipped() -> bool:
        return a.daemon.replication.replicator.copies_skipped >= 4

    await eventually(skipped)
    assert sum(stats.ingested.values()) + sum(stats.rejected.values()) == verified
    # (b re-gossips the entry to a as well: those copies are skipped too)
    metrics = (await a.http.get("/metrics")).text
    (value,) = re.findall(r"^nodenet_entry_copies_skipped_total (\S+)$", metrics, re.MULTILINE)
    assert float(value) >= 4


async def test_a_damaged_stored_entry_is_a_503_for_its_key_and_left_out_of_lists(pair):
    from nodenet.daemon.state import Apply
    from nodenet.daemon.store import item_key

    a, _ = pair
    for key in ("d/1", "d/2"):
        response = await a.http.post("/v1/entries", json={"key": key, "value": "v"})
        assert response.status_code == 200, response.text
    replication = a.daemon.replication
    assert replication is not None
    encoded = await trio.to_thread.run_sync(replication.store.head_sync, "d/1")
    entry = a.daemon._decode_stored(encoded)
    item = item_key(entry.hlc, entry.id)
    flipped = encoded[:-1] + bytes([encoded[-1] ^ 1])
    await replication.store.state.write(
        [Apply(lambda txn, dbs: txn.put(item, flipped, db=dbs["entries"]))]
    )
    listed = await a.http.get("/v1/entries", params={"prefix": "d/"})
    assert listed.status_code == 200
    assert [e["key"] for e in listed.json()["entries"]] == ["d/2"]
    assert (await a.http.get("/v1/entries/d/1")).status_code == 404  # dropped by the listing
    assert "nodenet_store_damaged_entries_total 1.0" in (await a.http.get("/metrics")).text


@pytest.mark.parametrize("method", ["GET", "DELETE"])
async def test_a_key_in_the_path_that_is_not_utf8_is_refused_not_replaced(pair, method):
    # DELETE /v1/entries/%ff tombstoned the key "\ufffd" (found by an adversarial review).
    a, _ = pair
    response = await a.http.request(method, "/v1/entries/app%ff")
    assert response.status_code == 400, response.text
    assert "not UTF-8" in response.json()["error"]["message"]
    assert (await a.http.get("/v1/store")).json()["entries"] == 0
    ok = await a.http.request(method, "/v1/entries/caf%C3%A9")  # café, percent-encoded UTF-8
    assert ok.status_code == (404 if method == "GET" else 200)
