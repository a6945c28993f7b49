"""Disk full: a node whose LMDB directory (`<state_dir>/state`) is a small tmpfs. Submits
fail with HTTP 507 and a message that says what happened, the daemon stays up and serves
reads, and writes work again once space returns (the tmpfs is grown with a remount).
No acknowledged entry is lost on the way, and the LMDB verifies afterwards."""

from __future__ import annotations

import base64
import time

import pytest
from chaos.harness import Cluster, figure, tmpfs, verify_state

pytestmark = pytest.mark.slow

VALUE = base64.b64encode(b"\x5a" * 60_000).decode()  # near the 64 KiB default limit


def test_given_a_full_disk_then_507_reads_keep_working_and_writes_recover():
    with Cluster(1) as cluster:
        node = cluster[0]
        state = node.directory / "state"
        try:
            mount = tmpfs(state, "8m")
            resize = mount.__enter__()
        except PermissionError as exc:
            pytest.skip(f"cannot mount a small tmpfs here: {exc}")
        try:
            cluster.start()
            acked: dict[str, str] = {}
            refusal = None
            with node.api() as client:
                for i in range(400):
                    response = client.post(
                        "/v1/entries", json={"key": f"fill/{i:04d}", "value_b64": VALUE}
                    )
                    if response.status_code == 200:
                        acked[f"fill/{i:04d}"] = response.json()["id"]
                        continue
                    refusal = response
                    break
                assert refusal is not None, "8 MiB never filled up"
                body = refusal.json()
                figure(
                    f"disk full: {len(acked)} values of 60 KB fit in an 8 MiB tmpfs; the next"
                    f" submit got HTTP {refusal.status_code}: {body}"
                )
                assert refusal.status_code == 507, refusal.text
                assert body["error"]["code"] == "insufficient_storage"
                # Reads keep working, and the daemon keeps running.
                last = sorted(acked)[-1]
                assert client.get(f"/v1/entries/{last}").json()["id"] == acked[last]
                listed = client.get("/v1/entries", params={"prefix": "fill/", "limit": 1000})
                assert len(listed.json()["entries"]) == len(acked)
                summary = client.get("/v1/store").json()
                health = client.get("/health")
                figure(
                    f"disk full: reads still served (a key, a listing of {len(acked)}, the"
                    f" store summary {summary['entries']} heads); /health answers"
                    f" {health.status_code} {health.json()}"
                )
                refused = sum(
                    client.post("/v1/entries", json={"key": f"more/{i}", "value": "x"}).status_code
                    == 507
                    for i in range(5)
                )
                figure(f"disk full: {refused} of 5 small submits refused while full")
                assert node.exit_code() is None
                resize("64m")
                resumed = time.monotonic()
                response = client.post("/v1/entries", json={"key": "after/space", "value": "back"})
                figure(
                    f"disk full: after growing the tmpfs to 64 MiB the next submit got HTTP"
                    f" {response.status_code} in {time.monotonic() - resumed:.2f} s"
                )
                assert response.status_code == 200, response.text
                acked["after/space"] = response.json()["id"]
                health = client.get("/health")
                assert health.status_code == 200, health.text
            present = node.entries("")
            assert all(present.get(k) == v for k, v in acked.items())
            node.kill9()
            verified = verify_state(state)
            figure(f"disk full: LMDB verified after kill -9: {verified} entries")
            assert verified >= len(acked)
        finally:
            node.kill9()
            mount.__exit__(None, None, None)
