"""The commands that talk to nodenetd, run against the fake API: requests sent, text printed,
exit codes (0 ok, 1 API error, 2 usage, 69 unreachable)."""

from __future__ import annotations

import json
import socket

import pytest
from support.fake_api import KEYS, PEERS, SELF, FakeApi, error, serving
from typer.testing import CliRunner

from nodenet.cli.main import app
from nodenet.protocol.keyring import ClusterKey

runner = CliRunner()


def _flat(text: str) -> str:
    """Usage errors are drawn in a box and wrapped: keep only the words."""
    return " ".join(text.translate({ord(c): " " for c in "│╭╮╰╯─"}).split())


EVERY_API_COMMAND = [
    ["peers"],
    ["status"],
    ["join", "10.0.0.9:7950"],
    ["leave"],
    ["tags", "set", "role=db"],
    ["tags", "delete", "role"],
    ["keys", "list"],
    ["keys", "install", ClusterKey(bytes(32)).text],
    ["keys", "use", "94153013"],
    ["keys", "remove", "5f0e2a1c"],
]


def test_given_three_members_when_peers_then_aligned_columns_sorted_by_name(
    api: str, fake: FakeApi
):
    result = runner.invoke(app, ["peers", "--api", api])
    assert result.exit_code == 0, result.output
    assert result.stdout == (
        "NAME        ID          ADDRESS         STATUS   TAGS\n"
        "db-primary  bbbbbbbbbb  10.0.0.17:7950  alive\n"
        "web-1       aaaaaaaaaa  10.0.0.5:7950   alive    role=web\n"
        "web-2       cccccccccc  [fd00::7]:7950  suspect  dc=eu-west,role=web\n"
    )
    assert "\x1b[" not in result.stdout  # not a terminal: no colour
    assert fake.only_request().query == {}


def test_given_filters_when_peers_then_they_become_query_parameters(api: str, fake: FakeApi):
    args = ["--status", "alive", "--status", "suspect", "--tag", "role=web"]
    args += ["--tag", "dc=eu-.*", "--name", "web-[0-9]+"]
    result = runner.invoke(app, ["peers", *args, "--api", api])
    assert result.exit_code == 0, result.output
    request = fake.only_request()
    assert (request.method, request.path) == ("GET", "/v1/peers")
    assert request.query == {
        "status": ["alive", "suspect"],
        "tag": ["role=web", "dc=eu-.*"],
        "name": ["web-[0-9]+"],
    }


@pytest.mark.parametrize(
    "args",
    [
        ["--tag", "role"],
        ["--tag", "=web"],
        ["--tag", "role=web("],
        ["--name", "web-["],
        ["--status", "sleepy"],
    ],
)
def test_given_a_malformed_filter_when_peers_then_usage_error_and_nothing_asked(
    api: str, fake: FakeApi, args: list[str]
):
    result = runner.invoke(app, ["peers", *args, "--api", api])
    assert result.exit_code == 2
    assert fake.requests == []


@pytest.mark.parametrize(
    ("args", "answer"),
    [(["peers"], PEERS), (["status"], SELF), (["keys", "list"], KEYS)],
)
def test_when_json_then_the_api_answer_is_printed_unchanged(
    api: str, args: list[str], answer: object
):
    result = runner.invoke(app, [*args, "--json", "--api", api])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == answer


def test_when_status_then_a_short_summary_of_self(api: str):
    result = runner.invoke(app, ["status", "--api", api])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "name       web-1"
    assert f"id         {'A' * 52}" in lines
    assert "status     alive, incarnation 3" in lines
    assert "awareness  0 (healthy)" in lines
    assert "members    2 alive, 1 suspect, 0 dead, 0 left" in lines
    assert "tags       role=web" in lines
    assert "keyring    primary 94153013, 2 keys" in lines
    assert "uptime     1h 2m" in lines
    assert "version    0.1.0 (protocol 1.0)" in lines


