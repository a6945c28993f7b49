"""The shipped systemd unit and example config: valid, documented, and hardened."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from nodenet.daemon.config import HANDLER_KEYS, SCHEMA, load_config

SYSTEMD = Path(__file__).resolve().parents[2] / "systemd"
EXPOSURE_LIMIT = 1.5


def _analyze() -> str:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed here (Debian package systemd)")
    return tool


def test_the_unit_verifies_without_any_message(tmp_path: Path):
    tool = _analyze()
    # The unit points at /opt/nodenet; verify the same text against this checkout's binary.
    daemon = Path(sys.executable).parent / "nodenetd"
    unit = tmp_path / "nodenetd.service"
    unit.write_text(
        (SYSTEMD / "nodenetd.service").read_text().replace("/opt/nodenet/bin/nodenetd", str(daemon))
    )
    result = subprocess.run(
        [tool, "verify", "--man=no", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0
    assert result.stderr == ""


def test_the_unit_is_hardened_below_the_exposure_limit():
    tool = _analyze()
    result = subprocess.run(
        [tool, "security", "--offline=true", str(SYSTEMD / "nodenetd.service")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    match = re.search(r"Overall exposure level for nodenetd\.service: (\d+\.\d+)", result.stdout)
    assert match, result.stdout + result.stderr
    exposure = float(match.group(1))
    print(f"\nsystemd-analyze security: exposure {exposure}, limit {EXPOSURE_LIMIT} (Serf's: 9.6)")
    assert exposure <= EXPOSURE_LIMIT


def test_the_example_config_loads_and_documents_every_key():
    path = SYSTEMD / "nodenet.toml"
    config = load_config(path, environ={})
    assert config.profile == "lan"
    text = path.read_text()
    for section, keys in SCHEMA.items():
        assert f"[{section}]" in text, f"section [{section}] is not in the example config"
        for key in keys:
            assert re.search(rf"^#? ?{key} =", text, flags=re.M), (
                f"{section}.{key} is not documented"
            )
    for key in HANDLER_KEYS:
        assert re.search(rf"^# {key} =", text, flags=re.M), f"handlers.{key} is not documented"


def test_the_sysusers_and_tmpfiles_snippets_declare_the_nodenet_group():
    assert "g nodenet" in (SYSTEMD / "nodenet.sysusers").read_text()
    assert "/etc/nodenet 0750 root nodenet" in (SYSTEMD / "nodenet.tmpfiles").read_text()
