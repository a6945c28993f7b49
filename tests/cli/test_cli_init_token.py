"""`nodenet init` (key, keyring, config the daemon accepts) and `nodenet token`, including a
token carried from one machine's `token` to another's `init --token`."""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path

import pytest
from support.fake_api import SELF, FakeApi
from typer.testing import CliRunner

from nodenet.cli.jointoken import PREFIX, TokenError, decode_token, encode_token
from nodenet.cli.main import DEFAULT_PORT, app
from nodenet.daemon.config import DEFAULT_PORT as DAEMON_DEFAULT_PORT
from nodenet.daemon.config import load_config
from nodenet.daemon.paths import default_config_path
from nodenet.protocol.keyring import ClusterKey, Keyring
from nodenet.protocol.messages import Address

runner = CliRunner()


def _init(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, ["init", *args])
    return result.exit_code, result.stdout, result.stderr


def test_when_init_then_config_loads_in_the_daemon_with_the_given_values(tmp_path: Path):
    state, config = tmp_path / "state", tmp_path / "etc" / "nodenet.toml"
    code, out, _ = _init(
        "--state-dir", str(state), "--config", str(config), "--name", "db-1", "--port", "7960"
    )
    assert code == 0, out
    loaded = load_config(config, environ={})
    assert loaded.name == "db-1"
    assert loaded.state_dir == state
    assert loaded.bind == Address("127.0.0.1", 7960)
    assert loaded.advertise == loaded.bind
    assert loaded.seeds == ()
    assert loaded.keyring_file == state / "keyring"
    assert f"wrote config {config}" in out
    assert f"next: nodenetd --config {config}" in out


def test_when_init_then_a_private_keyring_with_one_fresh_key(tmp_path: Path):
    code, out, _ = _init("--state-dir", str(tmp_path), "--config", str(tmp_path / "n.toml"))
    assert code == 0, out
    keyring = tmp_path / "keyring"
    assert stat.S_IMODE(keyring.stat().st_mode) == 0o600
    ring = Keyring.from_text(keyring.read_text(), str(keyring))
    assert len(ring.keys) == 1
    assert f"wrote keyring {keyring} with a new cluster key" in out
    assert ring.primary.key_id in out


def test_given_no_config_option_then_init_writes_the_default_config_path(tmp_path: Path):
    code, out, _ = _init("--state-dir", str(tmp_path))
    assert code == 0, out
    assert load_config(default_config_path(), environ={}).state_dir == tmp_path


def test_given_the_same_settings_when_init_again_then_everything_is_kept(tmp_path: Path):
    args = ("--state-dir", str(tmp_path), "--config", str(tmp_path / "n.toml"), "--name", "a")
    _init(*args)
    keyring_before = (tmp_path / "keyring").read_text()
    code, out, _ = _init(*args)
    assert code == 0, out
    assert "kept existing node key" in out
    assert "kept existing keyring" in out
    assert "already up to date" in out
    assert (tmp_path / "keyring").read_text() == keyring_before


def test_given_a_different_config_when_init_then_refused_unless_force(tmp_path: Path):
    config = tmp_path / "n.toml"
    _init("--state-dir", str(tmp_path / "s"), "--config", str(config), "--name", "a")
    before = config.read_text()
    code, out, err = _init("--state-dir", str(tmp_path / "other"), "--config", str(config))
    assert code == 1
    assert f"{config} already exists with other settings; pass --force" in err
    assert config.read_text() == before
    assert not (tmp_path / "other").exists()  # nothing half-done
    code, out, _ = _init(
        "--state-dir", str(tmp_path / "other"), "--config", str(config), "--name", "b", "--force"
    )
    assert code == 0, out
    assert f"replaced config {config}" in out
    assert load_config(config, environ={}).name == "b"


def test_given_bind_all_without_advertise_when_init_then_the_daemons_error_and_exit_2(
    tmp_path: Path,
):
    args = ["--state-dir", str(tmp_path), "--config", str(tmp_path / "n.toml")]
    code, _, err = _init(*args, "--bind", "0.0.0.0")
    assert code == 2
    assert "network.advertise" in err
    assert not (tmp_path / "n.toml").exists()
    code, out, _ = _init(*args, "--bind", "0.0.0.0", "--advertise", "10.0.0.5")
    assert code == 0, out
    loaded = load_config(tmp_path / "n.toml", environ={})
    assert (loaded.bind, loaded.advertise) == (Address("0.0.0.0", 7950), Address("10.0.0.5", 7950))


