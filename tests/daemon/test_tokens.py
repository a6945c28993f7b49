"""Bearer tokens and roles on the API's TCP listener; the unix socket needs none."""

from __future__ import annotations

import shutil

import httpx
import pytest
import trio
from support.daemons import free_port, node_dir, short_tmpdir
from typer.testing import CliRunner

from nodenet.cli.main import app
from nodenet.daemon.config import load_config
from nodenet.daemon.daemon import Daemon, StartupError
from nodenet.daemon.tokens import Role, TokenError, Tokens, required_role


@pytest.mark.parametrize(
    ("method", "path", "role"),
    [
        ("GET", "/metrics", None),
        ("GET", "/health", None),
        ("GET", "/v1/peers", Role.READ),
        ("GET", "/v1/entries/x", Role.READ),
        ("POST", "/v1/entries", Role.WRITE),
        ("PATCH", "/v1/self/tags", Role.WRITE),
        ("DELETE", "/v1/entries/x", Role.WRITE),
        ("POST", "/v1/join", Role.ADMIN),
        ("POST", "/v1/leave", Role.ADMIN),
        ("GET", "/v1/keys", Role.ADMIN),
    ],
)
def test_each_endpoint_needs_the_right_role(method, path, role):
    assert required_role(method, path) is role


async def test_tcp_requests_need_a_token_with_the_right_role_and_the_socket_none():
    root = short_tmpdir()
    tcp_port = free_port()
    tokens, read = Tokens().with_token("grafana", Role.READ)
    tokens, write = tokens.with_token("ci", Role.WRITE)
    tokens, admin = tokens.with_token("ops", Role.ADMIN)
    try:
        config_path = node_dir(root, "t", api_tcp=f"127.0.0.1:{tcp_port}")
        (root / "t" / "api-tokens").write_text(tokens.to_text())
        (root / "t" / "api-tokens").chmod(0o600)
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                daemon = Daemon(load_config(config_path, environ={}))
                await nursery.start(daemon.run)
                tcp = httpx.AsyncClient(base_url=f"http://127.0.0.1:{tcp_port}", timeout=10)

                def bearer(token: str) -> dict[str, str]:
                    return {"Authorization": f"Bearer {token}"}

                assert (await tcp.get("/metrics")).status_code == 200
                assert (await tcp.get("/health")).status_code == 200
                missing = await tcp.get("/v1/self")
                assert (missing.status_code, missing.json()["error"]["code"]) == (
                    401,
                    "unauthorized",
                )
                wrong = await tcp.get("/v1/self", headers=bearer("nnt_wrong"))
                assert wrong.status_code == 401
                # Without a token nothing of the body is read: 401, not 413.
                anonymous = await tcp.post("/v1/entries", content=b"x" * (9 * 1024 * 1024))
                assert anonymous.status_code == 401
                assert (await tcp.get("/v1/self", headers=bearer(read))).status_code == 200
                body = {"key": "k", "value": "v"}
                refused = await tcp.post("/v1/entries", json=body, headers=bearer(read))
                assert (refused.status_code, refused.json()["error"]["code"]) == (403, "forbidden")
                assert "needs write" in refused.json()["error"]["message"]
                assert (
                    await tcp.post("/v1/entries", json=body, headers=bearer(write))
                ).status_code == 200
                assert (await tcp.get("/v1/keys", headers=bearer(write))).status_code == 403
                assert (await tcp.get("/v1/keys", headers=bearer(admin))).status_code == 200
                # The unix socket is not asked for a token.
                local = httpx.AsyncClient(
                    transport=httpx.AsyncHTTPTransport(uds=str(root / "t" / "api.sock")),
                    base_url="http://nodenetd",
                )
                assert (await local.get("/v1/keys")).status_code == 200
                # Revoking takes effect on reload.
                (root / "t" / "api-tokens").write_text(tokens.without("grafana").to_text())
                daemon.reload(load_config(config_path, environ={}))
                assert (await tcp.get("/v1/self", headers=bearer(read))).status_code == 401
                await tcp.aclose()
                await local.aclose()
                daemon.request_shutdown()
    finally:
        shutil.rmtree(root, ignore_errors=True)


