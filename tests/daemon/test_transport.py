"""The real UDP/TCP transport: resolver failures are socket errors, never a crash."""

from __future__ import annotations

import pytest
from support.daemons import free_port

from nodenet.daemon.transport import UdpTcpTransport
from nodenet.protocol.messages import Address


async def test_an_address_the_resolver_refuses_is_an_oserror_for_send_and_connect():
    # getaddrinfo raises UnicodeError for an over-long IPv6 zone; every caller of the
    # transport handles OSError, and one UnicodeError used to stop the whole daemon.
    try:
        transport = UdpTcpTransport(Address("::1", free_port("::1")))
        await transport.open()
    except OSError as exc:
        pytest.skip(f"this machine has no IPv6 loopback (::1): {exc}")
    try:
        unresolvable = Address("fe80::1%" + "a" * 64, 7950)
        with pytest.raises(OSError, match="cannot connect to"):
            await transport.connect(unresolvable)
        with pytest.raises(OSError, match="cannot send to"):
            await transport.send_datagram(b"x", unresolvable)
    finally:
        transport.close()