def test_given_a_daemon_and_a_seed_when_token_then_init_token_on_a_new_machine_joins_it(
    tmp_path: Path, api: str, fake: FakeApi
):
    member, new = tmp_path / "member", tmp_path / "new"
    _init("--state-dir", str(member), "--config", str(member / "n.toml"))
    member_keyring = Keyring.from_text((member / "keyring").read_text(), "member keyring")
    second = ClusterKey.generate()
    (member / "keyring").write_text(member_keyring.install(second).to_text())

    result = runner.invoke(
        app, ["token", "--state-dir", str(member), "--seed", "10.0.0.6", "--api", api]
    )
    assert result.exit_code == 0, result.output
    token = result.stdout.strip()
    assert "\n" not in token
    assert "holds the cluster keys" in result.stderr
    assert fake.only_request().path == "/v1/self"

    code, out, _ = _init(
        "--state-dir", str(new), "--config", str(new / "n.toml"), "--token", token, "--name", "n2"
    )
    assert code == 0, out
    assert (new / "keyring").read_text() == (member / "keyring").read_text()
    assert stat.S_IMODE((new / "keyring").stat().st_mode) == 0o600
    assert "from the token (2 keys" in out
    loaded = load_config(new / "n.toml", environ={})
    assert loaded.seeds == (Address("10.0.0.5", 7950), Address("10.0.0.6", 7950))
    assert loaded.keyring_file == new / "keyring"


def test_given_a_token_on_stdin_when_init_then_it_is_used(tmp_path: Path):
    key = ClusterKey.generate()
    token = encode_token([key.text], ["10.0.0.5:7950"])
    args = ["init", "--state-dir", str(tmp_path), "--config", str(tmp_path / "n.toml")]
    result = runner.invoke(app, [*args, "--token", "-"], input=token + "\n")
    assert result.exit_code == 0, result.output
    assert Keyring.from_text((tmp_path / "keyring").read_text(), "k").keys == (key,)


def test_given_other_keys_on_disk_when_init_token_then_refused_unless_force(tmp_path: Path):
    _init("--state-dir", str(tmp_path), "--config", str(tmp_path / "n.toml"))
    before = (tmp_path / "keyring").read_text()
    token = encode_token([ClusterKey.generate().text], ["10.0.0.5:7950"])
    args = ["--state-dir", str(tmp_path), "--config", str(tmp_path / "joining.toml")]
    code, _, err = _init(*args, "--token", token)
    assert code == 1
    assert "holds other cluster keys than the token" in err
    assert (tmp_path / "keyring").read_text() == before
    assert not (tmp_path / "joining.toml").exists()
    code, out, _ = _init(*args, "--token", token, "--force")
    assert code == 0, out
    assert (tmp_path / "keyring").read_text() != before


@pytest.mark.parametrize(
    "token",
    [
        "nope",
        PREFIX + "!!!",
        encode_token(["not a key"], ["10.0.0.5:7950"]),
        encode_token([ClusterKey.generate().text], ["example.com:7950"]),
    ],
)
def test_given_a_bad_token_when_init_then_usage_error_and_nothing_written(
    tmp_path: Path, token: str
):
    code, _, err = _init("--state-dir", str(tmp_path / "s"), "--token", token)
    assert code == 2
    assert "--token" in err
    assert not (tmp_path / "s").exists()


def test_the_token_format_is_prefix_and_unpadded_base64url_of_compact_json():
    key = ClusterKey(bytes(range(32))).text
    token = encode_token([key], ["[fd00::1]:7950"])
    assert token.startswith("nodenet1:")
    assert "=" not in token
    body = token.removeprefix("nodenet1:")
    raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)).decode()
    assert raw == json.dumps({"v": 1, "keys": [key], "seeds": ["[fd00::1]:7950"]}).replace(" ", "")
    assert decode_token(token).keys == (key,)
    assert decode_token(token).seeds == ("[fd00::1]:7950",)


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("abc", "starts with 'nodenet1:'"),
        ("nodenet2:xyz", "version 'nodenet2'"),
        (PREFIX + base64.urlsafe_b64encode(b'{"v": 2}').decode(), "not version 1"),
        (PREFIX + base64.urlsafe_b64encode(b'{"v": 1, "keys": []}').decode(), "no cluster keys"),
    ],
)
def test_tokens_this_version_cannot_use_are_refused_saying_why(text: str, why: str):
    with pytest.raises(TokenError, match=why):
        decode_token(text)


