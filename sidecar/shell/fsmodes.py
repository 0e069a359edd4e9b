"""What the sidecar creates on the shared volume, and with which permissions.

The volume's root belongs to the pod (an emptyDir, group-owned and setgid with an
``fsGroup``); everything below it that the sidecar creates gets an explicit mode, whatever
the umask:

* input files and their directories: 0640 / 0750, readable by the transformation when it
  runs as the same uid or shares the group (``fsGroup``, docs/migration.md); the Go
  sidecar used 0600 / 0700;
* config files and the config directory: the same;
* the journal (``.sidecar/journal``): 0600 / 0700, the sidecar's own.

A directory keeps its setgid bit, so files below an fsGroup volume stay in its group.
"""

from __future__ import annotations

import os
import stat

DATA_DIR, DATA_FILE = 0o750, 0o640
PRIVATE_DIR, PRIVATE_FILE = 0o700, 0o600


def make_dirs(path: str, mode: int) -> None:
    """``path`` and its missing parents, each created with ``mode``; directories that
    already exist are left as they are. The directory is made first, its parents only if
    that fails for want of them: one system call fewer per level than looking first (a
    download's directory is new, its parent there)."""
    directory = os.path.abspath(path)
    try:
        os.mkdir(directory, mode)
    except FileExistsError:
        return  # there already (or made meanwhile by another worker): leave it
    except FileNotFoundError:
        parent = os.path.dirname(directory)
        if parent == directory:
            raise
        make_dirs(parent, mode)
        try:
            os.mkdir(directory, mode)
        except FileExistsError:
            return
    setgid = os.stat(directory).st_mode & stat.S_ISGID  # inherited from an fsGroup dir
    os.chmod(directory, mode | setgid)  # the umask may have taken bits away


def create_file(path: str, mode: int, flags: int = 0) -> int:
    """Open ``path`` for writing (created or truncated) with exactly ``mode``; an fd."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | flags, mode)
    os.fchmod(fd, mode)
    return fd
