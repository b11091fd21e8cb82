"""The gateway's audit log fsyncs on a thread of its own: appends do not wait for the disk, the
state follows only durable checkpoints, and a failed fsync fails every later command closed."""

import errno
import threading
from pathlib import Path
from unittest import mock

import pytest

from gateway.commands import auditsync
from gateway.commands.audit import CHECKPOINT, RECEIVED, AuditError, AuditLog, verify
from tests.auditlogs import Keys, StepClock, lines_of, signed_log


@pytest.fixture
def keys(tmp_path: Path) -> Keys:
    return Keys(tmp_path)


def test_a_background_synced_log_verifies_and_its_state_is_the_last_checkpoint(tmp_path: Path, keys: Keys) -> None:
    path = tmp_path / "audit.jsonl"
    records = signed_log(path, keys, 2500, every=1000, background_sync=True)
    result = verify(path, keys.public, keys.state(path))
    assert (result.status, result.unsealed) == ("ok", 0)
    last = [r for r in records if r["event"] == CHECKPOINT][-1]
    assert keys.state(path).read_text().strip() == lines_of(path)[-1].strip() and last["reason"] == "close"


def test_append_returns_while_the_fsync_is_still_on_the_disk(tmp_path: Path, keys: Keys) -> None:
    """An fsync held back (a disk that takes its time) does not hold back ``append``."""
    release, calls, done = threading.Event(), [], []
    real_fsync = auditsync.os.fsync

    def held_fsync(fd: int) -> None:
        if threading.current_thread().name.startswith("audit-fsync"):  # not the folder fsync at creation
            calls.append(fd)
            release.wait(10)
            done.append(fd)
        real_fsync(fd)

    path = tmp_path / "audit.jsonl"
    with mock.patch.object(auditsync.os, "fsync", held_fsync):
        log = AuditLog(path, clock=StepClock(), key=keys.private, background_sync=True)
        for i in range(20):
            log.append(RECEIVED, command=f"c{i}", point="pcs1.p_set", value=float(i))
        written, synced = len(lines_of(path)), len(done)
        release.set()
        log.close()
    assert (written, synced) == (21, 0) and calls  # genesis + 20 records in the file before any fsync ended
    assert verify(path, keys.public, keys.state(path)).status == "ok"


def test_a_failed_fsync_fails_the_next_append_closed(tmp_path: Path, keys: Keys) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path, clock=StepClock(), key=keys.private, background_sync=True)
    failed = threading.Event()

    def broken_fsync(fd: int) -> None:
        if threading.current_thread().name.startswith("audit-fsync"):
            failed.set()
            raise OSError(errno.EIO, "Input/output error")

    with mock.patch.object(auditsync.os, "fsync", broken_fsync):
        log.append(RECEIVED, command="c1", point="pcs1.p_set", value=1.0)
        assert failed.wait(10)
        log._syncer.drain()
    with pytest.raises(AuditError, match="making records durable failed .*Input/output error"):
        log.append(RECEIVED, command="c2", point="pcs1.p_set", value=2.0)
    assert log.problem is not None
