"""Files only Bastion's own user may read: the data folder (0700), the database and the
signing keys in it (0600). L0, standard library only.

Modes are given when a file or folder is created, not left to the umask; one that already
exists and belongs to this user loses any group or other access it had (an older Bastion
created them world-readable). Another user's file is left alone: changing it would fail.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

__all__ = ["PRIVATE_DIR_MODE", "PRIVATE_FILE_MODE", "create_private_file", "private_dir",
           "private_file"]

PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600


def _tighten(path: Path, mode: int) -> None:
    try:
        info = path.stat()
    except FileNotFoundError:
        return
    if info.st_uid == os.getuid() and stat.S_IMODE(info.st_mode) & 0o077:
        os.chmod(path, mode)


def private_dir(path: Path) -> Path:
    """``path`` as a folder only its owner can enter (missing parents get the usual mode)."""
    path.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR_MODE)
    _tighten(path, PRIVATE_DIR_MODE)
    return path


def private_file(path: Path) -> None:
    """If ``path`` exists and is ours, only its owner may read or write it."""
    _tighten(path, PRIVATE_FILE_MODE)


def create_private_file(path: Path) -> None:
    """Make sure ``path`` exists with mode 0600, creating it empty if it does not."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, PRIVATE_FILE_MODE)
    os.close(fd)
    private_file(path)
