"""A TCP conversation in sealed frames: send messages, receive envelopes, bounded in bytes.

Every TCP use in nodenet goes through this: push-pull and fallback probes (request, half
close, reply), entry pulls and pushes, and multi-round reconciliation sessions (one frame
each way per round). Decoding errors surface as `RemoteProtocolError`; the peer closing
early is `None` from `receive`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import trio

from nodenet.protocol.errors import MalformedMessage, TooLarge
from nodenet.protocol.identity import NodeId
from nodenet.protocol.keyring import ClusterKey
from nodenet.protocol.messages import Address, Message
from nodenet.protocol.wire import FRAME_HEADER, FrameReader, Received, WireCodec

__all__ = ["FrameConnection"]

READ_CHUNK = 65536


class FrameConnection:
    """Frames over one stream, for one peer."""

    def __init__(
        self,
        stream: trio.abc.Stream,
        codec: WireCodec,
        peer: Address,
        *,
        wall_ms: Callable[[], int],
        max_bytes: int,
        key: ClusterKey | None = None,
    ) -> None:
        self.stream = stream
        self.codec = codec
        self.peer = peer
        self._wall_ms = wall_ms
        self._reader = FrameReader(codec.limits.max_frame_size)
        self._max_bytes = max_bytes
        self.key = key
        """The cluster key to seal with (the one that opened the peer's frames, if older)."""
        self.received: Received | None = None
        """The last frame received (its key and fallback flag tell which key the peer uses)."""
        self.sender: NodeId | None = None
        self.bytes_in = 0
        self.bytes_out = 0

    async def send(self, messages: Sequence[Message]) -> None:
        """Send messages, in as many frames as they need."""
        for frame in self.codec.encode_frames(messages, self._wall_ms(), self.key):
            await self.stream.send_all(frame)
            self.bytes_out += len(frame)

    async def send_eof(self) -> None:
        """Half-close: "my request is complete"."""
        if isinstance(self.stream, trio.abc.HalfCloseableStream):
            await self.stream.send_eof()

    async def receive_header(self) -> bool:
        """Wait until the next frame's 4-byte length has arrived (False if the peer closed
        first). A peer that connected but sends nothing can be told apart from one that
        sends a large frame slowly."""
        while self._reader.buffered < FRAME_HEADER.size:
            data = await self.stream.receive_some(READ_CHUNK)
            if not data:
                return False
            self.bytes_in += len(data)
            self._reader.feed(data)
        return True

    async def receive(self) -> list[Message] | None:
        """The messages of the next frame, or None when the peer has closed."""
        while True:
            frame = self._reader.next_frame()
            if frame is not None:
                return self._accept(self.codec.decode_frame(frame, self._wall_ms()))
            data = await self.stream.receive_some(READ_CHUNK)
            if not data:
                if self._reader.buffered:
                    raise MalformedMessage(f"TCP stream from {self.peer} ended inside a frame")
                return None
            self.bytes_in += len(data)
            if self.bytes_in > self._max_bytes:
                raise TooLarge(
                    f"TCP stream from {self.peer} carried more than {self._max_bytes} bytes"
                )
            self._reader.feed(data)

    async def receive_all(self) -> list[Message]:
        """Every message until the peer half-closes."""
        messages: list[Message] = []
        while (batch := await self.receive()) is not None:
            messages.extend(batch)
        return messages

    def _accept(self, got: Received) -> list[Message]:
        sender = got.envelope.sender
        if self.sender is not None and sender != self.sender:
            raise MalformedMessage(f"TCP stream from {self.peer} mixes two senders")
        self.sender = sender
        self.received = got
        if got.key != self.codec.keyring.primary and not got.envelope.fallback:
            self.key = got.key
        return list(got.envelope.messages)
