"""`make install` into a staging directory, and the generated man pages."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from nodenet.cli.main import app
from nodenet.cli.manpages import nodenet_page, nodenetd_page

ROOT = Path(__file__).resolve().parents[2]


def test_the_man_pages_cover_every_command_and_option():
    page = nodenet_page()
    listing = CliRunner().invoke(app, ["--help"]).output
    commands = re.findall(r"│ (\w[\w-]*) ", listing.split("Commands")[1])
    assert commands
    for command in commands:
        assert "nodenet " + command.replace("-", "\\-") in page, command  # roff escapes "-"
    daemon = nodenetd_page()
    for flag in ("\\-\\-config", "\\-\\-state\\-dir", "\\-\\-seed", "\\-\\-check\\-config"):
        assert flag in daemon
    assert daemon.startswith(".TH NODENETD 8")


@pytest.mark.slow
def test_make_install_into_a_staging_root_puts_every_file_in_place(tmp_path: Path):
    if not Path("/usr/bin/python3").exists():
        pytest.skip("no system Python at /usr/bin/python3 to build the service's venv from")
    stage = tmp_path / "root"
    result = subprocess.run(
        ["make", "install", f"DESTDIR={stage}", "PREFIX=/opt/nodenet"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    for path in (
        "etc/systemd/system/nodenetd.service",
        "usr/lib/sysusers.d/nodenet.conf",
        "usr/lib/tmpfiles.d/nodenet.conf",
        "etc/nodenet/nodenet.toml.example",
        "usr/local/share/man/man1/nodenet.1",
        "usr/local/share/man/man8/nodenetd.8",
        "usr/share/bash-completion/completions/nodenet",
        "opt/nodenet/bin/nodenetd",
    ):
        assert (stage / path).exists(), path
    script = stage / "opt/nodenet/bin/nodenetd"
    assert script.read_text().startswith("#!/opt/nodenet/bin/python")  # runs from PREFIX
    version = subprocess.run(
        [stage / "opt/nodenet/bin/python", script, "--version"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert version.stdout.startswith("nodenetd ")
    assert (
        "complete -o default -F _nodenet_completion nodenet"
        in (stage / "usr/share/bash-completion/completions/nodenet").read_text()
    )
    assert sys.executable  # the checkout's own venv is untouched by the install
