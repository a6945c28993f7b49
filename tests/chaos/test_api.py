"""The local HTTP API against hostile and random clients.

schemathesis generates requests from the daemon's own `/openapi.json` (examples, coverage,
fuzzing and stateful phases, for a time budget: 30 s in CI, 5 minutes in soak) against a
real daemon's TCP listener (`api.tcp`). Three endpoints are left out of the generated
traffic and tested by hand: `POST /v1/join` (it would make the daemon connect to whatever
addresses are generated, and this suite only ever talks to loopback), `POST /v1/leave` (it
stops the daemon) and `GET /v1/events` (an endless stream).

Then the limits docs/api.md promises: request bodies over 64 KiB on the membership
endpoints and over 8 MiB on /v1/entries get 413, whether announced by Content-Length or
sent chunked; over-long keys, paths and headers get a 4xx, never a 5xx.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from chaos.harness import API_TOKENS, Cluster, Node, figure, scaled

pytestmark = pytest.mark.slow

BUDGET_S = scaled(30, 300)
EXCLUDED = ("/v1/join", "/v1/leave", "/v1/events")


def tcp_port(node: Node) -> int:
    for line in node.config.read_text().splitlines():
        if line.startswith("tcp = "):
            return int(line.split('"')[1].rsplit(":", 1)[1])
    raise AssertionError("no api.tcp in the config")


@pytest.fixture(scope="module")
def daemon() -> Iterator[Node]:
    with Cluster(1, api_tcp=True) as cluster:
        cluster.start()
        yield cluster[0]


@pytest.fixture(scope="module")
def schemathesis_run(daemon: Node) -> dict[str, Any]:
    st = shutil.which("schemathesis") or str(Path(sys.executable).parent / "schemathesis")
    if not Path(st).exists():
        pytest.skip("schemathesis is not installed (pip install schemathesis: the test extra)")
    report = Path(tempfile.mkdtemp(prefix="nnst")) / "report.json"
    command = [
        st,
        "run",
        f"http://127.0.0.1:{tcp_port(daemon)}/openapi.json",
        "--checks",
        "all",
        *[arg for path in EXCLUDED for arg in ("--exclude-path", path)],
        "--max-time",
        str(BUDGET_S),
        "--seed",
        "8",
        "--request-timeout",
        "10",
        "--output-sanitize",
        "false",
        "--output-truncate",
        "true",
        "--max-failures",
        "500",
        "--report",
        "json",
        "--report-json-path",
        str(report),
        "--header",
        f"Authorization: Bearer {API_TOKENS['admin']}",
    ]
    result = subprocess.run(  # in a scratch directory: schemathesis keeps a cache in its cwd
        command, capture_output=True, text=True, timeout=BUDGET_S + 120, cwd=report.parent
    )
    body = json.loads(report.read_text())
    shutil.rmtree(report.parent, ignore_errors=True)
    body["output"] = result.stdout + result.stderr
    cases = body["test_cases"]
    figure(
        f"api: schemathesis {body['schemathesis_version']}, {BUDGET_S} s:"
        f" {cases['generated']} requests to {body['operations']['tested']} operations,"
        f" {cases['unique_failures']} unique failures"
    )
    for failure in body["failures"]:
        figure(
            f"api:   {failure['code']} {failure['title']} ×{failure['count']}:"
            f" {', '.join(failure['operations'])}"
        )
    body["daemon_alive"] = daemon.exit_code() is None
    return body


def _reproductions(output: str, code: str) -> list[str]:
    """The curl commands schemathesis printed for failures of `code`."""
    found = []
    for block in re.split(r"\n\d+\. Test Case ID", output):
        if code in block and (code != "ST101" or re.search(r"\[5\d\d\]", block)):
            found += re.findall(r"^\s+(curl .*)$", block, re.MULTILINE)
    return found


def test_given_generated_requests_then_no_server_error(schemathesis_run, daemon):
    errors = [f for f in schemathesis_run["failures"] if f["code"] == "ST101"]
    assert schemathesis_run["daemon_alive"], daemon.daemon.log()[-3000:]
    assert not errors, "HTTP 5xx answers:\n" + "\n".join(
        _reproductions(schemathesis_run["output"], "ST101")
    )


def test_given_generated_requests_then_every_answer_conforms_to_the_openapi_document(
    schemathesis_run,
):
    """Status codes, content types and bodies as `/openapi.json` declares them, and 405
    with an `Allow` header naming every method the path serves."""
    conformance = {"ST103", "ST104", "ST105", "ST106", "ST107", "ST204", "ST205"}
    failures = [f for f in schemathesis_run["failures"] if f["code"] in conformance]
    assert not failures, "\n".join(
        f"{f['code']} {f['title']}: {', '.join(f['operations'])}" for f in failures
    )


# --- limits ---------------------------------------------------------------------------------


def _chunks(data: bytes, size: int = 65536) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


LIMIT_CASES = [
    ("POST", "/v1/join", {"addresses": ["127.0.0.1:1" + "0" * (70 * 1024)]}),
    ("PATCH", "/v1/self/tags", {"set": {"big": "x" * (70 * 1024)}}),
    ("POST", "/v1/keys", {"key": "A" * (70 * 1024)}),
    ("POST", "/v1/entries", {"key": "big", "value": "x" * (8 * 1024 * 1024 + 1024)}),
]


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize(("method", "path", "body"), LIMIT_CASES, ids=[c[1] for c in LIMIT_CASES])
def test_given_a_body_over_the_limit_then_413(daemon, method, path, body, chunked):
    data = json.dumps(body).encode()
    content = _chunks(data) if chunked else data
    with httpx.Client(
        base_url=f"http://127.0.0.1:{tcp_port(daemon)}",
        timeout=30,
        headers={"Authorization": f"Bearer {API_TOKENS['admin']}"},
    ) as client:
        response = client.request(
            method, path, content=content, headers={"content-type": "application/json"}
        )
    figure(
        f"api: {method} {path} with a {len(data) / 1024:.0f} KiB body"
        f" ({'chunked' if chunked else 'Content-Length'}): HTTP {response.status_code}"
    )
    assert response.status_code == 413, response.text
    assert response.json()["error"]["code"] == "too_large"


def _raw(port: int, request: bytes) -> bytes:
    data = b""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        try:  # the server may answer and close before it has read everything
            sock.sendall(request)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        try:
            while chunk := sock.recv(65536):
                data += chunk
        except OSError:
            pass
    return data


@pytest.mark.parametrize(
    ("what", "request_bytes"),
    [
        ("a 70 KB path", b"GET /v1/entries/" + b"k" * 70_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"),
        (
            "a 1 MB header",
            b"GET /v1/self HTTP/1.1\r\nHost: x\r\nX-Big: " + b"h" * 1_000_000 + b"\r\n\r\n",
        ),
        (
            "10,000 headers",
            b"GET /v1/self HTTP/1.1\r\nHost: x\r\n" + b"X-A: b\r\n" * 10_000 + b"\r\n",
        ),
        ("a request line of garbage", b"\x00\xff\x16\x03\x01 junk\r\n\r\n"),
    ],
)
def test_given_oversized_or_garbage_requests_then_no_server_error(daemon, what, request_bytes):
    answer = _raw(tcp_port(daemon), request_bytes)
    status = answer.split(b"\r\n", 1)[0].decode(errors="replace")
    figure(f"api: {what}: {status or 'connection closed without an answer'}")
    assert not re.match(r"HTTP/1\.1 5\d\d", status), status
    assert daemon.exit_code() is None
    with daemon.api() as client:
        assert client.get("/health").status_code == 200


def test_given_an_over_long_key_then_400_naming_the_limit(daemon):
    with daemon.api() as client:
        response = client.post("/v1/entries", json={"key": "k" * 257, "value": "v"})
    assert response.status_code == 400
    assert "256" in response.json()["error"]["message"]


def test_join_and_leave_answer_as_documented(daemon):
    with daemon.api() as client:
        response = client.post("/v1/join", json={"addresses": ["127.0.0.1:1"]})
        assert response.status_code == 502, response.text
        assert response.json()["error"]["code"] == "join_failed"
        assert client.post("/v1/join", json={"addresses": ["not an address"]}).status_code == 400
        assert client.post("/v1/join", json={"addresses": []}).status_code == 422
        with client.stream("GET", "/v1/events") as events:
            assert events.status_code == 200
            assert events.headers["content-type"].startswith("text/event-stream")


def test_bearer_tokens_and_roles_on_the_tcp_listener(daemon):
    """DESIGN §4: the TCP listener takes bearer tokens carrying a role (read, write, admin);
    /metrics and /health need none. Where tokens are not implemented, say so with the
    evidence rather than pass silently."""

    def call(method: str, path: str, token: str | None, **kw: Any) -> int:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        with httpx.Client(base_url=f"http://127.0.0.1:{tcp_port(daemon)}", timeout=10) as c:
            return c.request(method, path, headers=headers, **kw).status_code

    write = {"json": {"key": "token/x", "value": "v"}}
    anonymous = call("POST", "/v1/entries", None, **write)
    bogus = call("POST", "/v1/entries", "not-a-token", **write)
    statuses = {
        "write, no token": anonymous,
        "write, bogus token": bogus,
        "write, read token": call("POST", "/v1/entries", API_TOKENS["read"], **write),
        "read, read token": call("GET", "/v1/self", API_TOKENS["read"]),
        "write, write token": call("POST", "/v1/entries", API_TOKENS["write"], **write),
        "keyring, write token": call("GET", "/v1/keys", API_TOKENS["write"]),
        "keyring, admin token": call("GET", "/v1/keys", API_TOKENS["admin"]),
        "metrics, no token": call("GET", "/metrics", None),
    }
    figure(f"api: tokens and roles over TCP: {statuses}")
    assert statuses == {
        "write, no token": 401,
        "write, bogus token": 401,
        "write, read token": 403,
        "read, read token": 200,
        "write, write token": 200,
        "keyring, write token": 403,
        "keyring, admin token": 200,
        "metrics, no token": 200,
    }
