"""Partitions between loopback addresses with nftables, for system tests.

Each daemon binds its own 127.0.0.x address; a partition drops every packet between two
groups of addresses in a table this helper creates and always deletes. Only 127.0.0.0/8
is ever named in a rule.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import subprocess
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

TABLE = f"nodenet_test_{os.getpid()}"


def unavailable() -> str | None:
    """Why partitions cannot be made here, or None if they can."""
    if shutil.which("nft") is None:
        return "nft (Debian package nftables) is not installed"
    if os.geteuid() != 0:
        return "nftables rules need root"
    probe = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True, timeout=10)
    if probe.returncode != 0:
        return f"nft does not work here: {probe.stderr.strip()}"
    return None


def _check(addresses: Iterable[str]) -> list[str]:
    out = []
    for address in addresses:
        if ipaddress.ip_address(address) not in ipaddress.ip_network("127.0.0.0/8"):
            raise ValueError(f"{address} is not a loopback address: refusing to filter it")
        out.append(address)
    return out


@contextmanager
def partition(left: Iterable[str], right: Iterable[str]) -> Iterator[None]:
    """Drop everything between the two groups of loopback addresses while inside."""
    a, b = ", ".join(_check(left)), ", ".join(_check(right))
    script = f"""
add table inet {TABLE}
add chain inet {TABLE} input {{ type filter hook input priority -10; policy accept; }}
add rule inet {TABLE} input ip saddr {{ {a} }} ip daddr {{ {b} }} drop
add rule inet {TABLE} input ip saddr {{ {b} }} ip daddr {{ {a} }} drop
"""
    subprocess.run(["nft", "-f", "-"], input=script, text=True, check=True, timeout=10)
    try:
        yield
    finally:
        subprocess.run(["nft", "delete", "table", "inet", TABLE], check=False, timeout=10)