def test_when_join_then_addresses_posted_and_each_result_printed(api: str, fake: FakeApi):
    fake.respond(
        "POST",
        "/v1/join",
        200,
        {
            "joined": 1,
            "results": [
                {"address": "10.0.0.9:7950", "ok": True},
                {"address": "[::1]:7952", "ok": False, "error": "connection refused"},
            ],
        },
    )
    result = runner.invoke(app, ["join", "10.0.0.9:7950", "[::1]:7952", "--api", api])
    assert result.exit_code == 0, result.output
    assert fake.only_request().body == {"addresses": ["10.0.0.9:7950", "[::1]:7952"]}
    assert result.stdout == (
        "ADDRESS        RESULT\n"
        "10.0.0.9:7950  joined\n"
        "[::1]:7952     failed: connection refused\n"
        "joined 1 of 2\n"
    )


def test_given_no_address_joins_when_join_then_exit_1_with_the_api_message(api: str, fake: FakeApi):
    message = "joined none of 1 addresses: 10.0.0.9:7950: connection refused"
    fake.respond("POST", "/v1/join", 502, error("join_failed", message))
    result = runner.invoke(app, ["join", "10.0.0.9:7950", "--api", api])
    assert result.exit_code == 1
    assert result.stderr == f"nodenet: {message}\n"
    assert result.stdout == ""


def test_given_an_address_the_daemon_refuses_when_join_then_usage_error(api: str, fake: FakeApi):
    message = "'notanaddr' is not an IP address with an optional port"
    fake.respond("POST", "/v1/join", 400, error("bad_request", message))
    result = runner.invoke(app, ["join", "notanaddr", "--api", api])
    assert result.exit_code == 2  # what the user typed, as typer's usage errors
    assert result.stderr == f"nodenet: {message}\n"


def test_given_a_401_then_the_message_says_how_the_cli_sends_a_token(api: str, fake: FakeApi):
    fake.respond("GET", "/v1/peers", 401, error("unauthorized", "a bearer token is needed"))
    result = runner.invoke(app, ["peers", "--api", api])
    assert result.exit_code == 1
    assert "NODENET_API_TOKEN" in result.stderr
    assert "nodenet api-token create" in result.stderr


def test_when_join_without_address_then_usage_error():
    assert runner.invoke(app, ["join"]).exit_code == 2


def test_given_a_timeout_that_is_not_a_number_when_join_then_usage_error_naming_it(api: str):
    result = runner.invoke(app, ["join", "10.0.0.9", "--timeout", "soon", "--api", api])
    assert result.exit_code == 2
    assert "'soon' is not a valid float" in _flat(result.output)


def test_given_an_unknown_status_when_peers_then_the_choices_are_listed(api: str):
    result = runner.invoke(app, ["peers", "--status", "sleepy", "--api", api])
    assert result.exit_code == 2
    assert "'sleepy' is not one of alive, suspect, dead, left." in _flat(result.output)


def test_when_leave_then_posted_and_confirmed(api: str, fake: FakeApi):
    result = runner.invoke(app, ["leave", "--api", api])
    assert result.exit_code == 0, result.output
    request = fake.only_request()
    assert (request.method, request.path, request.body) == ("POST", "/v1/leave", None)
    assert "left the cluster" in result.stdout


def test_when_tags_set_then_patch_with_set_and_resulting_tags_printed(api: str, fake: FakeApi):
    result = runner.invoke(app, ["tags", "set", "role=db", "expr=a=b", "--api", api])
    assert result.exit_code == 0, result.output
    request = fake.only_request()
    assert (request.method, request.path) == ("PATCH", "/v1/self/tags")
    assert request.body == {"set": {"role": "db", "expr": "a=b"}, "delete": []}
    assert result.stdout == "name=web-1\nrole=db\n"


