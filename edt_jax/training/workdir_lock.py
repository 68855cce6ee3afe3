"""One run per workdir: a training run holds its workdir, and a second run on it stops at once.

A scheduler that restarts a job while its old copy still runs would otherwise have two trainers interleave
their checkpoints and metrics in one directory (or crash each other on orbax's temporary files). So the
trainer takes ``<workdir>/run.lock`` first, before it writes anything, and a second run gets
``WorkdirBusyError`` naming the workdir and the holder (host, pid, start time).

How a dead holder is told from a live one depends on the filesystem:

- **Local and network filesystems** (anything the OS opens): the holder keeps an exclusive ``flock`` on the
  file for its whole life. The kernel drops it when the process ends in any way (kill -9 included), so a dead
  holder never blocks the next run; the file itself stays, with the last holder's details. On NFS the lock is
  as reliable as the server's lock manager.
- **Object stores** (``gs://`` and other epath schemes, where nothing can be locked): the lock is an object
  created only if absent (GCS's ``ifGenerationMatch=0`` precondition, through fsspec) that the holder renews
  every ``lease_s / 4`` seconds. A lock whose holder ran on this host under a pid that is gone (or reused by a
  later process) is stale at once; any other lock is stale when it was not renewed for ``lease_s`` seconds
  (a lost host). A stale lock is replaced; the newcomer re-reads it after a settling delay and gives up if
  another newcomer replaced it meanwhile, and a holder that finds its lock replaced stops at its next step.
  So at most one run trains past its next renewal, and a killed run blocks the next for at most ``lease_s``
  (not at all on the same host).

Multi-process runs have one holder, process 0; the others learn from it whether the run may go on.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator

import jax
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

from edt_jax import paths

LOCK_FILENAME = "run.lock"
DEFAULT_LEASE_S = 120.0


class WorkdirBusyError(RuntimeError):
    """Another live run holds the workdir."""


class LostWorkdirError(RuntimeError):
    """This run's hold on an object-store workdir was taken over by another run."""


@dataclasses.dataclass(frozen=True)
class Holder:
    """Who holds a workdir: written into the lock file as JSON."""

    host: str
    pid: int
    started: str          # ISO time the run took the workdir
    token: str            # unique per hold, so a holder recognises its own lock
    process_start: str    # the pid's start time on its host (tells a reused pid from the holder)
    renewed: float = 0.0  # time.time() of the last renewal (object stores)

    @classmethod
    def of_this_process(cls) -> Holder:
        now = time.time()
        return cls(host=socket.gethostname(), pid=os.getpid(),
                   started=datetime.datetime.fromtimestamp(now).astimezone().isoformat(timespec="seconds"),
                   token=uuid.uuid4().hex, process_start=_process_start(os.getpid()), renewed=now)

    @classmethod
    def parse(cls, text: str) -> Holder | None:
        try:
            fields = json.loads(text)
            return cls(**{f.name: fields[f.name] for f in dataclasses.fields(cls) if f.name in fields})
        except (ValueError, TypeError, KeyError):
            return None  # empty, half-written or foreign content

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self)) + "\n"

    def describe(self) -> str:
        return f"host {self.host}, pid {self.pid}, started {self.started}"

    def is_dead(self, lease_s: float) -> bool:
        """Whether this holder certainly stopped: same host and its pid gone or reused, or its lease expired."""
        if self.host == socket.gethostname() and _process_start(self.pid) != self.process_start:
            return True
        return time.time() - self.renewed > lease_s


def _process_start(pid: int) -> str:
    """The start time of process ``pid`` on this host ("" when there is no such process).

    Linux: field 22 of ``/proc/<pid>/stat`` (clock ticks since boot), which tells a reused pid from the holder.
    Elsewhere only whether the pid exists.
    """
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except FileNotFoundError:
        return ""
    except OSError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return ""
    except PermissionError:
        pass
    return "alive"


def _busy(workdir: str, holder: Holder | None) -> WorkdirBusyError:
    who = holder.describe() if holder is not None else "a run whose details could not be read"
    return WorkdirBusyError(f"workdir {workdir} is held by another live run ({who}); wait for it to stop, stop "
                            f"it, or train into another --workdir")


