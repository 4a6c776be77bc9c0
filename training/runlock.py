"""One live run per run folder.

A run holds ``<run folder>/run.lock`` with ``fcntl.flock`` while it lives, and writes its pid,
host, start time and command into it. A second process on the same folder finds the flock taken
and stops at once, naming the running process. The OS drops an flock when its process dies,
however it dies (SIGKILL, power loss), so a lock file whose flock is free was left by a run that
died: the next run takes it over and says so. A run that ends normally deletes the file, and
the folders ``acquire`` made if they are still empty (a run refused before it wrote anything
leaves nothing behind).

Data-loader workers forked while the lock is held share it; they exit within seconds of their
parent's death, and the lock is free then.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time

from utils import ConfigError

LOCK_NAME = "run.lock"


class RunLock:
    """A held lock (``fd`` None: the file system cannot lock). ``note``: a line for the run's log, or None."""

    def __init__(self, folder: str, fd: int | None, note: str | None = None, made: tuple[str, ...] = ()) -> None:
        self.folder, self.path, self.fd, self.note = folder, os.path.join(folder, LOCK_NAME), fd, note
        self.made = made  # the folders acquire created, deepest first

    def release(self) -> None:
        """Delete the lock file, then drop the flock (in this order: see ``acquire``); then the empty folders made."""
        if self.fd is None:
            return
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        os.close(self.fd)
        self.fd = None
        for folder in self.made:
            try:
                os.rmdir(folder)
            except OSError:  # holds files (the run wrote some), or another run's folder
                break


def describe(holder: dict) -> str:
    """'process 4242 on node7 (started 2025-06-01 10:02:03: main.py --dataset digits ...)'."""
    command = holder.get("command", "?")
    if len(command) > 160:
        command = command[:157] + "..."
    return (f"process {holder.get('pid', '?')} on {holder.get('host', '?')} "
            f"(started {holder.get('started', '?')}: {command})")


class FolderInUse(ConfigError):
    """The run folder is locked by a live run; ``folder`` and ``who`` let a caller say it in its own terms."""

    def __init__(self, folder: str, who: str) -> None:
        self.folder, self.who = os.path.abspath(folder), who
        super().__init__(f"the run folder {self.folder} is in use by {who}; wait for that run to end or stop it, "
                         "or give this run another --tag or --manualSeed")


def acquire(folder: str) -> RunLock:
    """Lock ``folder`` (made if missing) for this process; a ConfigError naming the holder if it is taken."""
    path = os.path.join(folder, LOCK_NAME)
    made = _missing_folders(folder)
    retried = False
    while True:
        try:
            os.makedirs(folder, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            if isinstance(error, FileNotFoundError) and not retried:  # a run that just ended removed the folder
                retried = True
                continue
            raise ConfigError(f"--save_path: cannot create the run folder's lock file {os.path.abspath(path)} "
                              f"({error.strerror})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read(fd)
            os.close(fd)
            who = describe(holder) if holder else "another process (starting up)"
            raise FolderInUse(folder, who) from None
        except OSError as error:  # e.g. a cluster file system mounted without flock support
            os.close(fd)
            return RunLock(folder, None, f"run folder lock: {path} cannot be locked ({error.strerror}); a second "
                                         "run started on this folder would not be stopped")
        # A holder that ended between our open and our flock deleted the file we locked: lock the new one.
        try:
            if os.path.samestat(os.fstat(fd), os.stat(path)):
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    previous = _read(fd)  # left by a run that died
    note = (f"run folder lock: {describe(previous)} left {path} behind and is no longer running (killed?); "
            "taken over") if previous else None
    record = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
              "command": " ".join([os.path.basename(sys.argv[0]), *sys.argv[1:]])}
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
    os.fsync(fd)
    return RunLock(folder, fd, note, made)


def _missing_folders(folder: str) -> tuple[str, ...]:
    """``folder`` and its parents that do not exist yet, deepest first."""
    missing, current = [], os.path.abspath(folder)
    while not os.path.exists(current):
        missing.append(current)
        parent = os.path.dirname(current)
        if parent == current:
            break
        current = parent
    return tuple(missing)


def _read(fd: int) -> dict | None:
    """The holder record in the lock file, or None (empty: a holder still starting, or a fresh file)."""
    text = os.pread(fd, 65536, 0).decode(errors="replace").strip()
    if not text:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return {"command": text}
