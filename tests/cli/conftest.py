"""CLI test fixtures: an environment that never touches the real machine, and a fake API.

Every test gets its own config, state and runtime directories through the variables the
CLI and `nodenet.daemon.paths` read, so that `nodenet init` without `--config` (even as
root) writes under the test's tmp_path and never to /etc or the user's home.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.fake_api import FakeApi, serving


@pytest.fixture(autouse=True)
def isolated_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point every default path into tmp_path; NODENET_API at a socket that is not there."""
    home = tmp_path / "env"
    monkeypatch.setenv("NODENET_CONFIG", str(home / "config" / "nodenet.toml"))
    monkeypatch.setenv("NODENET_STATE_DIR", str(home / "state"))
    monkeypatch.setenv("STATE_DIRECTORY", str(home / "state"))
    monkeypatch.setenv("RUNTIME_DIRECTORY", str(home / "run"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / "xdg-config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(home / "xdg-data"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(home / "xdg-run"))
    monkeypatch.setenv("NODENET_API", str(home / "run" / "no-daemon.sock"))
    monkeypatch.delenv("NO_COLOR", raising=False)
    return home


@pytest.fixture
def short_dir() -> Iterator[str]:
    """A directory under /tmp with a short path: AF_UNIX paths must stay under ~100 bytes."""
    path = tempfile.mkdtemp(prefix="nn", dir="/tmp")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def fake() -> FakeApi:
    """Canned answers from docs/api.md; tests change them with `fake.respond(...)`."""
    return FakeApi()


@pytest.fixture
def api(fake: FakeApi, short_dir: str) -> Iterator[str]:
    """The fake served on a unix socket; the value is what to pass to --api."""
    with serving(fake, unix_path=f"{short_dir}/api.sock") as target:
        yield target
