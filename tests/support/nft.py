"""Partitions between loopback addresses with nftables, for system tests.

Each daemon binds its own 127.0.0.x address; a partition drops every packet between two
groups of addresses in a table this helper creates and always deletes; `loss` drops a
random share of the UDP packets among a group of addresses (chaos tests). Only 127.0.0.0/8
is ever named in a rule.
"""

from __future__ import annotations

import ipaddress
import itertools
import json
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


# --- chaos helpers: random loss, per-table names, leftovers --------------------------------

_tables = itertools.count(1)


def unique_table(kind: str) -> str:
    """A table name no other helper, test or process uses (pid and a counter)."""
    return f"{TABLE}_{kind}{next(_tables)}"


def _counters(table: str) -> dict[str, int]:
    """Packets counted by each rule of `table` that has a comment, by comment."""
    out = subprocess.run(
        ["nft", "-j", "list", "table", "inet", table], capture_output=True, text=True, timeout=10
    )
    counts: dict[str, int] = {}
    if out.returncode != 0:
        return counts
    for item in json.loads(out.stdout).get("nftables", []):
        rule = item.get("rule")
        if not rule or "comment" not in rule:
            continue
        for expr in rule.get("expr", []):
            if "counter" in expr:
                counts[rule["comment"]] = int(expr["counter"]["packets"])
    return counts


class Loss:
    """Packets seen and dropped by a `loss` table so far (read from nft's counters)."""

    def __init__(self, table: str) -> None:
        self.table = table

    def counts(self) -> tuple[int, int]:
        """(UDP packets between the addresses, of which dropped)."""
        counters = _counters(self.table)
        return counters.get("seen", 0), counters.get("dropped", 0)


@contextmanager
def loss(addresses: Iterable[str], percent: int) -> Iterator[Loss]:
    """Drop `percent` % of the UDP packets between these loopback addresses, at random."""
    if not 0 <= percent <= 100:
        raise ValueError(f"loss of {percent} % is not a percentage")
    group = ", ".join(_check(addresses))
    table = unique_table("loss")
    match = f"meta l4proto udp ip saddr {{ {group} }} ip daddr {{ {group} }}"
    script = f"""
add table inet {table}
add chain inet {table} input {{ type filter hook input priority -10; policy accept; }}
add rule inet {table} input {match} counter comment "seen"
add rule inet {table} input {match} numgen random mod 100 < {percent} counter drop comment "dropped"
"""
    subprocess.run(["nft", "-f", "-"], input=script, text=True, check=True, timeout=10)
    try:
        yield Loss(table)
    finally:
        subprocess.run(["nft", "delete", "table", "inet", table], check=False, timeout=10)


def remove_leftovers() -> list[str]:
    """Delete every table this process created and still holds (a last line of defence)."""
    out = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True, timeout=10)
    removed = []
    for line in out.stdout.splitlines():
        parts = line.split()
        if (
            len(parts) == 3
            and parts[0] == "table"
            and (parts[2] == TABLE or parts[2].startswith(TABLE + "_"))
        ):
            subprocess.run(["nft", "delete", "table", parts[1], parts[2]], check=False, timeout=10)
            removed.append(parts[2])
    return removed