class _FileLock:
    """The holder side on a filesystem the OS opens: an exclusive ``flock`` kept until ``release``."""

    def __init__(self, workdir: str):
        import fcntl

        self._fcntl = fcntl
        self.workdir = workdir
        self.path = os.path.join(workdir, LOCK_FILENAME)
        self._file = None

    def acquire(self) -> None:
        os.makedirs(self.workdir, exist_ok=True)
        handle = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 - held open for the run's life
        try:
            self._fcntl.flock(handle, self._fcntl.LOCK_EX | self._fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = Holder.parse(handle.read())
            handle.close()
            raise _busy(self.workdir, holder) from None
        except OSError as err:  # a filesystem without locks (some FUSE mounts): train, but say it is unguarded
            logging.warning("workdir %s: this filesystem cannot lock files (%s); a second run on it would not be "
                            "stopped", self.workdir, err)
        handle.seek(0)
        handle.truncate()
        handle.write(Holder.of_this_process().to_json())
        handle.flush()
        self._file = handle

    def release(self) -> None:
        if self._file is not None:
            # The file stays (with the last holder's details): deleting it would let a run that opened it just
            # before the deletion lock the old inode while a third locks a new one.
            with contextlib.suppress(OSError):  # nothing to unlock where the filesystem had no locks
                self._fcntl.flock(self._file, self._fcntl.LOCK_UN)
            self._file.close()
            self._file = None


class _LeaseLock:
    """The holder side on an object store: a create-if-absent object renewed by a background thread."""

    def __init__(self, workdir: str, lease_s: float, settle_s: float):
        import fsspec

        self.workdir = workdir
        self.url = workdir.rstrip("/") + "/" + LOCK_FILENAME
        self.fs, self.key = fsspec.core.url_to_fs(self.url)
        self.lease_s, self.settle_s = lease_s, settle_s
        self.holder: Holder | None = None
        self.lost: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _read(self) -> Holder | None:
        self.fs.invalidate_cache(self.key)
        try:
            return Holder.parse(self.fs.cat_file(self.key).decode("utf-8", "replace"))
        except FileNotFoundError:
            return None

    def _create(self, holder: Holder) -> bool:
        try:
            self.fs.pipe_file(self.key, holder.to_json().encode(), mode="create")
            return True
        except FileExistsError:
            return False

    def acquire(self) -> None:
        mine = Holder.of_this_process()
        took_over = False
        for _ in range(3):
            if self._create(mine):
                break
            current = self._read()
            if current is not None and not current.is_dead(self.lease_s):
                raise _busy(self.workdir, current)
            logging.warning("workdir %s: replacing the stale lock of %s", self.workdir,
                            current.describe() if current else "an unreadable holder")
            with contextlib.suppress(FileNotFoundError):
                self.fs.rm_file(self.key)
            took_over = True
        else:
            raise _busy(self.workdir, self._read())
        if took_over:  # another newcomer may have replaced the same stale lock: the later write wins
            time.sleep(self.settle_s)
            current = self._read()
            if current is None or current.token != mine.token:
                raise _busy(self.workdir, current)
        self.holder = mine
        self._thread = threading.Thread(target=self._renew, name="workdir-lease", daemon=True)
        self._thread.start()

    def _renew(self) -> None:
        while not self._stop.wait(self.lease_s / 4):
            try:
                current = self._read()
                if current is None:  # a newcomer replacing a stale lock deletes it, then writes its own
                    time.sleep(self.settle_s)
                    current = self._read()
                if current is None or current.token != self.holder.token:
                    self.lost = current.describe() if current else "nobody (the lock was deleted)"
                    return
                self.holder = dataclasses.replace(self.holder, renewed=time.time())
                self.fs.pipe_file(self.key, self.holder.to_json().encode())
            except Exception as err:  # noqa: BLE001 - a failed renewal is retried; the lease covers several
                logging.warning("workdir %s: renewing the lock failed (%s)", self.workdir, err)

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self.holder is not None and self.lost is None:
            current = self._read()
            if current is not None and current.token == self.holder.token:
                with contextlib.suppress(FileNotFoundError):
                    self.fs.rm_file(self.key)
        self.holder = None


class WorkdirHold:
    """What ``hold_workdir`` yields: whether the hold was lost (object stores), and the error saying so."""

    def __init__(self, workdir: str, lock):
        self.workdir, self._lock = workdir, lock

    @property
    def lost(self) -> bool:
        """Whether another run took the workdir over (only process 0's hold can tell)."""
        return getattr(self._lock, "lost", None) is not None

    def lost_error(self) -> LostWorkdirError:
        who = getattr(self._lock, "lost", None) or "see process 0"
        return LostWorkdirError(f"workdir {self.workdir} was taken over by another run ({who}); this run stops "
                                f"without writing more")


_HELD: dict[str, WorkdirHold] = {}  # workdirs this process holds: a nested hold of the same one is free


@contextlib.contextmanager
def hold_workdir(workdir: paths.PathLike, *, lease_s: float = DEFAULT_LEASE_S,
                 settle_s: float = 2.0) -> Iterator[WorkdirHold]:
    """Hold ``workdir`` for the body: ``WorkdirBusyError`` (one line) when another live run holds it.

    Every process of a multi-process run must enter together; process 0 holds the lock and tells the others.
    Holding a workdir this process already holds is a no-op, so a caller may take it early (before building
    the dataset) and the trainer again.
    """
    key = paths.expand(workdir)
    if key in _HELD:
        yield _HELD[key]
        return
    lock = None
    error: Exception | None = None
    if jax.process_index() == 0:
        lock = _LeaseLock(key, lease_s, settle_s) if paths.is_url(key) else _FileLock(key)
        try:
            lock.acquire()
        except WorkdirBusyError as err:
            error, lock = err, None
    if jax.process_count() > 1:
        held = bool(multihost_utils.broadcast_one_to_all(np.int32(error is None)))
        if not held and error is None:
            error = WorkdirBusyError(f"workdir {key} is held by another live run (process 0 says which)")
    if error is not None:
        raise error
    hold = WorkdirHold(key, lock)
    _HELD[key] = hold
    try:
        yield hold
    finally:
        del _HELD[key]
        if lock is not None:
            lock.release()
