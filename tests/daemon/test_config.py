"""Configuration: file, environment and flags merged, and every mistake named precisely."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from nodenet.daemon.config import ConfigError, load_config, parse_address
from nodenet.protocol.messages import Address


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "nodenet.toml"
    path.write_text(text)
    return path


def test_given_no_file_then_loopback_defaults_under_the_users_data_dir(tmp_path):
    config = load_config(
        None,
        environ={"XDG_DATA_HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path / "none")},
        euid=1000,
    )
    assert config.bind == Address("127.0.0.1", 7950)
    assert config.advertise == config.bind
    assert config.state_dir == tmp_path / "nodenet"
    assert config.keyring_file == tmp_path / "nodenet" / "keyring"
    assert config.profile == "lan"
    assert config.source == "built-in defaults"


def test_given_file_environment_and_flags_then_later_sources_win(tmp_path):
    path = write(tmp_path, '[network]\nport = 7001\nbind = "127.0.0.2"\n[node]\nname = "file"\n')
    config = load_config(
        path,
        environ={"NODENET_NETWORK_PORT": "7002", "NODENET_NODE_TAGS": "role=web,dc=x"},
        overrides={"network.port": 7003, "node.name": None},
    )
    assert config.bind == Address("127.0.0.2", 7003)
    assert config.name == "file"
    assert dict(config.tags) == {"name": "file", "role": "web", "dc": "x"}


@pytest.mark.parametrize(
    ("text", "environ", "message"),
    [
        ("[network]\nport = 70000\n", {}, "network.port = 70000 (from "),
        ('[network]\nport = "x"\n', {}, "not a port"),
        ("[network]\nprot = 1\n", {}, "unknown key network.prot"),
        ("[netwrk]\nport = 1\n", {}, "unknown section [netwrk] (from /"),
        ('[network]\nbind = "::"\n', {}, "needs network.advertise"),
        ('[network]\nbind = "example.com"\n', {}, "host names are not resolved"),
        ('[network]\nseeds = ["10.0.0.1:99999"]\n', {}, "port '99999' is not in 1-65535"),
        ('[cluster]\nprofile = "fast"\n', {}, "use one of lan, wan, local"),
        ("[membership]\nprobe_timeout_s = 5.0\n", {}, "must be shorter than"),
        ("[membership]\nwhatever = 1\n", {}, "unknown key membership.whatever"),
        ('[api]\ntcp = "10.0.0.1:7951"\n', {}, "loopback only"),
        ('[api]\nsocket_mode = "rw"\n', {}, "octal"),
        ('[log]\nlevel = "loud"\n', {}, "debug, info, warning, error"),
        ("[node]\ntags = { k = 1 }\n", {}, "table of strings"),
        (
            "",
            {"NODENET_NETWORK_PORT": "0x"},
            'network.port = "0x" (from environment NODENET_NETWORK_PORT)',
        ),
        ("", {"NODENET_BOGUS": "1"}, "NODENET_BOGUS does not name a setting"),
        ("[network\n", {}, "not valid TOML"),
        ("network = 1\n", {}, "must be a [section] table"),
    ],
)
def test_given_a_mistake_then_the_error_names_key_value_and_origin(
    tmp_path, text, environ, message
):
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), environ=environ)
    assert message in str(info.value)


def test_given_a_missing_explicit_file_then_error(tmp_path):
    with pytest.raises(ConfigError, match=r"does not exist \(named by --config"):
        load_config(tmp_path / "missing.toml", environ={})


def test_given_nodenet_config_naming_a_missing_file_then_error_not_defaults(tmp_path):
    missing = tmp_path / "missing.toml"
    expected = f"{missing} does not exist (named by $NODENET_CONFIG"
    with pytest.raises(ConfigError, match=re.escape(expected)):
        load_config(environ={"NODENET_CONFIG": str(missing)})


def test_given_membership_overrides_then_applied_on_the_profile(tmp_path):
    path = write(tmp_path, '[cluster]\nprofile = "wan"\n[membership]\nprobe_interval_s = 6.0\n')
    config = load_config(path, environ={})
    assert config.membership.probe_interval_s == 6.0
    assert config.membership.probe_timeout_s == 3.0  # the wan value, untouched


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10.0.0.5", Address("10.0.0.5", 7950)),
        ("10.0.0.5:7", Address("10.0.0.5", 7)),
        ("[fd00::5]:8", Address("fd00::5", 8)),
        ("fd00::5", Address("fd00::5", 7950)),
        ("[fe80::5%eth0]:8", Address("fe80::5%eth0", 8)),
    ],
)
def test_parse_address(text, expected):
    assert parse_address(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "[fd00::5",
        "[fd00::5]x",
        "10.0.0.5:",
        "host:7950",
        "",
        # Zones the resolver chokes on (a UnicodeError from getaddrinfo stopped the daemon).
        "[fe80::1%" + "a" * 64 + "]:7950",
        "[fe80::1%\ud800]:7950",
        # Digits that are not ASCII, and numbers too long for int().
        "10.0.0.5:\u0661\u0662",
        "10.0.0.5:\u00b2",
        "10.0.0.5:" + "9" * 5000,
    ],
)
def test_parse_address_refuses(text):
    with pytest.raises(ValueError, match=r"address|port|IPv6|zone"):
        parse_address(text)


def test_state_max_map_size_is_the_setting_the_store_full_error_names(tmp_path):
    # StateStore's "state store is full" error tells the operator to raise it.
    file = tmp_path / "n.toml"
    file.write_text("[state]\nmax_map_size = 137438953472\n")
    assert load_config(file, environ={}).state.max_map_size == 128 * 2**30
    assert load_config(environ={}).state.max_map_size == 64 * 2**30
    for bad in ("1000", "true", '"64GiB"'):
        file.write_text(f"[state]\nmax_map_size = {bad}\n")
        with pytest.raises(ConfigError, match=r"state\.max_map_size = .*must be a number of bytes"):
            load_config(file, environ={})


def test_a_node_name_with_control_characters_is_refused(tmp_path):
    file = tmp_path / "n.toml"
    file.write_text('[node]\nname = "web\\nERROR forged"\n')
    with pytest.raises(ConfigError, match=r"node\.name = .*control characters"):
        load_config(file, environ={})


def test_environment_text_settings_stay_text_and_bad_tag_pairs_are_named():
    config = load_config(environ={"NODENET_NODE_NAME": "123", "NODENET_API_SOCKET_MODE": "0640"})
    assert config.name == "123"
    assert config.api.socket_mode == 0o640
    with pytest.raises(ConfigError, match=r"NODENET_NODE_TAGS: 'bad' is not key=value"):
        load_config(environ={"NODENET_NODE_TAGS": "role=web,bad"})


def test_api_tcp_takes_a_bare_port_as_its_help_says_and_advertise_must_be_reachable():
    assert load_config(environ={}, overrides={"api.tcp": "7951"}).api.tcp == Address(
        "127.0.0.1", 7951
    )
    assert load_config(environ={"NODENET_API_TCP": "7952"}).api.tcp == Address("127.0.0.1", 7952)
    for advertise in ("0.0.0.0:7950", "[::]:7950", "224.0.0.1:7950"):
        with pytest.raises(ConfigError, match=r"network\.advertise = .*own address"):
            load_config(environ={}, overrides={"network.advertise": advertise})


def test_a_bad_membership_setting_is_named_even_when_not_the_first(tmp_path):
    file = tmp_path / "n.toml"
    file.write_text("[membership]\nsuspicion_mult = 4\nprobe_interval_s = -1\n")
    with pytest.raises(ConfigError) as raised:
        load_config(file, environ={})
    message = str(raised.value)
    assert message.startswith("membership.probe_interval_s = -1 (from ")
    assert message.count("probe_interval_s") == 1  # the key is not repeated
