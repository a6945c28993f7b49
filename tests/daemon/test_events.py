"""The event hub's bounds: entry events carry values of up to 1 MiB, so the ring, each
subscriber's backlog and the number of streams are bounded, and a subscriber that falls
behind is cut off even while its stream is blocked on a client that reads nothing."""

from __future__ import annotations

import pytest
import trio

from nodenet.daemon.events import EVENT_OVERHEAD, EventHub, TooManySubscribers

MIB = 1 << 20


def test_the_ring_holds_at_most_its_bytes_and_its_count():
    hub = EventHub(capacity=100, ring_bytes=4 * MIB)
    for i in range(20):
        hub.publish("entry", {"n": i}, size=MIB)
    ids = [e.id for e in hub._ring]
    assert len(ids) == 3  # 3 × (1 MiB + overhead) fit in 4 MiB, 4 do not
    assert ids == [hub.last_id - 2, hub.last_id - 1, hub.last_id]
    for i in range(150):
        hub.publish("member", {"n": i})
    assert len(hub._ring) == 100


async def test_a_subscriber_that_falls_behind_is_cut_off_and_its_stream_cancelled():
    hub = EventHub(subscriber_bytes=3 * MIB)
    async with hub.subscribe() as subscription:
        hub.publish("entry", {"n": 1}, size=MIB)
        hub.publish("entry", {"n": 2}, size=MIB)
        assert hub.subscribers == 1
        assert subscription.backlog == 2 * (MIB + EVENT_OVERHEAD)
        assert (await subscription.receive()).data == {"n": 1}
        hub.publish("entry", {"n": 3}, size=MIB)
        hub.publish("entry", {"n": 4}, size=MIB)  # 3 MiB + overhead behind: too far
        assert hub.subscribers == 0
        assert subscription.scope.cancel_called  # even a stream blocked on its client ends
        assert [(await subscription.receive()).data for _ in range(2)] == [{"n": 2}, {"n": 3}]
        with pytest.raises(trio.EndOfChannel):
            await subscription.receive()


async def test_streams_are_capped():
    hub = EventHub(max_subscribers=2)
    async with hub.subscribe(), hub.subscribe():
        with pytest.raises(TooManySubscribers):
            async with hub.subscribe():
                pass
    async with hub.subscribe():
        assert hub.subscribers == 1


async def test_a_resume_replays_at_most_half_the_budget_after_a_reset():
    hub = EventHub(subscriber_bytes=8 * MIB)
    first = hub.publish("entry", {"n": 0}, size=MIB).id
    for i in range(1, 10):
        hub.publish("entry", {"n": i}, size=MIB)
    async with hub.subscribe(after=first) as subscription:
        reset = await subscription.receive()
        assert reset.kind == "reset"
        replayed = [(await subscription.receive()).data["n"] for _ in range(3)]
        assert replayed == [7, 8, 9]  # the newest that fit in 4 MiB
        assert reset.data == {"missed_after": first, "oldest": reset.id + 1}
    async with hub.subscribe(after=hub.last_id - 1) as subscription:
        assert (await subscription.receive()).data == {"n": 9}  # no reset: nothing missed


async def test_a_client_that_stops_reading_is_disconnected_not_buffered_for(pair):
    # A client reads the stream's start, then nothing: the server's send blocks once the
    # socket buffers are full. The hub must still end that stream (found by an adversarial
    # review: nine such clients held 1.8 GB, and closing the channel did not end them).
    a, _ = pair
    hub = EventHub(subscriber_bytes=4 * MIB)
    a.daemon.hub = hub
    stream = await trio.open_unix_socket(str(a.daemon.config.api.socket))
    async with stream:
        await stream.send_all(b"GET /v1/events HTTP/1.1\r\nHost: x\r\n\r\n")
        head = b""
        with trio.fail_after(10):
            while b": connected" not in head:
                head += await stream.receive_some(4096)
            while hub.subscribers == 0:
                await trio.sleep(0.01)
        with trio.fail_after(20):
            n = 0
            while hub.subscribers:  # big events until the hub gives up on the client
                hub.publish("entry", {"value": "v" * MIB, "n": n}, size=MIB)
                n += 1
                await trio.sleep(0.01)
        assert n < 40
        with trio.fail_after(10):  # the server ends the response: what we did not read, then EOF
            while await stream.receive_some(1 << 20):
                pass
    assert hub.dropped == 1


async def test_streams_and_dropped_streams_are_exported(pair):
    a, _ = pair
    hub = a.daemon.hub
    async with hub.subscribe():
        text = (await a.http.get("/metrics")).text
        assert "nodenet_api_event_streams 1.0" in text
    hub.dropped = 2
    assert "nodenet_api_event_streams_dropped_total 2.0" in (await a.http.get("/metrics")).text
