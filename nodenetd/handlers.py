"""Handlers: commands run when entries under a prefix arrive (`[[handlers]]` in the config).

Each handler has its own bounded queue and a fixed number of workers, so a slow or stuck
command delays only its own work: replication never waits for a handler, and a full queue
drops (and counts) what does not fit rather than buffering without limit. The command is an
argv list run without a shell; it gets the value on stdin and the entry's key, author, id,
hlc and origin in the environment, and is killed after `timeout_s`.
"""

from __future__ import annotations

import logging
import os
import signal
from collections import Counter
from dataclasses import dataclass

import trio

from nodenet.protocol.entries import SignedEntry

__all__ = ["HandlerConfig", "Handlers"]

log = logging.getLogger("nodenet.handlers")
OUTPUT_LIMIT = 4096  # bytes of a failing handler's output kept for the log


@dataclass(frozen=True, slots=True, kw_only=True)
class HandlerConfig:
    """One `[[handlers]]` table."""

    name: str
    """Label in logs and metrics (default: the prefix)."""
    prefix: str
    """Run for entries whose key starts with this ("" for every entry)."""
    command: tuple[str, ...]
    """argv of the command; no shell is involved."""
    timeout_s: float = 30.0
    concurrency: int = 2
    """Runs of this handler at once."""
    queue: int = 1000
    """Entries waiting for this handler; more are dropped and counted."""
    on_delete: bool = True
    """Also run for deletes (NODENET_DELETED=1, empty stdin)."""
    local: bool = True
    """Also run for entries written through this node (not only replicated ones)."""


@dataclass(frozen=True, slots=True)
class _Job:
    entry: SignedEntry
    origin: str


class Handlers:
    """Runs the configured handlers; `dispatch` never blocks."""

    def __init__(self, configs: tuple[HandlerConfig, ...] = ()) -> None:
        self.configs = configs
        self.results: Counter[tuple[str, str]] = Counter()
        """(handler, result) → runs; result is ok, failed, timeout, error or dropped."""
        self._queues: dict[str, trio.MemorySendChannel[_Job]] = {}
        self._generation: trio.CancelScope | None = None
        self._nursery: trio.Nursery | None = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the workers until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self._start(self.configs)
            task_status.started()

    def _start(self, configs: tuple[HandlerConfig, ...]) -> None:
        """Start one generation of workers (a reload cancels the previous one)."""
        assert self._nursery is not None
        if self._generation is not None:
            self._generation.cancel()
        for channel in self._queues.values():
            channel.close()
        self._queues = {}
        workers = []
        for config in configs:
            send, receive = trio.open_memory_channel[_Job](config.queue)
            self._queues[config.name] = send
            workers.append((config, receive))
        self._generation = trio.CancelScope()
        self._nursery.start_soon(self._run_generation, workers, self._generation)

    async def _run_generation(
        self,
        workers: list[tuple[HandlerConfig, trio.MemoryReceiveChannel[_Job]]],
        scope: trio.CancelScope,
    ) -> None:
        with scope:
            async with trio.open_nursery() as nursery:
                for config, receive in workers:
                    for _ in range(config.concurrency):
                        nursery.start_soon(self._worker, config, receive.clone())
                    receive.close()

    def reload(self, configs: tuple[HandlerConfig, ...]) -> None:
        """Replace the handlers (SIGHUP); queued work of removed handlers is dropped."""
        if configs != self.configs:
            self.configs = configs
            if self._nursery is not None:
                self._start(configs)

    def dispatch(self, entries: list[SignedEntry], origin: str) -> None:
        """Queue the entries for every handler whose prefix matches."""
        for config in self.configs:
            if origin == "local" and not config.local:
                continue
            channel = self._queues.get(config.name)
            for entry in entries:
                if not entry.key.startswith(config.prefix) or (
                    entry.tombstone and not config.on_delete
                ):
                    continue
                if channel is None:
                    continue
                try:
                    channel.send_nowait(_Job(entry, origin))
                except (trio.WouldBlock, trio.ClosedResourceError):
                    self.results[config.name, "dropped"] += 1

    async def _worker(self, config: HandlerConfig, jobs: trio.MemoryReceiveChannel[_Job]) -> None:
        async with jobs:
            async for job in jobs:
                self.results[config.name, await self._run(config, job)] += 1

    async def _run(self, config: HandlerConfig, job: _Job) -> str:
        entry = job.entry
        env = {
            **os.environ,
            "NODENET_KEY": entry.key,
            "NODENET_AUTHOR": entry.author.text,
            "NODENET_ID": entry.id.hex(),
            "NODENET_HLC": str(entry.hlc),
            "NODENET_ORIGIN": job.origin,
            "NODENET_DELETED": "1" if entry.tombstone else "0",
        }
        with trio.move_on_after(config.timeout_s) as timeout:
            try:
                done = await trio.run_process(
                    list(config.command),
                    stdin=entry.value,
                    capture_stdout=True,
                    capture_stderr=True,
                    check=False,
                    env=env,
                )
            except OSError as exc:
                log.error("handler %s: cannot run %s: %s", config.name, config.command[0], exc)
                return "error"
        if timeout.cancelled_caught:
            log.warning(
                "handler %s: killed after %.0f s on %s", config.name, config.timeout_s, entry.key
            )
            return "timeout"
        if done.returncode != 0:
            output = (done.stderr or done.stdout or b"")[-OUTPUT_LIMIT:].decode("utf-8", "replace")
            log.warning(
                "handler %s exited with %s on %s: %s",
                config.name,
                _describe(done.returncode),
                entry.key,
                output.strip() or "(no output)",
            )
            return "failed"
        return "ok"


def _describe(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"signal {-returncode}"
    return f"status {returncode}"
