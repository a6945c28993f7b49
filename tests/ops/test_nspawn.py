"""The systemd unit under real systemd, in a systemd-nspawn container booted for the test.

The container is a Debian minbase root (debootstrap, cached between runs under /var/tmp)
with systemd and python3; the nodenet install is `make install` into a staging directory,
bind-mounted read-only at /opt/nodenet. The container shares the host's network namespace
and its daemon binds 127.0.0.1 only, joining a daemon the test runs on the host, so all
traffic stays on loopback. A oneshot unit inside the container runs the checks and reports
through a bind-mounted directory; the test drives the phases and watches from the host.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from support.daemons import (
    CLUSTER_KEY,
    DaemonProcess,
    free_port,
    node_dir,
    wait_until,
)

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
ROOTFS = Path("/var/tmp/nodenet-nspawn/rootfs")
SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
PACKAGES = "systemd,systemd-sysv,dbus,python3"

CHECKS = r"""#!/bin/sh
# Runs inside the container as a oneshot unit; results go to /shared/result.
set -u
out=/shared/result
rm -f "$out"
say() { printf '%s=%s\n' "$1" "$2" >> "$out"; }
until_true() {
    i=0
    while [ $i -lt "$1" ]; do eval "$2" && return 0; sleep 0.5; i=$((i+1)); done
    return 1
}
id alice >/dev/null 2>&1 || useradd -m -G nodenet alice
install -d -o nodenet -g nodenet -m 0700 /var/lib/nodenet
install -o nodenet -g nodenet -m 0600 /shared/keyring /var/lib/nodenet/keyring
install -m 0640 -g nodenet /shared/nodenet.toml /etc/nodenet/nodenet.toml
mkdir -p /etc/systemd/system/nodenetd.service.d
printf '[Service]\nWatchdogSec=4s\nRestartSec=1s\n' \
    > /etc/systemd/system/nodenetd.service.d/test.conf
systemctl daemon-reload
systemctl start nodenetd; say start $?
say active "$(systemctl is-active nodenetd)"
say status "$(systemctl status nodenetd --no-pager 2>&1 | grep 'Active:')"
say socket "$(stat -c '%G %a' /run/nodenet/api.sock)"
peers=$(runuser -u alice -- /opt/nodenet/bin/nodenet peers 2>&1)  # finds the service socket
say peers "$(echo "$peers" | tr '\n' '|')"
until_true 40 'systemctl show -p StatusText --value nodenetd | grep -q "^2 alive"'
say status_text "$(systemctl show -p StatusText --value nodenetd)"
say process_metrics "$(python3 - <<'PY'
import socket
sock = socket.socket(socket.AF_UNIX)
sock.connect("/run/nodenet/api.sock")
sock.sendall(b"GET /metrics HTTP/1.0\r\nHost: nodenetd\r\n\r\n")
data = b""
while chunk := sock.recv(65536):
    data += chunk
