"""A real Prometheus server scraping a real nodenetd on 127.0.0.1, and the shipped rules."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
from support.daemons import DaemonProcess, free_port, node_dir, wait_until

MONITORING = Path(__file__).resolve().parents[2] / "docs" / "monitoring"
pytestmark = pytest.mark.slow


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(
            f"{name} is not installed here (Debian package prometheus; .ci/run installs it)"
        )
    return path


def test_the_shipped_alert_rules_and_scrape_config_are_valid(tmp_path: Path):
    promtool = _tool("promtool")
    rules = subprocess.run(
        [promtool, "check", "rules", str(MONITORING / "nodenet.rules.yml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert rules.returncode == 0, rules.stdout + rules.stderr
    config = tmp_path / "prometheus.yml"
    config.write_text(
        (MONITORING / "prometheus.yml")
        .read_text()
        .replace("/etc/prometheus/rules/nodenet.rules.yml", str(MONITORING / "nodenet.rules.yml"))
    )
    checked = subprocess.run(
        [promtool, "check", "config", str(config)], capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_prometheus_scrapes_nodenet_series_from_a_running_daemon(root):
    prometheus = _tool("prometheus")
    api_port, web_port = free_port(), free_port()
    node = DaemonProcess(node_dir(root, "scraped", api_tcp=f"127.0.0.1:{api_port}"))
    config = root / "prometheus.yml"
    config.write_text(
        f"""
global:
  scrape_interval: 1s
scrape_configs:
  - job_name: nodenet
    static_configs:
      - targets: ["127.0.0.1:{api_port}"]
rule_files:
  - {MONITORING / "nodenet.rules.yml"}
"""
    )
    server = None
    log = (root / "prometheus.log").open("wb")
    try:
        node.start()
        server = subprocess.Popen(
            [
                prometheus,
                f"--config.file={config}",
                f"--storage.tsdb.path={root / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{web_port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )

        def members_series() -> list:
            response = httpx.get(
                f"http://127.0.0.1:{web_port}/api/v1/query",
                params={"query": "nodenet_members"},
                timeout=2,
            )
            return response.json()["data"]["result"]

        took = wait_until(
            lambda: len(members_series()) == 4, timeout=60, what="nodenet_members scraped"
        )
        print(f"\nPrometheus had nodenet_members from nodenetd {took:.1f} s after starting")
        states = {r["metric"]["state"] for r in members_series()}
        assert states == {"alive", "suspect", "dead", "left"}
        up = httpx.get(
            f"http://127.0.0.1:{web_port}/api/v1/query", params={"query": "up"}, timeout=2
        ).json()
        assert up["data"]["result"][0]["value"][1] == "1"
        rules = httpx.get(f"http://127.0.0.1:{web_port}/api/v1/rules", timeout=2).json()
        assert len(rules["data"]["groups"][0]["rules"]) >= 9
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=20)
        log.close()
        node.stop()
