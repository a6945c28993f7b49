"""Handlers: commands run for entries under a prefix, bounded, timed out, counted."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nacl.signing
import pytest
import trio

from nodenet.daemon.config import ConfigError, load_config
from nodenet.daemon.handlers import HandlerConfig, Handlers
from nodenet.protocol.entries import create_entry
from nodenet.protocol.hlc import pack_hlc

KEY = nacl.signing.SigningKey(b"\x05" * 32)
RECORD = """
import json, os, sys
value = sys.stdin.buffer.read().decode()
env = {k: v for k, v in os.environ.items() if k.startswith("NODENET_")}
with open(sys.argv[1], "a") as out:
    out.write(json.dumps({"value": value, **env}) + "\\n")
"""


def entry(key: str, value: bytes = b"v", *, tombstone: bool = False):
    return create_entry(
        KEY, key, b"" if tombstone else value, pack_hlc(1_764_000_000_000, 0), tombstone=tombstone
    )


async def wait_for(condition, timeout: float = 20) -> None:
    with trio.fail_after(timeout):
        while not condition():
            await trio.sleep(0.02)


async def test_a_handler_gets_the_value_on_stdin_and_the_entry_in_its_environment(tmp_path: Path):
    log = tmp_path / "runs.jsonl"
    handlers = Handlers(
        (
            HandlerConfig(
                name="jobs", prefix="jobs/", command=(sys.executable, "-c", RECORD, str(log))
            ),
        )
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(handlers.run)
        handlers.dispatch([entry("jobs/1", b"payload"), entry("other/1")], "replicated")
        handlers.dispatch([entry("jobs/2", tombstone=True)], "local")
        await wait_for(lambda: handlers.results["jobs", "ok"] == 2)
        nursery.cancel_scope.cancel()
    runs = sorted(
        (json.loads(line) for line in log.read_text().splitlines()), key=lambda r: r["NODENET_KEY"]
    )
    assert [r["NODENET_KEY"] for r in runs] == ["jobs/1", "jobs/2"]
    assert runs[0]["value"] == "payload"
    assert runs[0]["NODENET_ORIGIN"] == "replicated"
    assert runs[0]["NODENET_AUTHOR"] == entry("x").author.text
    assert (runs[1]["NODENET_DELETED"], runs[1]["value"]) == ("1", "")


async def test_failures_timeouts_and_missing_programs_are_counted_not_fatal():
    handlers = Handlers(
        (
            HandlerConfig(
                name="fails", prefix="", command=(sys.executable, "-c", "raise SystemExit(3)")
            ),
            HandlerConfig(
                name="hangs",
                prefix="",
                command=(sys.executable, "-c", "import time; time.sleep(60)"),
                timeout_s=0.5,
            ),
            HandlerConfig(name="missing", prefix="", command=("/nonexistent/program",)),
        )
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(handlers.run)
        handlers.dispatch([entry("k")], "replicated")
        await wait_for(
            lambda: (
                (
                    handlers.results["fails", "failed"],
                    handlers.results["hangs", "timeout"],
                    handlers.results["missing", "error"],
                )
                == (1, 1, 1)
            )
        )
        nursery.cancel_scope.cancel()


async def test_a_full_queue_drops_and_counts_instead_of_blocking():
    slow = HandlerConfig(
        name="slow",
        prefix="",
        command=(sys.executable, "-c", "import time; time.sleep(5)"),
        concurrency=1,
        queue=2,
    )
    handlers = Handlers((slow,))
    async with trio.open_nursery() as nursery:
        await nursery.start(handlers.run)
        with trio.fail_after(1):  # dispatch never waits for the handler
            handlers.dispatch([entry(f"k{i}") for i in range(10)], "replicated")
        assert handlers.results["slow", "dropped"] >= 7
        nursery.cancel_scope.cancel()


def test_handler_config_is_validated_with_clear_errors(tmp_path: Path):
    good = tmp_path / "good.toml"
    good.write_text('[[handlers]]\nprefix = "jobs/"\ncommand = ["/bin/true"]\ntimeout_s = 5\n')
    (handler,) = load_config(good, environ={}).handlers
    assert (handler.name, handler.prefix, handler.command, handler.timeout_s) == (
        "jobs/",
        "jobs/",
        ("/bin/true",),
        5.0,
    )
    for text, message in [
        ('[[handlers]]\nprefix = "a"\ncommand = "/bin/true"\n', "non-empty list of strings"),
        ('[[handlers]]\ncommand = ["/bin/true"]\n', "prefix"),
        (
            '[[handlers]]\nprefix = "a"\ncommand = ["x"]\nshell = true\n',
            "unknown key handlers[0].shell",
        ),
        ('[[handlers]]\nprefix = "a"\ncommand = ["x"]\nconcurrency = 0\n', "concurrency"),
        ('[handlers]\nprefix = "a"\n', "[[handlers]] tables"),
    ]:
        bad = tmp_path / "bad.toml"
        bad.write_text(text)
        with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
            load_config(bad, environ={})
