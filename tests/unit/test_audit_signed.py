"""The audit log proves its own end: signed genesis and checkpoints, the state file, rotation, restart."""

import json
import os
from datetime import timedelta
from pathlib import Path
from unittest import mock

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.commands import audit as audit_module
from gateway.commands.audit import (CHECKPOINT, GENESIS, OPEN, RECEIVED, AuditError, AuditKeyError, AuditLog,
                                    ChainBroken, LogCut, LogReplaced, RecordDamaged, SignatureInvalid, WrongKey,
                                    log_files, verify)
from gateway.commands.auditrecord import written_hash_ok
from tests.auditlogs import Keys, StepClock, crash, line_of_seq, lines_of, rechain, rewrite, signed_log, snapshot


@pytest.fixture
def keys(tmp_path: Path) -> Keys:
    return Keys(tmp_path)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "logs" / "audit.jsonl"


@pytest.fixture(autouse=True)
def _logs_folder(tmp_path: Path) -> None:
    (tmp_path / "logs").mkdir()


def events(records: list[dict]) -> list[str]:
    return [r["event"] for r in records]


# -- the clean log ----------------------------------------------------------------------------------

def test_signed_log_verifies_ok(path: Path, keys: Keys) -> None:
    """Genesis, a checkpoint after every N records and one at close: OK with the public key and the state."""
    records = signed_log(path, keys, 7, every=3)
    three = [RECEIVED] * 3
    assert events(records) == [OPEN, *three, CHECKPOINT, *three, CHECKPOINT, RECEIVED, CHECKPOINT]
    assert [r["reason"] for r in records if r["event"] in (OPEN, CHECKPOINT)] == ["new", "count", "count", "close"]
    result = verify(path, keys.public, keys.state(path))
    assert (result.status, result.records, result.checkpoints, result.unsealed) == ("ok", 11, 4, 0)
    assert result.key_id == keys.id and result.last_checkpoint["reason"] == "close"
    assert not result.warnings and any("checkpoint seq 11 found" in note for note in result.notes)


def test_genesis_and_checkpoint_carry_what_they_bind(path: Path, keys: Keys) -> None:
    """The genesis binds log id, part, key id and the chain start; a checkpoint its count; neither holds the key."""
    records = signed_log(path, keys, 2, every=2)
    genesis, checkpoint = records[0], records[3]
    assert genesis["seq"] == 1 and genesis["prev"] == GENESIS and genesis["part"] == 1 and genesis["count"] == 0
    assert len(genesis["log"]) == 16 and genesis["key"] == keys.id and len(genesis["sig"]) == 128
    assert (checkpoint["count"], checkpoint["log"], checkpoint["prev"]) == (2, genesis["log"], records[2]["hash"])
    assert list(checkpoint)[-2:] == ["hash", "sig"]
    assert all(written_hash_ok(raw.encode(), json.loads(raw)) for raw in lines_of(path))
    assert b"PRIVATE" not in path.read_bytes() and keys.private.read_bytes()[:40] not in path.read_bytes()
    assert keys.state(path).read_bytes() == lines_of(path)[-1].encode()
    assert keys.private.stat().st_mode & 0o777 == 0o600


def test_maybe_checkpoint_seals_old_records_only(path: Path, keys: Keys) -> None:
    """The timer seals records once the oldest is checkpoint_interval_s old, not before, and not when none wait."""
    clock = StepClock()
    log = AuditLog(path, clock=clock, key=keys.private, checkpoint_interval_s=60)
    assert log.maybe_checkpoint() is None
    log.append(RECEIVED, command="c1")
    assert log.maybe_checkpoint(clock.now + timedelta(seconds=30)) is None
    sealed = log.maybe_checkpoint((clock.now + timedelta(seconds=61)).timestamp())
    assert sealed is not None and (sealed["reason"], sealed["count"]) == ("time", 1) and log.unsealed == 0
    assert log.maybe_checkpoint(clock.now + timedelta(hours=1)) is None
    log.close()


