"""Reading and creating the node key file (the I/O half of `nodenet.protocol.identity`).

The file is created with mode 0600 through a temporary file and a hard link, so a crash
never leaves a half-written key and an existing key is never overwritten. It is read with
`O_NOFOLLOW` and its mode checked on the opened descriptor, so what is checked is what is read.
"""

from __future__ import annotations

import os
from pathlib import Path

import nacl.signing

from nodenet.protocol.identity import (
    KeyFileError,
    check_key_file_mode,
    format_key_file,
    generate_signing_key,
    parse_key_file,
)

__all__ = ["create_node_key", "load_node_key", "load_or_create_node_key"]

MAX_KEY_FILE_BYTES = 4096


def load_node_key(path: Path) -> nacl.signing.SigningKey:
    """Read and check the key file at `path`."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        raise KeyFileError(
            f"no node key at {path}; create one with `nodenet init` (or start nodenetd once)"
        ) from None
    except OSError as exc:
        raise KeyFileError(f"cannot open key file {path}: {exc.strerror}") from exc
    try:
        check_key_file_mode(os.fstat(fd).st_mode, str(path))
        content = os.read(fd, MAX_KEY_FILE_BYTES + 1)
    finally:
        os.close(fd)
    if len(content) > MAX_KEY_FILE_BYTES:
        raise KeyFileError(f"key file {path} is larger than {MAX_KEY_FILE_BYTES} bytes")
    return parse_key_file(content, str(path))


def create_node_key(path: Path) -> nacl.signing.SigningKey:
    """Create a new key file at `path` (mode 0600); FileExistsError if one exists."""
    try:
        return _create(path)
    except FileExistsError:
        raise
    except OSError as exc:
        raise KeyFileError(
            f"cannot create key file {path}: {exc.strerror}; check that the directory is"
            " writable by this user, or choose another state directory"
        ) from exc


def _create(path: Path) -> nacl.signing.SigningKey:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = generate_signing_key()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        try:
            os.write(fd, format_key_file(key))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.link(tmp, path)  # FileExistsError rather than replacing a node identity
    finally:
        tmp.unlink(missing_ok=True)
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return key


def load_or_create_node_key(path: Path) -> tuple[nacl.signing.SigningKey, bool]:
    """The key at `path`, creating it first if there is none; also says whether it was new."""
    if not os.path.lexists(path):
        try:
            return create_node_key(path), True
        except FileExistsError:  # another process created it first: use theirs
            pass
    return load_node_key(path), False
