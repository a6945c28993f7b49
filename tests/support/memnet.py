"""An in-memory network for daemon tests: seeded loss, duplication and delay for datagrams,
`trio.testing.memory_stream_pair` for TCP. Works under Trio's MockClock."""

from __future__ import annotations

import errno
import random

import trio
import trio.testing

from nodenet.daemon.transport import StreamHandler
from nodenet.protocol.messages import Address


class MemoryNetwork:
    """Datagram delivery and stream connections between `MemoryTransport`s."""

    def __init__(
        self,
        nursery: trio.Nursery,
        rng: random.Random,
        *,
        loss: float = 0.0,
        duplicate: float = 0.0,
        delay_s: tuple[float, float] = (0.001, 0.005),
    ) -> None:
        self.nursery = nursery
        self.rng = rng
        self.loss = loss
        self.duplicate = duplicate
        self.delay_s = delay_s
        self.transports: dict[Address, MemoryTransport] = {}
        self.down: set[Address] = set()
        self.sent = 0
        self.dropped = 0

    def transport(self, address: Address) -> MemoryTransport:
        """A transport bound to `address`."""
        transport = MemoryTransport(self, address)
        self.transports[address] = transport
        return transport

    def deliver(self, data: bytes, source: Address, destination: Address) -> None:
        self.sent += 1
        target = self.transports.get(destination)
        if target is None or destination in self.down or source in self.down:
            self.dropped += 1
            return
        if self.rng.random() < self.loss:
            self.dropped += 1
            return
        copies = 2 if self.rng.random() < self.duplicate else 1
        for _ in range(copies):
            self.nursery.start_soon(
                self._later, self.rng.uniform(*self.delay_s), target, data, source
            )

    async def _later(
        self, delay: float, target: MemoryTransport, data: bytes, source: Address
    ) -> None:
        await trio.sleep(delay)
        if target.local not in self.down:
            try:
                target.inbox_send.send_nowait((data, source))
            except trio.WouldBlock:
                self.dropped += 1  # like a full socket buffer


class MemoryTransport:
    """The `Transport` interface over a `MemoryNetwork`."""

    def __init__(self, network: MemoryNetwork, local: Address) -> None:
        self.network = network
        self.local = local
        self.inbox_send, self.inbox = trio.open_memory_channel[tuple[bytes, Address]](1000)
        self._handler: StreamHandler | None = None

    async def send_datagram(self, data: bytes, address: Address) -> None:
        self.network.deliver(data, self.local, address)

    async def receive_datagram(self) -> tuple[bytes, Address]:
        return await self.inbox.receive()

    async def connect(self, address: Address) -> trio.abc.Stream:
        target = self.network.transports.get(address)
        if (
            target is None
            or target._handler is None
            or address in self.network.down
            or self.local in self.network.down
        ):
            raise OSError(errno.ECONNREFUSED, f"connection to {address} refused")
        ours, theirs = trio.testing.memory_stream_pair()
        self.network.nursery.start_soon(target._handler, theirs, self.local)
        return ours

    async def serve_streams(
        self,
        handler: StreamHandler,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        self._handler = handler
        task_status.started()
        try:
            await trio.sleep_forever()
        finally:
            self._handler = None