def test_callers_cannot_write_chain_records(path: Path, keys: Keys) -> None:
    """append refuses the log's own events and a sig field: a caller cannot forge a checkpoint."""
    with AuditLog(path, key=keys.private) as log:
        with pytest.raises(AuditError, match="log's own"):
            log.append(CHECKPOINT, reason="count")
        with pytest.raises(AuditError, match="reserved"):
            log.append(RECEIVED, sig="00")


# -- tampering --------------------------------------------------------------------------------------

def test_edit_is_detected(path: Path, keys: Keys) -> None:
    """An edited value fails verify at that record, naming file, line and seq."""
    signed_log(path, keys, 7, every=3)
    lines = lines_of(path)
    index = line_of_seq(path, 3)
    lines[index] = lines[index].replace('"value":2.0', '"value":20.0')
    rewrite(path, lines)
    result = verify(path, keys.public)
    assert isinstance(result.error, RecordDamaged) and (result.line, result.first_bad) == (3, 3)
    assert result.reason == f"{path}:3: seq 3: hash does not match its content (edited)"


def test_rechain_without_the_key_is_detected(path: Path, keys: Keys) -> None:
    """An edit re-hashed through the end of the file fails at the next checkpoint: its signature no longer holds."""
    signed_log(path, keys, 7, every=3)
    rechain(path, line_of_seq(path, 3), {"value": 20.0})
    result = verify(path, keys.public)
    assert isinstance(result.error, SignatureInvalid) and (result.line, result.error.seq) == (5, 5)
    assert result.error.what == ("checkpoint signature does not verify: the records it seals (seq 2-4) were changed "
                                 "and re-chained without the key")
    assert result.first_bad == 2


def test_rechain_signed_with_another_key_is_detected(path: Path, keys: Keys) -> None:
    """Re-chained and re-signed with the attacker's own key: the genesis names a key that is not the auditor's."""
    signed_log(path, keys, 4, every=3)
    rechain(path, 0, {}, resign=Ed25519PrivateKey.generate())
    result = verify(path, keys.public)
    assert isinstance(result.error, WrongKey) and result.line == 1
    assert f"not by the given key {keys.id}: the file was replaced" in result.reason


def test_deletion_in_the_middle_is_detected(path: Path, keys: Keys) -> None:
    """Removing a record between checkpoints fails verify at the gap, naming the removed seq."""
    signed_log(path, keys, 7, every=3)
    lines = lines_of(path)
    del lines[line_of_seq(path, 7)]
    rewrite(path, lines)
    result = verify(path, keys.public)
    assert isinstance(result.error, ChainBroken) and result.first_bad == 7
    assert result.reason == f"{path}:7: seq 8: follows seq 6: seq 7 removed"


def test_cut_tail_after_the_last_checkpoint_is_reported_unsealed(path: Path, keys: Keys) -> None:
    """Records cut after the last checkpoint cannot be proven missing: verify is OK but warns they are unsealed."""
    signed_log(path, keys, 5, every=3, close=False)  # crash: seq 6-7 unsealed after checkpoint seq 5
    rewrite(path, lines_of(path)[:-1])
    result = verify(path, keys.public, keys.state(path))
    assert result.status == "ok" and result.unsealed == 1
    assert result.warnings == ["unsealed: 1 records after the last checkpoint (seq 5)"]


def test_cut_before_the_last_checkpoint_is_an_error_with_the_state(path: Path, keys: Keys) -> None:
    """A cut that removes the last checkpoint: with the state, verify names it; without, it only looks unfinished."""
    signed_log(path, keys, 7, every=3)  # checkpoints at seq 5, 9, close at 11
    rewrite(path, lines_of(path)[:7])    # ends at seq 7, after checkpoint 5
    result = verify(path, keys.public, keys.state(path))
    assert isinstance(result.error, LogCut) and (result.line, result.error.seq) == (7, 7)
    assert result.error.what.startswith(f"cut before the last checkpoint: the state {keys.state(path)} names "
                                        f"checkpoint seq 11")
    assert result.error.what.endswith("the log ends at seq 7")
    blind = verify(path, keys.public)
    assert blind.status == "ok" and blind.warnings == ["unsealed: 2 records after the last checkpoint (seq 5)"]