def test_when_tags_delete_then_patch_with_delete(api: str, fake: FakeApi):
    result = runner.invoke(app, ["tags", "delete", "role", "old", "--api", api])
    assert result.exit_code == 0, result.output
    assert fake.only_request().body == {"set": {}, "delete": ["role", "old"]}


def test_given_a_pair_without_equals_when_tags_set_then_usage_error(api: str, fake: FakeApi):
    assert runner.invoke(app, ["tags", "set", "role", "--api", api]).exit_code == 2
    assert fake.requests == []


def test_when_keys_list_then_ids_with_the_primary_first(api: str):
    result = runner.invoke(app, ["keys", "list", "--api", api])
    assert result.exit_code == 0, result.output
    assert result.stdout == "ID        ROLE\n94153013  primary\n5f0e2a1c  secondary\n"


def test_when_keys_install_then_key_posted_and_its_id_printed(api: str, fake: FakeApi):
    key = ClusterKey.generate()
    result = runner.invoke(app, ["keys", "install", key.text, "--api", api])
    assert result.exit_code == 0, result.output
    request = fake.only_request()
    assert (request.method, request.path, request.body) == ("POST", "/v1/keys", {"key": key.text})
    assert f"installed key {key.key_id}" in result.stdout
    assert f"nodenet keys use {key.key_id}" in result.stdout


def test_given_dash_when_keys_install_then_key_read_from_stdin(api: str, fake: FakeApi):
    key = ClusterKey.generate()
    result = runner.invoke(app, ["keys", "install", "-", "--api", api], input=key.text + "\n")
    assert result.exit_code == 0, result.output
    assert fake.only_request().body == {"key": key.text}


def test_given_a_line_of_a_keyring_file_when_keys_install_then_its_key_is_sent(
    api: str, fake: FakeApi
):
    key = ClusterKey.generate()
    line = f"{key.text}  # key id {key.key_id}"  # as `cat keyring` shows it
    result = runner.invoke(app, ["keys", "install", "-", "--api", api], input=line + "\n")
    assert result.exit_code == 0, result.output
    assert fake.only_request().body == {"key": key.text}


def test_given_a_mistyped_key_when_keys_install_then_usage_error_and_nothing_sent(
    api: str, fake: FakeApi
):
    result = runner.invoke(app, ["keys", "install", ClusterKey(bytes(32)).text[:-2], "--api", api])
    assert result.exit_code == 2
    assert fake.requests == []


@pytest.mark.parametrize(
    ("args", "method", "path", "printed"),
    [
        (["keys", "use", "5f0e2a1c"], "POST", "/v1/keys/5f0e2a1c/use", "primary key is now"),
        (["keys", "remove", "5f0e2a1c"], "DELETE", "/v1/keys/5f0e2a1c", "removed key"),
    ],
)
def test_when_keys_use_or_remove_then_the_key_id_path_is_called(
    api: str, fake: FakeApi, args: list[str], method: str, path: str, printed: str
):
    fake.respond(method, path, 200, KEYS)
    result = runner.invoke(app, [*args, "--api", api])
    assert result.exit_code == 0, result.output
    request = fake.only_request()
    assert (request.method, request.path) == (method, path)
    assert result.stdout == f"{printed} 5f0e2a1c\n"


def test_given_the_whole_key_when_keys_use_then_its_id_is_used(api: str, fake: FakeApi):
    key = ClusterKey.generate()
    fake.respond("POST", f"/v1/keys/{key.key_id}/use", 200, KEYS)
    result = runner.invoke(app, ["keys", "use", key.text, "--api", api])
    assert result.exit_code == 0, result.output
    assert fake.only_request().path == f"/v1/keys/{key.key_id}/use"


def test_given_an_api_error_when_keys_remove_then_exit_1_with_its_message(api: str, fake: FakeApi):
    message = "key 94153013 is the primary; `use` another key before removing it"
    fake.respond("DELETE", "/v1/keys/94153013", 409, error("conflict", message))
    result = runner.invoke(app, ["keys", "remove", "94153013", "--api", api])
    assert result.exit_code == 1
    assert result.stderr == f"nodenet: {message}\n"


