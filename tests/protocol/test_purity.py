"""protocol/ stays sans-IO: no I/O, clock, or global-randomness imports (DESIGN §3)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PROTOCOL = Path(__file__).resolve().parents[2] / "protocol"
FORBIDDEN_MODULES = {"trio", "socket", "lmdb", "time", "os", "asyncio", "subprocess", "select"}
# random.Random (an instance passed in) is the only allowed use of the random module.
ALLOWED_RANDOM_NAMES = {"Random"}
FILES = sorted(PROTOCOL.rglob("*.py"))


def _violations(source: str) -> list[str]:
    tree = ast.parse(source)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in FORBIDDEN_MODULES:
                    found.append(f"line {node.lineno}: import {alias.name}")
        elif isinstance(node, ast.ImportFrom) and node.module:
            root = node.module.split(".")[0]
            if root in FORBIDDEN_MODULES:
                found.append(f"line {node.lineno}: from {node.module} import ...")
            if root == "random":
                bad = [a.name for a in node.names if a.name not in ALLOWED_RANDOM_NAMES]
                if bad:
                    found.append(f"line {node.lineno}: from random import {', '.join(bad)}")
            if node.module.startswith(("protocol", "nodenet.daemon", "nodenet.cli")):
                found.append(
                    f"line {node.lineno}: from {node.module} (protocol/ imports only itself)"
                )
        elif (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "random"
            and node.attr not in ALLOWED_RANDOM_NAMES
        ):
            found.append(f"line {node.lineno}: random.{node.attr} (global randomness)")
    return found


def test_the_scan_finds_protocol_files():
    assert len(FILES) >= 5


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_given_a_protocol_module_then_it_imports_no_io_clock_or_global_random(path: Path):
    assert _violations(path.read_text()) == []


@pytest.mark.parametrize(
    "source",
    [
        "import time",
        "import os.path",
        "from trio import sleep",
        "from socket import socket",
        "import lmdb",
        "import asyncio",
        "import random\nrandom.choice([1])",
        "from random import shuffle",
        "from nodenet.daemon import store",
    ],
)
def test_given_an_impure_snippet_then_the_scanner_flags_it(source: str):
    assert _violations(source)


def test_given_an_injected_random_instance_then_the_scanner_allows_it():
    assert _violations("import random\ndef f(rng: random.Random): return rng.random()") == []