def test_restart_refuses_a_log_cut_before_its_last_checkpoint(path: Path, keys: Keys) -> None:
    """Reopened after such a cut, the writer does not continue the numbering: problem set, append raises LogCut."""
    signed_log(path, keys, 7, every=3)
    rewrite(path, lines_of(path)[:5])  # ends at checkpoint seq 5; the state names seq 11
    before = path.read_bytes()
    log = AuditLog(path, key=keys.private)
    assert isinstance(log.problem_error, LogCut) and "names checkpoint seq 11" in log.problem
    with pytest.raises(LogCut):
        log.append(RECEIVED, command="x")
    log.close()
    assert path.read_bytes() == before


def test_empty_file_is_an_error(path: Path, keys: Keys) -> None:
    """An emptied log: verify says there is no signed genesis; the writer, which remembers one, refuses it."""
    signed_log(path, keys, 3)
    path.write_bytes(b"")
    result = verify(path, keys.public)
    assert isinstance(result.error, LogCut)
    assert result.reason == f"{path}: empty: no signed genesis (emptied, or the wrong file)"
    log = AuditLog(path, key=keys.private)
    assert isinstance(log.problem_error, LogCut) and "empty: no signed genesis" in log.problem
    log.close()


def test_replaced_file_signed_by_another_key(path: Path, keys: Keys, tmp_path: Path) -> None:
    """A whole new log made with another key: verify names the genesis; the gateway refuses to continue it."""
    signed_log(path, keys, 3)
    other = Keys(tmp_path / "attacker")
    forged = tmp_path / "forged" / "audit.jsonl"
    forged.parent.mkdir()
    signed_log(forged, other, 3)
    path.write_bytes(forged.read_bytes())
    result = verify(path, keys.public)
    assert isinstance(result.error, WrongKey) and (result.line, result.error.seq) == (1, 1)
    assert result.error.what == (f"genesis signed by key {other.id}, not by the given key {keys.id}: "
                                 f"the file was replaced")
    log = AuditLog(path, key=keys.private)
    assert isinstance(log.problem_error, WrongKey)
    log.close()


def test_replaced_by_an_unsigned_file(path: Path, keys: Keys) -> None:
    """An unsigned file where the state remembers a signed log is refused as replaced."""
    signed_log(path, keys, 3)
    path.unlink()
    with AuditLog(path) as unsigned:
        unsigned.append(RECEIVED, command="x")
    log = AuditLog(path, key=keys.private)
    assert isinstance(log.problem_error, LogReplaced) and "unsigned" in log.problem
    log.close()


def test_missing_state_file_refuses_to_continue(path: Path, keys: Keys) -> None:
    """Without its state file the writer cannot rule out a cut, so it refuses rather than continue silently."""
    signed_log(path, keys, 3)
    keys.state(path).unlink()
    log = AuditLog(path, key=keys.private)
    assert isinstance(log.problem_error, AuditKeyError) and "no state file" in log.problem
    log.close()


def test_unsigned_writer_refuses_a_signed_log(path: Path, keys: Keys) -> None:
    """Opening a signed log without its key refuses: unsealed records would follow forever."""
    signed_log(path, keys, 2)
    log = AuditLog(path)
    assert isinstance(log.problem_error, WrongKey) and "give its signing key" in log.problem
    log.close()


def test_missing_or_open_key_file_is_a_problem(path: Path, keys: Keys, tmp_path: Path) -> None:
    """No key file, or one others can read: problem set, every append refused, nothing written."""
    log = AuditLog(path, key=tmp_path / "absent.key")
    assert isinstance(log.problem_error, AuditKeyError) and "gridgate audit init --key" in log.problem
    log.close()
    os.chmod(keys.private, 0o644)
    log = AuditLog(path, key=keys.private)
    assert isinstance(log.problem_error, AuditKeyError) and "chmod 600" in log.problem
    log.close()
    assert path.read_bytes() == b""


