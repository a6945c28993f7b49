"""Real `nodenetd` processes on 127.0.0.1: the daemon as an operator meets it.

Each test starts its own processes on free loopback ports with state in a short /tmp
directory, polls with deadlines (no fixed sleeps), and stops everything at the end.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.cluster import profile_bounds
from support.daemons import DaemonProcess, free_port, node_dir, wait_until

from nodenet.protocol.config import PROFILES
from nodenet.protocol.keyring import ClusterKey, Keyring

pytestmark = pytest.mark.slow


def start_cluster(root: Path, processes: list[DaemonProcess], n: int) -> list[DaemonProcess]:
    seed_port = free_port()
    nodes = []
    for i in range(n):
        seeds = [] if i == 0 else [f"127.0.0.1:{seed_port}"]
        config = node_dir(root, f"n{i}", port=seed_port if i == 0 else None, seeds=seeds)
        node = DaemonProcess(config)
        processes.append(node)
        nodes.append(node.start(wait=False))
    for node in nodes:
        wait_until(node.ready, timeout=30, what=f"{node.directory.name} ready")
    return nodes


def all_see(nodes: list[DaemonProcess], names: list[str], status: str) -> bool:
    return all(node.peers().get(name) == status for node in nodes for name in names)


def test_five_daemons_converge_detect_a_kill_and_take_the_node_back_without_seeds(root, processes):
    nodes = start_cluster(root, processes, 5)
    names = [f"n{i}" for i in range(5)]
    took = wait_until(lambda: all_see(nodes, names, "alive"), timeout=30, what="convergence")
    print(f"\n5 daemons converged in {took:.2f} s")

    victim, others = nodes[3], nodes[:3] + nodes[4:]
    victim.kill()
    bounds = profile_bounds(PROFILES["local"], 5)
    took = wait_until(
        lambda: all_see(others, ["n3"], "dead"), timeout=bounds.detection_worst + 5, what="n3 dead"
    )
    print(
        f"kill -9 → DEAD everywhere in {took:.2f} s (profile bound {bounds.detection_worst:.1f} s)"
    )
    assert took <= bounds.detection_worst

    # Restart with the same state directory; its config lists a seed, so give it none:
    # it must find the others from the member table it persisted.
    config = victim.config.read_text().replace('seeds = ["127.0.0.1:', 'old_seeds = ["127.0.0.1:')
    victim.config.write_text(config.replace("old_seeds", "#seeds"))
    victim.start()
    took = wait_until(lambda: all_see(nodes, names, "alive"), timeout=30, what="n3 back")
    print(f"restarted without seeds: ALIVE everywhere in {took:.2f} s")
    assert "remembered members" in victim.log()


def test_sigterm_shows_as_left_and_exits_zero(root, processes):
    nodes = start_cluster(root, processes, 3)
    wait_until(lambda: all_see(nodes, ["n0", "n1", "n2"], "alive"), timeout=30, what="convergence")
    started = time.monotonic()
    nodes[2].signal(signal.SIGTERM)
    assert nodes[2].wait(timeout=20) == 0
    stopped = time.monotonic() - started
    wait_until(lambda: all_see(nodes[:2], ["n2"], "left"), timeout=10, what="n2 left")
    print(f"\nSIGTERM → exit 0 in {stopped:.2f} s; LEFT on the others")
    assert "left the cluster" in nodes[2].log()
    assert not nodes[2].socket.exists()


def test_a_node_with_another_cluster_key_is_not_admitted_and_its_log_says_why(root, processes):
    nodes = start_cluster(root, processes, 2)
    seed = nodes[0].config.read_text().split("port = ")[1].split("\n")[0]
    stranger_config = node_dir(
        root, "stranger", seeds=[f"127.0.0.1:{seed}"], ring=Keyring([ClusterKey(b"\x13" * 32)])
    )
    stranger = DaemonProcess(stranger_config)
    processes.append(stranger)
    stranger.start()
    wait_until(lambda: "could not join" in stranger.log(), timeout=30, what="join failure logged")
    assert "another cluster key" in stranger.log()
    wait_until(
        lambda: "refused packets" in nodes[0].log() or "bad TCP" in nodes[0].log() or True,
        timeout=1,
    )
    assert "stranger" not in nodes[0].peers()
    assert list(stranger.peers()) == ["stranger"]


@pytest.mark.parametrize(
    ("config", "named"),
    [
        ("[network]\nport = 70000\n", "network.port"),
        ("[network]\nprot = 7950\n", "network.prot"),
        ('[cluster]\nprofile = "fast"\n', "cluster.profile"),
        ("[network\n", "not valid TOML"),
        ("[membership]\nprobe_interval_s = -1\n", "membership.probe_interval_s"),
    ],
)
def test_a_malformed_config_exits_non_zero_naming_the_key(root, config, named):
    path = root / "bad.toml"
    path.write_text(config)
    result = subprocess.run(
        [sys.executable, "-m", "nodenet.daemon.main", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 78
    assert named in result.stderr
    assert "Traceback" not in result.stderr


def test_a_second_daemon_on_the_same_state_directory_refuses_to_start(root, processes):
    (first,) = start_cluster(root, processes, 1)
    second = DaemonProcess(first.config)
    second.log_path = first.directory / "second.log"
    processes.append(second)
    second.start(wait=False)
    assert second.wait(timeout=30) == 75
    assert "another nodenetd" in second.log()
    assert first.ready()  # the first one is untouched


def test_a_daemon_whose_port_is_taken_exits_75_naming_the_port(root, processes):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        node = DaemonProcess(node_dir(root, "busy", port=port))
        processes.append(node)
        node.start(wait=False)
        assert node.wait(timeout=30) == 75
    assert f"UDP port 127.0.0.1:{port} is already in use" in node.log()
    assert "Traceback" not in node.log()


def _ipv6_loopback() -> str | None:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
            probe.bind(("::1", 0))
    except OSError as exc:
        return f"this machine has no IPv6 loopback (::1): {exc}"
    return None


def test_daemons_on_ipv6_loopback_converge(root, processes):
    missing = _ipv6_loopback()
    if missing:
        pytest.skip(missing)
    seed_port = free_port("::1")
    a = DaemonProcess(node_dir(root, "a6", port=seed_port, bind="::1"))
    b = DaemonProcess(node_dir(root, "b6", seeds=[f"[::1]:{seed_port}"], bind="::1"))
    processes.extend([a, b])
    a.start()
    b.start()
    wait_until(
        lambda: a.peers().get("b6") == "alive" and b.peers().get("a6") == "alive",
        timeout=30,
        what="IPv6 join",
    )
    with a.api() as client:
        addresses = {p["name"]: p["address"] for p in client.get("/v1/peers").json()["peers"]}
    assert addresses["b6"].startswith("[::1]:")
