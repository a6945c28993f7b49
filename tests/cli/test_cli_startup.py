"""`nodenet` as a fresh process: what the API commands import (DESIGN §5: not the daemon,
no cryptography, and not pydantic, which typer would load to parse strings), and shell
completion."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from support.fake_api import EventLog, FakeApi

NODENET = str(Path(sys.executable).parent / "nodenet")

# Runs `nodenet ARGS...` in-process and, at exit, writes sys.modules to a file.
PROBE = """
import atexit, json, sys
modules_file = sys.argv[1]
def dump():
    with open(modules_file, "w") as out:
        json.dump(sorted(sys.modules), out)
atexit.register(dump)
sys.argv = ["nodenet", *sys.argv[2:]]
from nodenet.cli.main import main
main()
"""

# The same for `nodenet watch`, stopped by a Ctrl-C in place of its first reconnection wait.
WATCH_PROBE = PROBE.replace(
    "from nodenet.cli.main import main",
    "from nodenet.cli import watch\n"
    "def interrupt(seconds):\n"
    "    raise KeyboardInterrupt\n"
    "watch.sleep = interrupt\n"
    "from nodenet.cli.main import main",
)

FORBIDDEN = (
    "nodenet.protocol",
    "nacl",
    "trio",
    "lmdb",
    "fastapi",
    "hypercorn",
    "msgpack",
    "prometheus_client",
    "httpx",
    "aiohttp",
    "pydantic",
)
# Stdlib-only modules the CLI shares with the daemon (patterns imports re2 when a --tag or
# --name pattern is checked: 3 ms).
ALLOWED_FROM_DAEMON = {"nodenet.daemon", "nodenet.daemon.paths", "nodenet.daemon.patterns"}


def _forbidden(modules: list[str]) -> list[str]:
    def bad(name: str) -> bool:
        if name.startswith("nodenet.daemon"):
            return name not in ALLOWED_FROM_DAEMON
        return any(name == f or name.startswith(f + ".") for f in FORBIDDEN)

    return [m for m in modules if bad(m)]


def _modules_after(args: list[str], modules_file: Path, expected_exit: int) -> list[str]:
    result = subprocess.run(
        [sys.executable, "-c", PROBE, str(modules_file), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == expected_exit, result.stderr
    assert "Traceback" not in result.stderr
    modules: list[str] = json.loads(modules_file.read_text())
    assert "nodenet.cli.main" in modules
    return modules


@pytest.mark.parametrize("daemon", ["missing", "serving"])
def test_when_peers_runs_then_neither_daemon_nor_cryptography_is_imported(
    daemon: str, request: pytest.FixtureRequest, short_dir: str, tmp_path: Path
):
    if daemon == "serving":
        target: str = request.getfixturevalue("api")
        expected_exit = 0
    else:
        target, expected_exit = f"{short_dir}/missing.sock", 69
    args = ["peers", "--status", "alive", "--tag", "role=web", "--api", target]
    assert _forbidden(_modules_after(args, tmp_path / "modules.json", expected_exit)) == []


@pytest.mark.parametrize(
    "args",
    [
        ["status"],
        ["join", "10.0.0.9:7950", "--timeout", "5"],
        ["leave"],
        ["tags", "set", "role=db"],
        ["tags", "delete", "role"],
        ["keys", "list"],
        ["keys", "install", "A" * 43 + "="],
        ["keys", "use", "94153013"],
        ["keys", "remove", "5f0e2a1c"],
        ["submit", "app/config", "replicas=3"],
        ["submit", "app/config", "--file", "/dev/null"],
        ["get", "app/config", "--meta"],
        ["ls", "app/", "--limit", "10", "--all"],
        ["delete", "app/config"],
        ["watch", "app/", "--members"],
    ],
    ids=" ".join,
)
def test_when_any_other_api_command_runs_then_the_same_imports_are_avoided(
    args: list[str], short_dir: str, tmp_path: Path
):
    args = [*args, "--api", f"{short_dir}/missing.sock"]
    assert _forbidden(_modules_after(args, tmp_path / "modules.json", 69)) == []


@pytest.mark.parametrize(
    "args",
    [
        ["submit", "k", "v"],
        ["get", "k"],
        ["ls", "--limit", "5"],
        ["delete", "k"],
        ["watch", "--json"],
    ],
    ids=" ".join,
)
def test_given_a_serving_daemon_when_a_store_command_runs_then_the_same_imports_are_avoided(
    args: list[str], fake: FakeApi, api: str, tmp_path: Path
):
    fake.store.write("k", b"v")
    fake.events = EventLog([(1, "entry", fake.store.heads["k"])])
    modules_file = tmp_path / "modules.json"
    # watch would reconnect for ever: its first wait raises KeyboardInterrupt instead
    probe = WATCH_PROBE if args[0] == "watch" else PROBE
    result = subprocess.run(
        [sys.executable, "-c", probe, str(modules_file), *args, "--api", api],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    modules: list[str] = json.loads(modules_file.read_text())
    assert "nodenet.cli.main" in modules
    assert _forbidden(modules) == []


def test_the_import_check_would_notice_the_daemon():
    assert _forbidden(["nodenet.daemon.paths", "nodenet.daemon.config", "nacl.bindings"]) == [
        "nodenet.daemon.config",
        "nacl.bindings",
    ]


def test_given_a_missing_daemon_when_the_installed_command_runs_then_one_line_and_exit_69(
    short_dir: str,
):
    result = subprocess.run(
        [NODENET, "peers", "--api", f"{short_dir}/missing.sock"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 69
    assert len(result.stderr.splitlines()) == 1
    assert result.stderr.startswith("nodenet: cannot reach nodenetd at ")


def _complete(shell: str, **env: str) -> str:
    result = subprocess.run(
        [NODENET],
        env={**os.environ, "_NODENET_COMPLETE": f"complete_{shell}", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.parametrize(
    ("words", "cword", "expected"),
    [
        ("nodenet pe", "1", ["peers"]),
        ("nodenet keys u", "2", ["use"]),
        ("nodenet peers --status ", "3", ["alive", "suspect", "dead", "left"]),
        ("nodenet peers --js", "2", ["--json"]),
    ],
)
def test_bash_completion_offers_commands_options_and_choices(
    words: str, cword: str, expected: list[str]
):
    assert _complete("bash", COMP_WORDS=words, COMP_CWORD=cword).split() == expected


def test_zsh_completion_offers_subcommands_with_their_help():
    offered = _complete("zsh", _TYPER_COMPLETE_ARGS="nodenet tags ")
    assert '"set":"Set tags on this node' in offered
    assert '"delete":' in offered


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_show_completion_prints_a_script_for_the_shell(shell: str):
    # typer detects the user's shell; this variable makes it take the shell as a value
    env = {**os.environ, "_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION": "1"}
    result = subprocess.run(
        [NODENET, "--show-completion", shell], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "_NODENET_COMPLETE=complete_" + shell in result.stdout