# -- restart ----------------------------------------------------------------------------------------

def test_reopen_after_close_continues_the_chain(path: Path, keys: Keys) -> None:
    """A clean restart goes on from the close checkpoint: one chain, seq continuing, verify OK."""
    first = signed_log(path, keys, 2)
    more = signed_log(path, keys, 1)
    assert len(more) == len(first) + 2 and more[len(first)]["prev"] == first[-1]["hash"]
    assert verify(path, keys.public, keys.state(path)).status == "ok"


def test_crash_tail_is_adopted_on_restart(path: Path, keys: Keys) -> None:
    """Records left unsealed by a crash are sealed at restart (reason reopen) and verify says they were adopted."""
    signed_log(path, keys, 5, every=3, close=False)  # seq 6-7 unsealed
    with AuditLog(path, key=keys.private) as log:
        assert log.problem is None and log.unsealed == 0
    records = [json.loads(line) for line in lines_of(path)]
    assert (records[7]["reason"], records[7]["count"]) == ("reopen", 2)
    result = verify(path, keys.public, keys.state(path))
    assert result.status == "ok"
    assert result.warnings[0].startswith("adopted: 2 records (seq 6-7) were sealed at a restart (seq 8")


def test_state_behind_the_log_is_caught_up(path: Path, keys: Keys, tmp_path: Path) -> None:
    """A crash between the log's checkpoint and the state's update: the log is ahead, so it is continued."""
    signed_log(path, keys, 2, every=2, close=False)
    old_state = keys.state(path).read_bytes()  # checkpoint seq 4
    with AuditLog(path, key=keys.private) as log:
        log.append(RECEIVED, command="c3")
        log.checkpoint()
    keys.state(path).write_bytes(old_state)
    log = AuditLog(path, key=keys.private)
    assert log.problem is None and keys.state(path).read_bytes() == lines_of(path)[-1].encode()
    log.close()


def test_rolled_back_copy_is_refused(path: Path, keys: Keys, tmp_path: Path) -> None:
    """A backup put back in place of the log is behind the state: the writer refuses, verify names the cut."""
    signed_log(path, keys, 2)
    [backup] = snapshot([path], tmp_path / "backup")
    signed_log(path, keys, 2)
    path.write_bytes(backup.read_bytes())
    log = AuditLog(path, key=keys.private)
    assert isinstance(log.problem_error, LogCut)
    log.close()
    assert isinstance(verify(path, keys.public, keys.state(path)).error, LogCut)


# -- rotation ---------------------------------------------------------------------------------------

def test_rotation_by_size_carries_the_chain_across_files(path: Path, keys: Keys) -> None:
    """Past max_bytes the file is sealed and renamed <path>.<part>; the next genesis links to it; verify checks all."""
    signed_log(path, keys, 12, every=5, max_bytes=2000)
    files = log_files(path)
    assert len(files) >= 3
    assert [f.name for f in files] == [f"audit.jsonl.{n}" for n in range(1, len(files))] + ["audit.jsonl"]
    parts = [[json.loads(line) for line in lines_of(f)] for f in files]
    for before, after in zip(parts, parts[1:]):
        assert before[-1]["reason"] == "rotate" and after[0]["event"] == OPEN and after[0]["reason"] == "rotate"
        assert after[0]["prev"] == before[-1]["hash"] and after[0]["seq"] == before[-1]["seq"] + 1
        assert after[0]["prev_log"] == before[-1]["log"] and after[0]["part"] == before[-1]["part"] + 1
    result = verify(list(reversed(files)), keys.public, keys.state(path))
    assert result.status == "ok" and result.parts == (1, len(files)) and result.files == files
    assert result.records == sum(len(p) for p in parts)


def test_missing_middle_file_is_detected(path: Path, keys: Keys) -> None:
    """Without part 2 the chain has a hole: verify names the missing part and where it shows."""
    signed_log(path, keys, 12, every=5, max_bytes=2000)
    files = log_files(path)
    files[1].unlink()
    result = verify(log_files(path), keys.public)
    assert isinstance(result.error, LogCut) and result.error.file == files[2] and result.line == 1
    assert result.error.what == f"part 2 missing: this file (part 3) follows {files[0]} (part 1)"


