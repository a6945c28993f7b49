"""`nodenet submit/get/ls/delete` against the fake API's in-memory store: bodies sent, bytes
and lines printed, paging, exit codes (0 ok, 1 API error, 2 usage, 69 unreachable)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from support.fake_api import AUTHOR, FIRST_HLC, TIME, FakeApi, error
from typer.testing import CliRunner

from nodenet.cli.main import app
from nodenet.cli.store_commands import MAX_VALUE_BYTES

runner = CliRunner()

BINARY = bytes(range(256)) + b"\xff\xfe\x00\n"

EVERY_STORE_COMMAND = [
    ["submit", "app/config", "replicas=3"],
    ["get", "app/config"],
    ["ls", "app/"],
    ["delete", "app/config"],
]


def _flat(text: str) -> str:
    """Usage errors are drawn in a box and wrapped: keep only the words."""
    return " ".join(text.translate({ord(c): " " for c in "│╭╮╰╯─"}).split())


def test_given_text_when_submit_then_posted_as_value_and_one_line_printed(api: str, fake: FakeApi):
    result = runner.invoke(app, ["submit", "app/config", "replicas=3", "--api", api])
    assert result.exit_code == 0, result.output
    request = fake.only_request()
    assert (request.method, request.path) == ("POST", "/v1/entries")
    assert request.body == {"key": "app/config", "value": "replicas=3"}
    entry_id = fake.store.heads["app/config"]["id"]
    assert result.stdout == (
        f"stored app/config id {entry_id[:10]}… hlc {FIRST_HLC + 1} ({TIME})\n"
    )


def test_when_submit_json_then_the_api_answer_unchanged(api: str, fake: FakeApi):
    result = runner.invoke(app, ["submit", "k", "v", "--json", "--api", api])
    assert result.exit_code == 0, result.output
    answer = json.loads(result.stdout)
    assert answer == {key: fake.store.heads["k"][key] for key in answer}
    assert set(answer) == {"key", "id", "author", "hlc", "time", "deleted"}


@pytest.mark.parametrize(
    ("content", "body_field"),
    [(BINARY, "value_b64"), ("naïve café\n".encode(), "value"), (b"", "value")],
    ids=["binary", "utf-8", "empty"],
)
def test_given_a_file_when_submit_then_utf8_as_value_and_other_bytes_as_base64(
    api: str, fake: FakeApi, tmp_path: Path, content: bytes, body_field: str
):
    path = tmp_path / "value"
    path.write_bytes(content)
    result = runner.invoke(app, ["submit", "blob", "--file", str(path), "--api", api])
    assert result.exit_code == 0, result.output
    body = fake.only_request().body
    assert set(body) == {"key", body_field}
    sent = base64.b64decode(body["value_b64"]) if "value_b64" in body else body["value"].encode()
    assert sent == content


@pytest.mark.parametrize("args", [["-"], ["--file", "-"]])
def test_given_dash_when_submit_then_stdin_is_read_as_bytes(
    api: str, fake: FakeApi, args: list[str]
):
    result = runner.invoke(app, ["submit", "blob", *args, "--api", api], input=BINARY)
    assert result.exit_code == 0, result.output
    assert base64.b64decode(fake.only_request().body["value_b64"]) == BINARY


@pytest.mark.parametrize(
    "args",
    [[], ["text", "--file", "x"], ["-", "--file", "x"]],
    ids=["no value", "value and file", "stdin and file"],
)
def test_given_not_exactly_one_value_source_when_submit_then_usage_error_and_nothing_sent(
    api: str, fake: FakeApi, args: list[str]
):
    result = runner.invoke(app, ["submit", "k", *args, "--api", api])
    assert result.exit_code == 2
    assert "exactly one of them" in _flat(result.output)
    assert fake.requests == []


def test_given_a_missing_file_when_submit_then_usage_error_naming_it(
    api: str, fake: FakeApi, tmp_path: Path
):
    missing = tmp_path / "missing"
    result = runner.invoke(app, ["submit", "k", "--file", str(missing), "--api", api])
    assert result.exit_code == 2
    assert f"cannot read {missing}: No such file or directory" in _flat(result.output)
    assert fake.requests == []


def test_given_a_value_over_the_limit_when_submit_then_exit_1_with_the_api_message(
    api: str, fake: FakeApi
):
    result = runner.invoke(app, ["submit", "k", "-", "--api", api], input=b"x" * 70_000)
    assert result.exit_code == 1
    assert result.stderr == (
        "nodenet: value is 70000 bytes; the limit is 65536 (store.max_value)\n"
    )
    assert result.stdout == ""


def test_given_more_than_any_daemon_stores_when_submit_then_exit_1_before_sending(
    api: str, fake: FakeApi, tmp_path: Path
):
    path = tmp_path / "huge"
    path.write_bytes(b"\0" * (MAX_VALUE_BYTES + 1))
    result = runner.invoke(app, ["submit", "k", "--file", str(path), "--api", api])
    assert result.exit_code == 1
    assert f"is over {MAX_VALUE_BYTES} bytes" in result.stderr
    assert fake.requests == []


def test_given_a_binary_value_when_get_then_the_exact_bytes_without_newline(
    api: str, fake: FakeApi
):
    fake.store.write("blob", BINARY)
    result = runner.invoke(app, ["get", "blob", "--api", api])
    assert result.exit_code == 0, result.output
    assert result.stdout_bytes == BINARY
    assert fake.only_request().path == "/v1/entries/blob"


@pytest.mark.parametrize(
    ("key", "path"),
    [
        ("app/web/replicas", "/v1/entries/app/web/replicas"),
        ("a key?#%", "/v1/entries/a%20key%3F%23%25"),
        ("東京/x", "/v1/entries/%E6%9D%B1%E4%BA%AC/x"),
    ],
)
def test_given_any_key_when_submit_then_get_then_the_path_is_encoded_and_the_value_returns(
    api: str, fake: FakeApi, key: str, path: str
):
    assert runner.invoke(app, ["submit", key, "v1", "--api", api]).exit_code == 0
    result = runner.invoke(app, ["get", key, "--api", api])
    assert result.exit_code == 0, result.output
    assert result.stdout == "v1"
    assert fake.requests[-1].path == path


def test_when_get_meta_then_key_author_hlc_time_id_and_size(api: str, fake: FakeApi):
    entry = fake.store.write("app/config", b"replicas=3")
    result = runner.invoke(app, ["get", "app/config", "--meta", "--api", api])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "key     app/config",
        f"author  {AUTHOR}",
        f"hlc     {FIRST_HLC + 1}",
        f"time    {TIME}",
        f"id      {entry['id']}",
        "size    10 bytes (text)",
    ]


def test_when_get_json_then_the_api_answer_with_the_value(api: str, fake: FakeApi):
    fake.store.write("blob", BINARY)
    result = runner.invoke(app, ["get", "blob", "--json", "--api", api])
    assert result.exit_code == 0, result.output
    answer = json.loads(result.stdout)
    assert answer == fake.store.heads["blob"]
    assert answer["value"] is None
    assert base64.b64decode(answer["value_b64"]) == BINARY


@pytest.mark.parametrize("deleted", [False, True], ids=["absent", "deleted"])
def test_given_no_live_entry_when_get_then_exit_1_no_entry_for_key(
    api: str, fake: FakeApi, deleted: bool
):
    if deleted:
        fake.store.write("gone", b"", deleted=True)
    result = runner.invoke(app, ["get", "gone", "--api", api])
    assert result.exit_code == 1
    assert result.stderr == "nodenet: no entry for key 'gone'\n"
    assert result.stdout == ""


def test_given_an_empty_key_when_get_then_usage_error_and_nothing_asked(api: str, fake: FakeApi):
    assert runner.invoke(app, ["get", "", "--api", api]).exit_code == 2
    assert fake.requests == []


def test_when_ls_then_aligned_columns_key_size_author_time(api: str, fake: FakeApi):
    fake.store.write("app/web/replicas", b"3")
    fake.store.write("app/blob", BINARY)
    fake.store.write("other", b"x")
    fake.store.write("app/old", b"x", deleted=True)
    result = runner.invoke(app, ["ls", "app/", "--api", api])
    assert result.exit_code == 0, result.output
    assert result.stdout == (
        "KEY               SIZE  AUTHOR      TIME\n"
        f"app/blob          260   4gkrygpbb7  {TIME}\n"
        f"app/web/replicas  1     4gkrygpbb7  {TIME}\n"
    )
    assert result.stderr == ""
    assert fake.only_request().query == {"prefix": ["app/"], "limit": ["100"]}


def test_given_more_entries_than_the_limit_when_ls_then_the_first_and_a_hint(
    api: str, fake: FakeApi
):
    for i in range(5):
        fake.store.write(f"k{i}", b"v")
    result = runner.invoke(app, ["ls", "--limit", "3", "--api", api])
    assert result.exit_code == 0, result.output
    assert [line.split()[0] for line in result.stdout.splitlines()] == ["KEY", "k0", "k1", "k2"]
    assert result.stderr == (
        "nodenet: showing the first 3; more may follow (--all lists every entry,"
        " --limit up to 1000)\n"
    )


def test_given_deleted_keys_filling_a_page_when_ls_then_it_asks_on_until_the_limit(
    api: str, fake: FakeApi
):
    for i in range(4):
        fake.store.write(f"a{i}", b"", deleted=True)
    for i in range(3):
        fake.store.write(f"b{i}", b"v")
    result = runner.invoke(app, ["ls", "--limit", "2", "--api", api])
    assert result.exit_code == 0, result.output
    assert [line.split()[0] for line in result.stdout.splitlines()[1:]] == ["b0", "b1"]
    asked = [(r.query.get("after"), r.query["limit"]) for r in fake.requests]
    assert asked == [(None, ["2"]), (["a1"], ["2"]), (["a3"], ["2"])]


def test_when_ls_all_then_every_page_is_followed(api: str, fake: FakeApi):
    keys = [f"k{i:02}" for i in range(7)]
    for key in keys:
        fake.store.write(key, b"v")
    result = runner.invoke(app, ["ls", "--all", "--limit", "3", "--json", "--api", api])
    assert result.exit_code == 0, result.output
    answer = json.loads(result.stdout)
    assert [e["key"] for e in answer["entries"]] == keys
    assert answer["next"] is None
    assert [r.query.get("after") for r in fake.requests] == [None, ["k02"], ["k05"]]
    assert result.stderr == ""


def test_given_no_entries_when_ls_then_nothing_on_stdout_and_a_note(api: str):
    result = runner.invoke(app, ["ls", "none/", "--api", api])
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert result.stderr == "nodenet: no entries under 'none/'\n"


@pytest.mark.parametrize(
    ("limit", "message"),
    [
        ("0", "0 is not in the range 1..1000."),
        ("1001", "1001 is not in the range 1..1000."),
        ("many", "'many' is not a valid int."),
    ],
)
def test_given_a_limit_outside_1_to_1000_when_ls_then_usage_error(
    api: str, fake: FakeApi, limit: str, message: str
):
    result = runner.invoke(app, ["ls", "--limit", limit, "--api", api])
    assert result.exit_code == 2
    assert message in _flat(result.output)
    assert fake.requests == []


def test_given_a_daemon_repeating_a_page_when_ls_all_then_exit_1_not_a_loop(
    api: str, fake: FakeApi
):
    fake.respond("GET", "/v1/entries", 200, {"entries": [], "next": "k"})
    result = runner.invoke(app, ["ls", "--all", "--api", api])
    assert result.exit_code == 1
    assert "unexpected answer from nodenetd" in result.stderr
    assert len(fake.requests) == 2


def test_when_delete_then_delete_request_and_the_tombstone_printed(api: str, fake: FakeApi):
    fake.store.write("app/config", b"replicas=3")
    result = runner.invoke(app, ["delete", "app/config", "--api", api])
    assert result.exit_code == 0, result.output
    request = fake.requests[-1]
    assert (request.method, request.path) == ("DELETE", "/v1/entries/app/config")
    tombstone = fake.store.heads["app/config"]
    assert tombstone["deleted"] is True
    assert result.stdout == (
        f"deleted app/config id {tombstone['id'][:10]}… hlc {FIRST_HLC + 2} ({TIME})\n"
    )
    assert runner.invoke(app, ["get", "app/config", "--api", api]).exit_code == 1


def test_given_a_full_disk_when_submit_then_exit_1_with_the_message(api: str, fake: FakeApi):
    message = "cannot commit to the state store: MDB_MAP_FULL; raise store.map_size_mib"
    fake.respond("POST", "/v1/entries", 507, error("insufficient_storage", message))
    result = runner.invoke(app, ["submit", "k", "v", "--api", api])
    assert result.exit_code == 1
    assert result.stderr == f"nodenet: {message}\n"


@pytest.mark.parametrize("args", EVERY_STORE_COMMAND, ids=" ".join)
def test_given_a_starting_daemon_when_any_store_command_then_exit_1_with_its_message(
    api: str, fake: FakeApi, args: list[str]
):
    for method, path in [
        ("POST", "/v1/entries"),
        ("GET", "/v1/entries"),
        ("GET", "/v1/entries/app/config"),
        ("DELETE", "/v1/entries/app/config"),
    ]:
        fake.respond(method, path, 503, error("unavailable", "the store is not serving; retry"))
    result = runner.invoke(app, [*args, "--api", api])
    assert result.exit_code == 1, result.output
    assert result.stderr == "nodenet: the store is not serving; retry\n"


@pytest.mark.parametrize("args", EVERY_STORE_COMMAND, ids=" ".join)
def test_given_no_socket_when_any_store_command_then_exit_69_and_a_one_line_hint(
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