@pytest.mark.parametrize("args", EVERY_API_COMMAND, ids=" ".join)
def test_given_a_starting_daemon_when_any_api_command_then_exit_1_with_its_message(
    api: str, fake: FakeApi, args: list[str]
):
    for method, path in [*fake.routes, ("POST", "/v1/keys/94153013/use")]:
        fake.respond(method, path, 503, error("unavailable", "nodenetd is starting; retry"))
    fake.respond("DELETE", "/v1/keys/5f0e2a1c", 503, error("unavailable", "starting; retry"))
    result = runner.invoke(app, [*args, "--api", api])
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith("nodenet: ")
    assert "retry" in result.stderr


@pytest.mark.parametrize("args", EVERY_API_COMMAND, ids=" ".join)
def test_given_no_socket_when_any_api_command_then_exit_69_and_a_one_line_hint(
    short_dir: str, args: list[str]
):
    missing = f"{short_dir}/missing.sock"
    result = runner.invoke(app, [*args, "--api", missing])
    assert result.exit_code == 69
    assert result.stderr == (
        f"nodenet: cannot reach nodenetd at {missing} (no such file); is it running?"
        " (systemctl status nodenetd) — or pass --api\n"
    )
    assert result.stdout == ""
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_given_a_socket_nobody_listens_on_when_peers_then_exit_69_connection_refused(
    short_dir: str,
):
    path = f"{short_dir}/dead.sock"
    with socket.socket(socket.AF_UNIX) as leftover:  # a daemon that died left its socket
        leftover.bind(path)
    result = runner.invoke(app, ["peers", "--api", path])
    assert result.exit_code == 69
    assert "(connection refused); is it running?" in result.stderr
    assert len(result.stderr.splitlines()) == 1


def test_given_a_closed_tcp_port_when_status_then_exit_69(short_dir: str):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = runner.invoke(app, ["status", "--api", f"http://127.0.0.1:{port}"])
    assert result.exit_code == 69
    assert "connection refused" in result.stderr


def test_given_nodenet_api_in_the_environment_then_it_is_the_default_target(
    api: str, fake: FakeApi, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("NODENET_API", api)
    assert runner.invoke(app, ["status"]).exit_code == 0
    assert len(fake.requests) == 1


def test_given_a_tcp_api_when_peers_then_same_answer(fake: FakeApi):
    with serving(fake) as target:
        result = runner.invoke(app, ["peers", "--json", "--api", target])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == PEERS


@pytest.mark.parametrize("target", ["https://127.0.0.1:7951", "http://127.0.0.1:99999"])
def test_given_an_unusable_api_address_then_usage_error(target: str):
    result = runner.invoke(app, ["peers", "--api", target])
    assert result.exit_code == 2
    assert "--api" in result.output


def test_given_an_answer_of_another_shape_then_exit_1_not_a_traceback(api: str, fake: FakeApi):
    fake.respond("GET", "/v1/keys", 200, ["not", "an", "object"])
    result = runner.invoke(app, ["keys", "list", "--api", api])
    assert result.exit_code == 1
    assert "unexpected answer from nodenetd" in result.stderr


@pytest.mark.parametrize("args", [["--nodes", "0"], ["--nodes", "65"], ["--base-port", "0"]])
def test_dev_refuses_impossible_sizes_and_ports_as_usage_errors(args: list[str]):
    result = runner.invoke(app, ["dev", *args])
    assert result.exit_code == 2, result.output


def test_a_filter_that_is_not_unicode_text_is_a_usage_error_not_a_traceback():
    result = runner.invoke(app, ["peers", "--name", "\udcff"])
    assert result.exit_code == 2
    assert "not valid" in result.output  # "… not valid Unicode text", wrapped in a box