def test_missing_newest_file_is_detected(path: Path, keys: Keys) -> None:
    """The active file deleted: the last part given ends in a rotation; the writer refuses to start afresh."""
    signed_log(path, keys, 12, every=5, max_bytes=2000)
    newest = len(log_files(path))
    path.unlink()
    result = verify(log_files(path), keys.public)
    assert isinstance(result.error, LogCut) and f"goes on in part {newest}" in result.reason
    log = AuditLog(path, key=keys.private)
    assert isinstance(log.problem_error, LogCut)
    log.close()


def test_rotation_by_age(path: Path, keys: Keys) -> None:
    """A file older than max_age_s is rotated by the timer, even when no record arrives."""
    clock = StepClock()
    log = AuditLog(path, clock=clock, key=keys.private, max_age_s=3600)
    log.append(RECEIVED, command="c1")
    log.maybe_checkpoint(clock.now + timedelta(minutes=30))
    assert log_files(path) == [path]
    clock.now += timedelta(hours=2)
    log.maybe_checkpoint()
    log.close()
    assert [f.name for f in log_files(path)] == ["audit.jsonl.1", "audit.jsonl"]
    assert verify(log_files(path), keys.public, keys.state(path)).status == "ok"


def test_interrupted_rotation_is_finished_on_restart(path: Path, keys: Keys) -> None:
    """A crash after renaming the old part but before the new genesis: the restart opens the next part, linked."""
    log = AuditLog(path, key=keys.private, max_bytes=1)
    log.append(RECEIVED, command="c1")
    with mock.patch.object(audit_module, "open_locked", side_effect=AuditError("disk gone")):
        with pytest.raises(AuditError):
            log.append(RECEIVED, command="c2")
    crash(log)
    assert not path.exists() and rotated_exists(path)
    with AuditLog(path, key=keys.private) as resumed:
        assert resumed.problem is None
    genesis = json.loads(lines_of(path)[0])
    assert (genesis["part"], genesis["reason"]) == (2, "rotate")
    assert verify(log_files(path), keys.public, keys.state(path)).status == "ok"


def rotated_exists(path: Path) -> bool:
    return Path(f"{path}.1").exists()


# -- older logs and partial proofs -------------------------------------------------------------------

def test_unsigned_log_is_upgraded_in_place(path: Path, keys: Keys) -> None:
    """Opening an unsigned log with a key seals it with an upgrade genesis; verify notes what was unsigned."""
    with AuditLog(path) as old:
        for i in range(3):
            old.append(RECEIVED, command=f"old{i}")
    assert verify(path).status == "unsigned"
    signed_log(path, keys, 1)
    records = [json.loads(line) for line in lines_of(path)]
    assert (records[3]["event"], records[3]["reason"], records[3]["count"]) == (OPEN, "upgrade", 3)
    result = verify(path, keys.public, keys.state(path))
    assert result.status == "ok"
    assert any(note.startswith("seq 1-3 were written unsigned, before the upgrade at seq 4") for note in result.notes)


def test_without_the_public_key_a_signed_log_is_unproven(path: Path, keys: Keys) -> None:
    """An intact signed log checked without the public key is 'unproven', not OK."""
    signed_log(path, keys, 2)
    result = verify(path)
    assert (result.status, result.intact, result.key_id) == ("unproven", True, keys.id)


def test_write_failure_of_the_state_refuses_further_records(path: Path, keys: Keys) -> None:
    """A state file that cannot be written leaves the log's end unprovable: the writer fails closed."""
    log = AuditLog(path, key=keys.private, checkpoint_every=1)
    with mock.patch.object(audit_module, "write_state", side_effect=AuditKeyError("state: disk full")):
        with pytest.raises(AuditKeyError):
            log.append(RECEIVED, command="c1")
    assert "disk full" in log.problem
    with pytest.raises(AuditKeyError):
        log.append(RECEIVED, command="c2")
    log.close()
