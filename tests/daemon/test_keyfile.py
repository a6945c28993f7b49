"""The node key file on disk: created 0600, never replaced, refused when unsafe."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from nodenet.daemon.keyfile import create_node_key, load_node_key, load_or_create_node_key
from nodenet.protocol.identity import KeyFileError, node_id_of


def test_given_no_key_when_created_then_mode_0600_and_loads_back(tmp_path: Path):
    path = tmp_path / "state" / "node.key"
    key, created = load_or_create_node_key(path)
    assert created
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert node_id_of(load_node_key(path)) == node_id_of(key)
    again, created_again = load_or_create_node_key(path)
    assert not created_again
    assert bytes(again) == bytes(key)
    assert [p.name for p in path.parent.iterdir()] == ["node.key"]  # no temp file left


def test_given_an_existing_key_when_creating_then_refused_and_untouched(tmp_path: Path):
    path = tmp_path / "node.key"
    key = create_node_key(path)
    with pytest.raises(FileExistsError):
        create_node_key(path)
    assert bytes(load_node_key(path)) == bytes(key)


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_given_a_readable_by_others_key_when_loaded_then_refused_with_chmod_hint(
    tmp_path: Path, mode: int
):
    path = tmp_path / "node.key"
    create_node_key(path)
    path.chmod(mode)
    with pytest.raises(KeyFileError, match=f"mode {mode:04o}.*chmod 600 {path}"):
        load_node_key(path)


def test_given_a_symlinked_key_when_loaded_then_refused(tmp_path: Path):
    real = tmp_path / "real.key"
    create_node_key(real)
    link = tmp_path / "node.key"
    link.symlink_to(real)
    with pytest.raises(KeyFileError, match="cannot open key file"):
        load_node_key(link)


def test_given_a_missing_key_when_loaded_then_hint_to_init(tmp_path: Path):
    with pytest.raises(KeyFileError, match="nodenet init"):
        load_node_key(tmp_path / "node.key")


def test_given_a_corrupt_key_when_loaded_then_error_names_the_file(tmp_path: Path):
    path = tmp_path / "node.key"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, b"nodenet-ed25519-seed-v1 AAAA\n")
    os.close(fd)
    with pytest.raises(KeyFileError, match=f"key file {path}: the seed is 3 bytes"):
        load_node_key(path)


def test_given_a_huge_file_when_loaded_then_refused(tmp_path: Path):
    path = tmp_path / "node.key"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, b"#" * 5000)
    os.close(fd)
    with pytest.raises(KeyFileError, match="larger than"):
        load_node_key(path)
