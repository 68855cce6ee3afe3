"""One run per workdir: the holder is named, a dead holder never blocks, object stores use a renewed lease."""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
from gcs_emulator import BUCKET, gcs_emulator

from edt_jax.training.workdir_lock import (
    LOCK_FILENAME,
    Holder,
    LostWorkdirError,
    WorkdirBusyError,
    _LeaseLock,
    hold_workdir,
)

HOLD_AND_WAIT = ("import sys, time\n"
                 "from edt_jax.training.workdir_lock import hold_workdir\n"
                 "with hold_workdir(sys.argv[1]):\n"
                 "    print('held', flush=True)\n"
                 "    time.sleep(600)\n")


def hold_in_child(workdir: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD_AND_WAIT, workdir], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_live_holder_is_named_and_a_killed_one_does_not_block(tmp_path):
    workdir = str(tmp_path / "run")
    child = hold_in_child(workdir)
    try:
        with pytest.raises(WorkdirBusyError) as busy:
            with hold_workdir(workdir):
                pass
        message = str(busy.value)
        assert "\n" not in message
        assert workdir in message and f"pid {child.pid}" in message and socket.gethostname() in message
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    # The kernel dropped the dead holder's lock: the next run takes the workdir at once.
    with hold_workdir(workdir) as hold:
        assert not hold.lost
        assert f'"pid": {os.getpid()}' in (tmp_path / "run" / LOCK_FILENAME).read_text()
        with hold_workdir(workdir):  # this process already holds it: a nested hold is free
            pass
    with hold_workdir(workdir):  # released on exit
        pass


def test_holder_liveness_by_pid_on_this_host_and_by_lease_elsewhere():
    me = Holder.of_this_process()
    assert not me.is_dead(lease_s=60)
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True, check=True)
    gone = dataclasses.replace(me, pid=int(finished.stdout))
    assert gone.is_dead(lease_s=1e9)  # same host, pid gone: dead however fresh its lease
    reused = dataclasses.replace(me, process_start="1")
    assert reused.is_dead(lease_s=1e9)  # same pid, another process start: the pid was reused
    far = dataclasses.replace(me, host="another-host", pid=1)
    assert not far.is_dead(lease_s=60)
    assert dataclasses.replace(far, renewed=time.time() - 61).is_dead(lease_s=60)
    assert Holder.parse(me.to_json()) == me and Holder.parse('{"host": "x"') is None


def test_object_store_lease_refuses_replaces_stale_and_fences_the_loser():
    with gcs_emulator():
        workdir = f"gs://{BUCKET}/lease_run"
        first = _LeaseLock(workdir, lease_s=0.4, settle_s=0.2)
        first.acquire()
        try:
            with pytest.raises(WorkdirBusyError, match=f"workdir {workdir} is held by another live run .*pid "
                                                       f"{os.getpid()}"):
                _LeaseLock(workdir, lease_s=0.4, settle_s=0.2).acquire()
            # A lost host: its lock says another machine and stops being renewed. Hand-write such a lock over ours.
            stale = dataclasses.replace(first.holder, host="lost-host", token="stale", renewed=time.time() - 5)
            first.fs.pipe_file(first.key, stale.to_json().encode())
            second = _LeaseLock(workdir, lease_s=0.4, settle_s=0.2)
            second.acquire()  # the lease expired: replaced
            deadline = time.time() + 10
            while first.lost is None and time.time() < deadline:
                time.sleep(0.05)
            assert first.lost is not None and "pid" in first.lost  # the old holder learns it lost the workdir
            second.release()
            assert not first.fs.exists(first.key)  # a clean stop removes the lock
        finally:
            first.release()


def test_lost_workdir_error_is_one_line():
    from edt_jax.training.workdir_lock import WorkdirHold

    class Lock:
        lost = "host h, pid 1, started t"

    hold = WorkdirHold("gs://b/run", Lock())
    assert hold.lost
    error = hold.lost_error()
    assert isinstance(error, LostWorkdirError) and "\n" not in str(error) and "gs://b/run" in str(error)
