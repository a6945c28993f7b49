"""Sockets: one UDP socket and one TCP listener on the same port.

`Transport` is the narrow interface the membership service needs, so tests can swap in an
in-memory network (`tests/support/memnet.py`) and run the daemon under Trio's MockClock.
`UdpTcpTransport` is the real one. Binding `::` gives one dual-stack socket that serves IPv4
and IPv6; IPv4 peers then appear as `::ffff:a.b.c.d`, which is mapped back so that a node
has one address whichever way it is reached.
"""

from __future__ import annotations

import errno
import ipaddress
import socket as stdlib_socket
from collections.abc import Awaitable, Callable
from typing import Protocol

import trio

from nodenet.protocol.messages import Address

__all__ = ["StreamHandler", "Transport", "UdpTcpTransport"]

StreamHandler = Callable[[trio.abc.Stream, Address], Awaitable[None]]
MAX_DATAGRAM = 65535  # read buffer; the codec refuses anything over its limit


class Transport(Protocol):
    """What the membership service needs from the network."""

    local: Address

    async def send_datagram(self, data: bytes, address: Address) -> None:
        """Send one datagram; raises OSError on local failure."""

    async def receive_datagram(self) -> tuple[bytes, Address]:
        """The next datagram and where it came from."""

    async def connect(self, address: Address) -> trio.abc.Stream:
        """A TCP stream to `address` (raises OSError)."""

    async def serve_streams(
        self,
        handler: StreamHandler,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Accept TCP connections forever, running `handler` for each."""


def _to_address(host: str, port: int) -> Address:
    ip = ipaddress.ip_address(host.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return Address(str(ip), port)


class UdpTcpTransport:
    """The real transport: UDP and TCP on `bind`'s address and port."""

    def __init__(self, bind: Address) -> None:
        self._bind = bind
        ip = ipaddress.ip_address(bind.host)
        self._family = stdlib_socket.AF_INET6 if ip.version == 6 else stdlib_socket.AF_INET
        self._udp: trio.socket.SocketType | None = None
        self.local = bind

    async def open(self) -> None:
        """Bind the UDP socket (the TCP listener binds in `serve_streams`)."""
        sock = trio.socket.socket(self._family, stdlib_socket.SOCK_DGRAM)
        if self._family == stdlib_socket.AF_INET6:
            sock.setsockopt(stdlib_socket.IPPROTO_IPV6, stdlib_socket.IPV6_V6ONLY, 0)
        try:
            await sock.bind((self._bind.host, self._bind.port))
        except OSError as exc:
            sock.close()
            raise _bind_error(exc, "UDP", self._bind) from exc
        self._udp = sock
        host, port = sock.getsockname()[:2]
        self.local = _to_address(host, port)

    def close(self) -> None:
        """Close the UDP socket."""
        if self._udp is not None:
            self._udp.close()

    def _destination(self, address: Address) -> tuple[str, int]:
        if self._family == stdlib_socket.AF_INET6 and ":" not in address.host:
            return (f"::ffff:{address.host}", address.port)
        return (address.host, address.port)

    async def send_datagram(self, data: bytes, address: Address) -> None:
        assert self._udp is not None, "open() first"
        try:
            await self._udp.sendto(data, self._destination(address))
        except (UnicodeError, ValueError) as exc:  # e.g. a zone name the resolver refuses
            raise OSError(errno.EINVAL, f"cannot send to {address}: {exc}") from exc

    async def receive_datagram(self) -> tuple[bytes, Address]:
        assert self._udp is not None, "open() first"
        data, peer = await self._udp.recvfrom(MAX_DATAGRAM)
        return data, _to_address(peer[0], peer[1])

    async def connect(self, address: Address) -> trio.abc.Stream:
        host, port = self._destination(address)
        # From our own address, when we have one: peers (and firewalls) see the same
        # source for our TCP as for our UDP.
        local = None if ipaddress.ip_address(self._bind.host).is_unspecified else self._bind.host
        if local is not None and self._family == stdlib_socket.AF_INET6 and ":" not in host:
            local = None  # a v6 socket bound to a v6 address cannot reach a v4 peer from it
        try:
            return await trio.open_tcp_stream(host, port, local_address=local)
        except (UnicodeError, ValueError) as exc:  # e.g. a zone name the resolver refuses
            raise OSError(errno.EINVAL, f"cannot connect to {address}: {exc}") from exc

    async def serve_streams(
        self,
        handler: StreamHandler,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        sock = trio.socket.socket(self._family, stdlib_socket.SOCK_STREAM)
        sock.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_REUSEADDR, 1)
        if self._family == stdlib_socket.AF_INET6:
            sock.setsockopt(stdlib_socket.IPPROTO_IPV6, stdlib_socket.IPV6_V6ONLY, 0)
        try:
            await sock.bind((self._bind.host, self.local.port))
        except OSError as exc:
            sock.close()
            raise _bind_error(exc, "TCP", self.local) from exc
        sock.listen(128)
        listener = trio.SocketListener(sock)

        async def accepted(stream: trio.SocketStream) -> None:
            host, port = stream.socket.getpeername()[:2]
            await handler(stream, _to_address(host, port))

        task_status.started()
        await trio.serve_listeners(accepted, [listener])


def _bind_error(exc: OSError, what: str, address: Address) -> OSError:
    if exc.errno == errno.EADDRINUSE:
        return OSError(
            exc.errno,
            f"{what} port {address} is already in use (another nodenetd? `ss -lunp sport = "
            f":{address.port}`); set network.port or stop the other process",
        )
    if exc.errno == errno.EADDRNOTAVAIL:
        return OSError(exc.errno, f"cannot bind {what} {address}: no such local address")
    return OSError(exc.errno, f"cannot bind {what} {address}: {exc.strerror}")