def test_given_no_daemon_and_no_seed_when_token_then_exit_69(tmp_path: Path, short_dir: str):
    _init("--state-dir", str(tmp_path), "--config", str(tmp_path / "n.toml"))
    result = runner.invoke(
        app, ["token", "--state-dir", str(tmp_path), "--api", f"{short_dir}/none.sock"]
    )
    assert result.exit_code == 69
    assert "pass --seed" in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize("option", ["--keyring-file", "--keyring"])  # nodenetd says --keyring
def test_given_no_daemon_but_a_seed_when_token_then_the_seed_alone(
    tmp_path: Path, short_dir: str, option: str
):
    _init("--state-dir", str(tmp_path), "--config", str(tmp_path / "n.toml"))
    args = ["token", option, str(tmp_path / "keyring"), "--seed", "[fd00::2]:8000"]
    result = runner.invoke(app, [*args, "--api", f"{short_dir}/none.sock"])
    assert result.exit_code == 0, result.output
    assert decode_token(result.stdout).seeds == ("[fd00::2]:8000",)
    assert "lists only the --seed addresses" in result.stderr


def test_given_a_loopback_daemon_when_token_then_a_note_says_only_this_machine_can_use_it(
    tmp_path: Path, api: str, fake: FakeApi
):
    _init("--state-dir", str(tmp_path), "--config", str(tmp_path / "n.toml"))
    fake.respond("GET", "/v1/self", 200, {**SELF, "address": "127.0.0.1:7950"})
    result = runner.invoke(app, ["token", "--state-dir", str(tmp_path), "--api", api])
    assert result.exit_code == 0, result.output
    assert decode_token(result.stdout).seeds == ("127.0.0.1:7950",)
    assert "only this machine can use the token" in result.stderr


def test_given_no_keyring_when_token_then_exit_1_pointing_at_init(tmp_path: Path):
    result = runner.invoke(app, ["token", "--state-dir", str(tmp_path), "--seed", "10.0.0.1"])
    assert result.exit_code == 1
    assert "nodenet init" in result.stderr


def test_the_clis_default_port_is_the_daemons():
    assert DEFAULT_PORT == DAEMON_DEFAULT_PORT


def test_api_token_written_by_root_stays_owned_like_the_state_dir(tmp_path: Path):
    # The service runs as user nodenet; root adding a token must not leave a file the
    # daemon cannot read (its next start would fail on it).
    import os

    if os.geteuid() != 0:
        pytest.skip("changing a file's owner needs root (CI runs as root)")
    state = tmp_path / "state"
    state.mkdir()
    os.chown(state, 65534, 65534)  # nobody, standing in for the nodenet user
    tokens = state / "api-tokens"
    for args in (["create", "prometheus"], ["create", "grafana"], ["remove", "prometheus"]):
        result = runner.invoke(app, ["api-token", *args, "--file", str(tokens)])
        assert result.exit_code == 0, result.output
        owner = tokens.stat()
        assert (owner.st_uid, owner.st_gid) == (65534, 65534), args
        assert stat.S_IMODE(owner.st_mode) == 0o600


def test_init_does_not_mint_a_new_cluster_key_beside_a_nodes_state(tmp_path: Path):
    # The daemon refuses to start with a missing keyring beside its state and says to use
    # `nodenet init`: init must not then cut the node off with a new random cluster key
    # (durability re-review).
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "data.mdb").write_bytes(b"x")
    args = ("--state-dir", str(tmp_path), "--config", str(tmp_path / "n.toml"))
    code, _, err = _init(*args)
    assert code == 1
    assert "holds a node's state" in err
    assert not (tmp_path / "keyring").exists()
    (tmp_path / "keyring").symlink_to(tmp_path / "gone")
    (tmp_path / "state" / "data.mdb").unlink()
    code, _, err = _init(*args)
    assert code == 1
    assert "symbolic link to a missing file" in err
    assert (tmp_path / "keyring").is_symlink()
    code, out, _ = _init(*args, "--force")
    assert code == 0, out
    assert "with a new cluster key" in out
