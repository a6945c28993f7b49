"""ApiClient against the fake API: targets, JSON in and out, the two kinds of failure, and
server-sent events."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
from support.fake_api import SELF, EventStream, FakeApi, error

from nodenet.cli.client import ApiClient, ApiError, Unreachable, default_target, parse_sse
from nodenet.daemon.paths import default_api_socket


def test_when_get_with_a_query_then_parsed_json_and_repeated_parameters(api: str, fake: FakeApi):
    client = ApiClient(api)
    assert client.get("/v1/self") == SELF
    client.get("/v1/peers", query={"status": ["alive", "dead"], "name": None, "tag": []})
    assert fake.requests[-1].query == {"status": ["alive", "dead"]}


def test_when_post_patch_delete_then_json_bodies_and_methods(api: str, fake: FakeApi):
    fake.respond("DELETE", "/v1/keys/x", 200, {"ok": True})
    client = ApiClient(api)
    client.post("/v1/join", {"addresses": ["10.0.0.1:7950"]})
    client.patch("/v1/self/tags", {"set": {"a": "b"}, "delete": []})
    assert client.delete("/v1/keys/x") == {"ok": True}
    sent = [(r.method, r.body, r.headers.get("content-type")) for r in fake.requests]
    assert sent == [
        ("POST", {"addresses": ["10.0.0.1:7950"]}, "application/json"),
        ("PATCH", {"set": {"a": "b"}, "delete": []}, "application/json"),
        ("DELETE", None, None),
    ]


def test_given_an_error_body_then_api_error_with_status_code_and_message(api: str, fake: FakeApi):
    fake.respond("GET", "/v1/self", 503, error("unavailable", "nodenetd is starting"))
    with pytest.raises(ApiError) as caught:
        ApiClient(api).get("/v1/self")
    assert (caught.value.status, caught.value.code, caught.value.message) == (
        503,
        "unavailable",
        "nodenetd is starting",
    )


def test_given_an_error_without_the_error_shape_then_api_error_naming_the_status(
    api: str, fake: FakeApi
):
    fake.respond("GET", "/v1/self", 500, b"Internal Server Error")
    with pytest.raises(ApiError) as caught:
        ApiClient(api).get("/v1/self")
    assert caught.value.code == "http_500"
    assert "Internal Server Error" in caught.value.message


def test_given_a_success_that_is_not_json_then_api_error_suggesting_the_target(
    api: str, fake: FakeApi
):
    fake.respond("GET", "/v1/self", 200, b"<html>")
    with pytest.raises(ApiError, match="not JSON"):
        ApiClient(api).get("/v1/self")


def test_given_a_daemon_that_never_answers_then_unreachable_after_the_timeout(short_dir: str):
    path = f"{short_dir}/stuck.sock"
    with socket.socket(socket.AF_UNIX) as stuck:
        stuck.bind(path)
        stuck.listen()  # accepts into the backlog, never answers
        with pytest.raises(Unreachable) as caught:
            ApiClient(path, timeout_s=0.2).get("/v1/self")
    assert caught.value.reason == "no answer within 0.2 s"
    assert "is it running?" in caught.value.hint


def test_given_a_missing_socket_then_unreachable_no_such_file(short_dir: str):
    with pytest.raises(Unreachable) as caught:
        ApiClient(f"{short_dir}/none.sock").get("/v1/self")
    assert caught.value.reason == "no such file"


def test_given_permission_denied_then_the_hint_names_the_group():
    error = Unreachable("/run/nodenet/api.sock", "permission denied")
    assert "nodenet group" not in error.hint
    assert "usermod -aG nodenet" in error.hint


def test_given_no_target_then_nodenet_api_else_the_daemons_default_socket(
    monkeypatch: pytest.MonkeyPatch,
):
    assert default_target({"NODENET_API": "/x/api.sock"}) == "/x/api.sock"
    env = {"XDG_RUNTIME_DIR": "/run/user/1000"}
    assert default_target(env) == str(default_api_socket(environ=env))
    monkeypatch.setenv("NODENET_API", "http://127.0.0.1:7951")
    assert ApiClient().target == "http://127.0.0.1:7951"


def test_given_no_daemon_of_our_own_but_the_system_service_then_its_socket(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    # A user in group nodenet runs `nodenet status` against the packaged service.
    monkeypatch.setattr(os, "geteuid", lambda: 1000)  # as root, our own socket is the system's
    env = {"XDG_RUNTIME_DIR": str(tmp_path / "run-user")}
    own = default_api_socket(environ=env)
    system = tmp_path / "run-nodenet" / "api.sock"
    assert default_target(env, system_socket=system) == str(own)  # neither: ours, for the hint
    system.parent.mkdir()
    system.touch()
    assert default_target(env, system_socket=system) == str(system)
    own.parent.mkdir(parents=True)
    own.touch()
    assert default_target(env, system_socket=system) == str(own)  # our own daemon first


@pytest.mark.parametrize("target", ["https://127.0.0.1:7951", "ftp://x", "http://127.0.0.1/v1"])
def test_given_a_url_that_is_not_plain_http_then_value_error(target: str):
    with pytest.raises(ValueError, match=r"unix socket path or http://127\.0\.0\.1:PORT"):
        ApiClient(target)


def test_when_streaming_then_events_parsed_and_last_event_id_sent(api: str, fake: FakeApi):
    fake.respond(
        "GET",
        "/v1/events",
        200,
        EventStream(
            ': keepalive\n\nid: 17\nevent: member\ndata: {"kind": "suspected"}\n\nevent: reset\n\n'
        ),
    )
    events = list(ApiClient(api).stream("/v1/events", last_event_id="16"))
    assert events == [
        {"id": "17", "event": "member", "data": {"kind": "suspected"}},
        {"id": None, "event": "reset", "data": None},
    ]
    assert fake.only_request().headers["last-event-id"] == "16"
    assert fake.only_request().headers["accept"] == "text/event-stream"


def test_given_an_error_when_streaming_then_api_error(api: str, fake: FakeApi):
    fake.respond("GET", "/v1/events", 400, error("bad_request", "after: not a number"))
    with pytest.raises(ApiError, match="after: not a number"):
        next(ApiClient(api).stream("/v1/events", query={"after": "x"}))


def test_sse_parsing_follows_the_spec_for_comments_multiline_data_and_crlf():
    lines = [
        b": comment\r\n",
        b"data: first line\r\n",
        b"data:second line\r\n",
        b"ignored-field: x\r\n",
        b"\r\n",
        b"id: 3\n",
        b"data: [1, 2]\n",
        b"\n",
        b"\n",
    ]
    assert list(parse_sse(lines)) == [
        {"id": None, "event": "message", "data": "first line\nsecond line"},
        {"id": "3", "event": "message", "data": [1, 2]},
    ]