print(sum(line.startswith("process_") for line in data.decode().splitlines()))
PY
)"
echo joined > /shared/phase
until_true 120 '[ -e /shared/go-watchdog ]'
old=$(systemctl show -p MainPID --value nodenetd)
kill -STOP "$old"
until_true 120 '[ "$(systemctl show -p NRestarts --value nodenetd)" -ge 1 ]'
say restarts "$(systemctl show -p NRestarts --value nodenetd)"
until_true 60 '[ "$(systemctl is-active nodenetd)" = active ]'
say active_again "$(systemctl is-active nodenetd)"
say pids "$old $(systemctl show -p MainPID --value nodenetd)"
echo restarted > /shared/phase
until_true 120 '[ -e /shared/go-stop ]'
systemctl stop nodenetd; say stop $?
say journal "$(journalctl -u nodenetd --no-pager -o cat 2>&1 | grep -c 'left the cluster')"
echo done > /shared/phase
systemctl poweroff
"""

UNIT = """[Unit]
Description=nodenet system test
After=multi-user.target
[Service]
Type=oneshot
ExecStart=/bin/sh /usr/local/sbin/nodenet-checks
[Install]
WantedBy=multi-user.target
"""


def _unavailable() -> str | None:
    if os.geteuid() != 0:
        return "systemd-nspawn needs root"
    for tool, package in (("systemd-nspawn", "systemd-container"), ("debootstrap", "debootstrap")):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (Debian package {package}; .ci/run installs it)"
    return None


def _rootfs() -> Path:
    """A bookworm minbase root with systemd and python3, built once and reused."""
    if (ROOTFS / ".complete").exists():
        return ROOTFS
    shutil.rmtree(ROOTFS, ignore_errors=True)
    ROOTFS.parent.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        ["debootstrap", "--variant=minbase", f"--include={PACKAGES}", SUITE, str(ROOTFS), MIRROR],
        capture_output=True,
        text=True,
        timeout=1200,
    )
    if result.returncode != 0:
        pytest.skip(
            f"cannot build a container root with debootstrap: {result.stderr.strip()[-300:]}"
        )
    (ROOTFS / ".complete").write_text("built by tests/ops/test_nspawn.py\n")
    return ROOTFS


def _phase(shared: Path) -> str:
    path = shared / "phase"
    return path.read_text().strip() if path.exists() else ""


def test_the_unit_boots_under_systemd_with_notify_socket_group_leave_and_watchdog(root):
    missing = _unavailable()
    if missing:
        pytest.skip(missing)
    rootfs = _rootfs()
    print(f"\ntest directory {root}")
    stage = root / "stage"
    install = subprocess.run(
        ["make", "install", f"DESTDIR={stage}", "PREFIX=/opt/nodenet"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert install.returncode == 0, install.stderr[-2000:]
    for source, target in (
        ("etc/systemd/system/nodenetd.service", "etc/systemd/system/nodenetd.service"),
        ("usr/lib/sysusers.d/nodenet.conf", "usr/lib/sysusers.d/nodenet.conf"),
        ("usr/lib/tmpfiles.d/nodenet.conf", "usr/lib/tmpfiles.d/nodenet.conf"),
    ):
        (rootfs / target).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(stage / source, rootfs / target)
    (rootfs / "usr/local/sbin/nodenet-checks").write_text(CHECKS)
    (rootfs / "etc/systemd/system/nodenet-checks.service").write_text(UNIT)
    wants = rootfs / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    (wants / "nodenet-checks.service").unlink(missing_ok=True)
    (wants / "nodenet-checks.service").symlink_to("/etc/systemd/system/nodenet-checks.service")
    for leftover in ("etc/nodenet/nodenet.toml", "var/lib/nodenet"):
        target = rootfs / leftover
        shutil.rmtree(target, ignore_errors=True) if target.is_dir() else target.unlink(
            missing_ok=True
        )

    host = DaemonProcess(node_dir(root, "host", profile="lan")).start()
    host_port = host.config.read_text().split("port = ")[1].split("\n")[0]
    shared = root / "shared"
    shared.mkdir()
    shutil.copy2(host.directory / "keyring", shared / "keyring")
    (shared / "nodenet.toml").write_text(
        f'[node]\nname = "ctr"\n[network]\nbind = "127.0.0.1"\nport = {free_port()}\n'
        f'seeds = ["127.0.0.1:{host_port}"]\n'
    )
    assert CLUSTER_KEY.text in (shared / "keyring").read_text()
    log = (root / "nspawn.log").open("wb")
    container = subprocess.Popen(
        [
            "systemd-nspawn",
            "-D",
            str(rootfs),
            "-b",
            "--register=no",
            "--keep-unit",
            "--console=pipe",
            f"--bind-ro={stage / 'opt/nodenet'}:/opt/nodenet",
            f"--bind={shared}:/shared",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_until(
            lambda: _phase(shared) == "joined" or container.poll() is not None,
            timeout=180,
            what="container up",
        )
        assert _phase(shared) == "joined", (root / "nspawn.log").read_text()[-3000:]
        wait_until(
            lambda: host.peers().get("ctr") == "alive",
            timeout=30,
            what="host sees the container node",
        )
        started = time.monotonic()
        (shared / "go-watchdog").touch()
        wait_until(lambda: _phase(shared) == "restarted", timeout=120, what="watchdog restart")
        print(f"\nwatchdog restart of a SIGSTOPped nodenetd in {time.monotonic() - started:.1f} s")
        wait_until(
            lambda: host.peers().get("ctr") == "alive",
            timeout=60,
            what="restarted node alive again",
        )
        (shared / "go-stop").touch()
        wait_until(
            lambda: host.peers().get("ctr") == "left",
            timeout=60,
            what="host sees LEFT after systemctl stop",
        )
        wait_until(lambda: container.poll() is not None, timeout=120, what="container powered off")
    finally:
        if container.poll() is None:
            container.terminate()
            container.wait(timeout=60)
        log.close()
        host.kill()
    result = dict(
        line.split("=", 1) for line in (shared / "result").read_text().splitlines() if "=" in line
    )
    print({k: v for k, v in result.items() if k != "peers"})
    assert result["start"] == "0"
    assert result["active"] == "active"  # Type=notify: active only after READY=1
    assert "active (running)" in result["status"]
    assert result["socket"] == "nodenet 660"
    assert "ctr" in result["peers"]
    assert "host" in result["peers"]  # alice, a member of group nodenet, used the API
    assert result["status_text"].startswith("2 alive"), result["status_text"]
    # prometheus-client's process collector reads /proc/stat: the sandbox must allow it.
    assert int(result["process_metrics"]) >= 5, result["process_metrics"]
    assert int(result["restarts"]) >= 1
    old, new = result["pids"].split()
    assert old != new
    assert result["active_again"] == "active"
    assert result["stop"] == "0"
    assert int(result["journal"]) >= 1
