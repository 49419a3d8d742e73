"""Files and folders of the audit trail that only their owner can open: 0600 files, 0700
folders, whatever the process's umask (``mkdir(parents=True)`` gives the parents the umask's
mode, and a umask such as 0o002 leaves a new file readable by everyone).

Only what Bastion creates is made private. A file that already exists keeps its mode (an
operator may have opened the JSONL mirror to a log shipper's group on purpose); the serving
process warns about one that others can read (``warn_if_shared``).
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

__all__ = ["DIR_MODE", "FILE_MODE", "create_private_file", "private_dir", "warn_if_shared"]

FILE_MODE = 0o600
DIR_MODE = 0o700

logger = logging.getLogger("bastion.audit")


def private_dir(path: Path) -> None:
    """Make ``path`` and every missing folder above it, each 0700. Folders that exist already
    are left as they are."""
    missing: list[Path] = []
    current = path
    while not current.exists() and current != current.parent:
        missing.append(current)
        current = current.parent
    for directory in reversed(missing):
        try:
            directory.mkdir(mode=DIR_MODE)
        except FileExistsError:
            continue  # made meanwhile by someone else: theirs
        os.chmod(directory, DIR_MODE)  # mkdir's mode went through the umask


def create_private_file(path: Path) -> bool:
    """Create ``path`` empty and 0600 if it does not exist (its folders 0700); True if it was
    created here."""
    private_dir(path.parent)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, FILE_MODE)
    except FileExistsError:
        return False
    try:
        os.fchmod(fd, FILE_MODE)  # exactly 0600, whatever the umask took away
    finally:
        os.close(fd)
    return True


def warn_if_shared(path: Path) -> bool:
    """Log a warning if ``path`` exists and its group or others may open it; True if so."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return False
    if not mode & 0o077:
        return False
    kind = "folder" if path.is_dir() else "file"
    logger.warning("audit %s %s has mode %04o: others can open it (chmod %s it unless that is "
                   "meant)", kind, path, mode, "700" if kind == "folder" else "600")
    return True