async def test_a_tokens_file_readable_by_others_stops_the_daemon():
    root = short_tmpdir()
    try:
        config_path = node_dir(root, "t")
        (root / "t" / "api-tokens").write_text(Tokens().to_text())
        (root / "t" / "api-tokens").chmod(0o644)
        with trio.fail_after(30), pytest.raises(StartupError, match="chmod 600"):
            await Daemon(load_config(config_path, environ={})).run()
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_the_cli_creates_lists_and_removes_tokens(tmp_path):
    runner = CliRunner()
    file = tmp_path / "api-tokens"
    created = runner.invoke(
        app, ["api-token", "create", "prom", "--role", "read", "--file", str(file)]
    )
    assert created.exit_code == 0, created.output
    token = created.stdout.strip().splitlines()[0]
    assert token.startswith("nnt_")
    assert Tokens.load(file).role_of(token).role is Role.READ
    assert token not in file.read_text()  # only the digest is stored
    assert file.stat().st_mode & 0o777 == 0o600
    listed = runner.invoke(app, ["api-token", "list", "--file", str(file)]).stdout
    assert listed.splitlines() == ["NAME  ROLE", "prom  read"]
    assert runner.invoke(app, ["api-token", "remove", "prom", "--file", str(file)]).exit_code == 0
    assert Tokens.load(file).role_of(token) is None
    empty = runner.invoke(app, ["api-token", "list", "--file", str(file)])
    assert (empty.exit_code, empty.stdout) == (0, "")
    assert f"no API tokens in {file}" in empty.stderr
    assert (
        runner.invoke(
            app, ["api-token", "create", "x", "--role", "root", "--file", str(file)]
        ).exit_code
        == 2
    )


def test_a_tokens_file_that_is_not_utf8_is_a_token_error_naming_it(tmp_path):
    # A TokenError is what start-up and SIGHUP report and survive; a UnicodeDecodeError
    # stopped a running daemon at its next reload (found by a durability review).
    path = tmp_path / "api-tokens"
    path.write_bytes(b"\xb2\xff garbage")
    path.chmod(0o600)
    with pytest.raises(TokenError, match=r"api-tokens is not UTF-8 text"):
        Tokens.load(path)


async def _start_fails(config_path) -> str:
    with trio.fail_after(30), pytest.raises(StartupError) as raised:
        await Daemon(load_config(config_path, environ={})).run()
    return str(raised.value)


async def test_damaged_identity_files_stop_start_up_with_one_line_naming_them():
    # Each used to surface as a traceback (the message inside was often good, but the
    # daemon printed 30 lines; found by a durability review).
    from nodenet.daemon.state import META_INCARNATION, Put, open_state_store

    root = short_tmpdir()
    try:
        config_path = node_dir(root, "t")
        key = root / "t" / "node.key"
        key.write_bytes(b"garbage, not a key")
        key.chmod(0o600)
        assert "key file" in await _start_fails(config_path)
        key.unlink()
        key.mkdir()
        assert "is a directory" in await _start_fails(config_path)
        key.rmdir()
        async with open_state_store(root / "t" / "state") as store:
            await store.write([Put("meta", META_INCARNATION, b"\xc1")])
        message = await _start_fails(config_path)
        assert "incarnation is corrupt" in message
        assert "restore the state directory" in message
    finally:
        shutil.rmtree(root, ignore_errors=True)


async def test_a_lost_keyring_is_not_replaced_when_the_state_remembers_a_cluster():
    # A new random cluster key would cut the node off from the members it remembers
    # (it was created with only a warning; found by a durability review).
    from nodenet.daemon.state import Put, open_state_store

    root = short_tmpdir()
    try:
        config_path = node_dir(root, "t")
        keyring = root / "t" / "keyring"
        async with open_state_store(root / "t" / "state") as store:
            await store.write([Put("members", b"m" * 32, b"a remembered member")])
        keyring.unlink()
        message = await _start_fails(config_path)
        assert f"no keyring at {keyring}, but the state remembers 1 members" in message
        assert not keyring.exists()
        keyring.symlink_to(root / "t" / "elsewhere")  # dangling: not replaced either
        assert "no keyring at" in await _start_fails(config_path)
        assert keyring.is_symlink()
    finally:
        shutil.rmtree(root, ignore_errors=True)


async def test_temporary_key_files_left_by_a_killed_writer_are_removed_at_start():
    # They hold cluster keys; and a later writer with the same pid could not create its
    # own (found by a durability review).
    root = short_tmpdir()
    try:
        config_path = node_dir(root, "t")
        leftovers = [root / "t" / ".keyring.4242.tmp", root / "t" / ".node.key.4242.tmp"]
        for leftover in leftovers:
            leftover.write_text("secret")
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                daemon = Daemon(load_config(config_path, environ={}))
                await nursery.start(daemon.run)
                assert not any(leftover.exists() for leftover in leftovers)
                assert (root / "t" / "node.key").exists()
                daemon.request_shutdown()
    finally:
        shutil.rmtree(root, ignore_errors=True)


async def test_a_state_store_that_cannot_be_written_at_start_is_a_one_line_refusal(monkeypatch):
    # Zeroed pages inside data.mdb surface at the first write (MDB_CORRUPTED), which gave
    # two tracebacks (durability re-review).
    from nodenet.daemon.state import StateError, StateStore

    async def corrupted(self: StateStore, incarnation: int) -> None:
        raise StateError("state store x: mdb_put: MDB_CORRUPTED: Located page was wrong type")

    monkeypatch.setattr(StateStore, "save_incarnation", corrupted)
    root = short_tmpdir()
    try:
        message = await _start_fails(node_dir(root, "t"))
        assert "MDB_CORRUPTED" in message
        assert "restore the state directory" in message
    finally:
        shutil.rmtree(root, ignore_errors=True)
