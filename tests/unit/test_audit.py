"""The command audit log, unsigned mode and record basics: chain, tampering named by file, line and seq, reopen.

The signed checkpoints are in test_audit_signed.py, the CLI in test_audit_cli.py.
"""

import json
from datetime import datetime
from pathlib import Path

import pytest

from gateway.commands.audit import (CONFIRMED, GENESIS, RECEIVED, REFUSED, AuditError, AuditLog, ChainBroken,
                                    RecordDamaged, describe, digest, new_command_id, record_hash, show, verify)
from tests.auditlogs import T0, StepClock, lines_of, rewrite


def write_log(path: Path, count: int, algorithm: str = "sha256") -> list[dict]:
    """A log of ``count`` records; record i carries value float(i)."""
    with AuditLog(str(path), algorithm, clock=StepClock()) as log:  # type: ignore[arg-type]
        return [log.append(RECEIVED, command=f"c{i}", group="provincial", point="pcs1.p_set", value=float(i))
                for i in range(1, count + 1)]


def test_sm3_known_answer() -> None:
    """SM3 of b"abc" is the GB/T 32905 test vector."""
    assert digest(b"abc", "sm3") == "66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0"


@pytest.mark.parametrize("algorithm", ["sha256", "sm3"])
def test_clean_log_verifies(tmp_path: Path, algorithm: str) -> None:
    """An untouched unsigned log is intact with either algorithm, but reported unsigned, never OK."""
    path = tmp_path / "audit.jsonl"
    records = write_log(path, 5, algorithm)
    result = verify(path)
    assert (result.status, result.ok, result.intact) == ("unsigned", False, True)
    assert (result.records, result.first_bad, result.algorithm) == (5, None, algorithm)
    assert [r["seq"] for r in records] == [1, 2, 3, 4, 5]
    assert records[0]["prev"] == GENESIS
    assert all(later["prev"] == earlier["hash"] for earlier, later in zip(records, records[1:]))
    assert all(r["alg"] == algorithm and r["hash"] == record_hash(r, algorithm) for r in records)
    assert result.last_hash == records[-1]["hash"]


def test_record_fields_and_timestamps(tmp_path: Path) -> None:
    """A record has seq, UTC time with ms and Z, local time with offset, alg, event, fields, prev, hash."""
    path = tmp_path / "audit.jsonl"
    with AuditLog(path, clock=lambda: T0) as log:
        record = log.append(REFUSED, command="abc", value=float("nan"), issued_at=T0, reason="不在限值内")
    assert list(record)[:5] == ["seq", "ts", "ts_local", "alg", "event"] and list(record)[-2:] == ["prev", "hash"]
    assert record["ts"] == "2025-03-01T02:15:00.123Z"
    assert datetime.fromisoformat(record["ts_local"]) == T0.replace(microsecond=123000)
    assert record["value"] == "nan" and record["issued_at"] == T0.isoformat()
    assert json.loads(lines_of(path)[0]) == record
    assert verify(path).intact


def test_append_refuses_reserved_and_non_json_fields(tmp_path: Path) -> None:
    """A field named like a chain field, or a value JSON cannot carry, is an AuditError, not a silent str()."""
    with AuditLog(tmp_path / "audit.jsonl") as log:
        with pytest.raises(AuditError, match="reserved"):
            log.append(RECEIVED, seq=5)
        with pytest.raises(AuditError, match="'value'"):
            log.append(RECEIVED, value=object())
        assert log.seq == 0


def test_edited_value_names_the_record(tmp_path: Path) -> None:
    """Changing one record's value fails verify at that record: hash does not match its content."""
    path = tmp_path / "audit.jsonl"
    write_log(path, 10)
    lines = lines_of(path)
    record = json.loads(lines[6])
    record["value"] = 70.0
    lines[6] = json.dumps(record, separators=(",", ":")) + "\n"
    rewrite(path, lines)
    result = verify(path)
    assert isinstance(result.error, RecordDamaged) and result.first_bad == 7 and result.records == 6
    assert result.reason == f"{path}:7: seq 7: hash does not match its content (edited)"


def test_edited_and_rehashed_record_is_caught_by_the_next_link(tmp_path: Path) -> None:
    """Rehashing an edited record does not hide it: the next record's prev no longer matches."""
    path = tmp_path / "audit.jsonl"
    write_log(path, 10)
    lines = lines_of(path)
    record = json.loads(lines[6])
    record["value"] = 70.0
    record["hash"] = record_hash(record, "sha256")
    lines[6] = json.dumps(record) + "\n"
    rewrite(path, lines)
    result = verify(path)
    assert isinstance(result.error, ChainBroken) and result.first_bad == 7
    assert result.reason.startswith(f"{path}:8: seq 8: prev does not match the hash of seq 7 (line 7)")


def test_deleted_record_is_named(tmp_path: Path) -> None:
    """Removing one record fails verify at the gap, naming the removed seq."""
    path = tmp_path / "audit.jsonl"
    write_log(path, 10)
    lines = lines_of(path)
    del lines[7]
    rewrite(path, lines)
    result = verify(path)
    assert isinstance(result.error, ChainBroken) and result.first_bad == 8 and result.line == 8
    assert result.reason == f"{path}:8: seq 9: follows seq 7: seq 8 removed"


def test_deleted_first_record_is_named(tmp_path: Path) -> None:
    """Removing the first record fails verify: the log starts at seq 2."""
    path = tmp_path / "audit.jsonl"
    write_log(path, 3)
    rewrite(path, lines_of(path)[1:])
    result = verify(path)
    assert not result.intact and result.first_bad == 1
    assert result.reason == f"{path}:1: seq 2: is the first record: seq 1 removed"


def test_swapped_records_are_reported_as_reordered(tmp_path: Path) -> None:
    """Swapping two records fails verify at the first of them, saying where the missing seq went."""
    path = tmp_path / "audit.jsonl"
    write_log(path, 10)
    lines = lines_of(path)
    lines[4], lines[5] = lines[5], lines[4]
    rewrite(path, lines)
    result = verify(path)
    assert not result.intact and result.first_bad == 6 and result.line == 5
    assert result.reason == f"{path}:5: seq 6: seq 6 after seq 4: records reordered (seq 5 is at line 6)"


def test_duplicated_record_is_out_of_order(tmp_path: Path) -> None:
    """A record copied in again fails verify as out of order."""
    path = tmp_path / "audit.jsonl"
    write_log(path, 4)
    lines = lines_of(path)
    rewrite(path, lines[:3] + [lines[2]] + lines[3:])
    result = verify(path)
    assert not result.intact and result.line == 4
    assert result.reason == f"{path}:4: seq 3: seq 3 after seq 3: out of order (moved or duplicated)"


def test_torn_last_line_is_reported(tmp_path: Path) -> None:
    """A last line cut short (crash mid-write) fails verify at that line; the records before it are intact."""
    path = tmp_path / "audit.jsonl"
    write_log(path, 10)
    path.write_bytes(path.read_bytes()[:-25])
    result = verify(path)
    assert isinstance(result.error, RecordDamaged)
    assert result.records == 9 and result.first_bad == 10 and result.line == 10
    assert result.reason.startswith(f"{path}:10: torn record (no end of line)")


def test_duplicate_key_is_an_edit(tmp_path: Path) -> None:
    """A line with a key twice (readers disagree which one counts) fails verify."""
    path = tmp_path / "audit.jsonl"
    write_log(path, 2)
    lines = lines_of(path)
    lines[1] = lines[1].replace('"value":2.0', '"value":2.0,"value":9.0')
    rewrite(path, lines)
    result = verify(path)
    assert not result.intact and result.line == 2 and "'value' appears twice" in result.reason


def test_reopen_continues_the_chain(tmp_path: Path) -> None:
    """Appending after reopening links the new record to the last one on disk."""
    path = tmp_path / "audit.jsonl"
    first = write_log(path, 3)
    with AuditLog(path) as log:
        assert log.seq == 3 and log.problem is None
        more = log.append(CONFIRMED, command="c3", latency_ms=12.5)
    assert more["seq"] == 4 and more["prev"] == first[-1]["hash"]
    assert verify(path).intact and verify(path).records == 4


@pytest.mark.parametrize("damage", ["torn", "edited"])
def test_append_refuses_a_broken_chain(tmp_path: Path, damage: str) -> None:
    """A torn or edited last record makes append raise AuditError and leaves the file as evidence."""
    path = tmp_path / "audit.jsonl"
    write_log(path, 3)
    if damage == "torn":
        path.write_bytes(path.read_bytes()[:-10])
    else:
        rewrite(path, [line.replace('"value":3.0', '"value":30.0') for line in lines_of(path)])
    before = path.read_bytes()
    with AuditLog(path) as log:
        assert log.problem is not None and "audit verify" in log.problem
        with pytest.raises(AuditError, match="cannot be continued"):
            log.append(RECEIVED, command="x")
    assert path.read_bytes() == before


def test_append_refuses_another_algorithm(tmp_path: Path) -> None:
    """Reopening a sha256 log as sm3 refuses to append rather than mixing algorithms in one chain."""
    path = tmp_path / "audit.jsonl"
    write_log(path, 2, "sha256")
    with AuditLog(path, "sm3") as log, pytest.raises(AuditError, match="chained with sha256"):
        log.append(RECEIVED)


def test_second_writer_is_refused(tmp_path: Path) -> None:
    """Two writers on one file would fork the chain: the second open is an AuditError."""
    path = tmp_path / "audit.jsonl"
    with AuditLog(path):
        with pytest.raises(AuditError, match="in use"):
            AuditLog(path)
    AuditLog(path).close()


def test_show_filters_by_command_and_last(tmp_path: Path) -> None:
    """show returns the last N records, or one command's records, in file order."""
    path = tmp_path / "audit.jsonl"
    write_log(path, 5)
    assert [r["seq"] for r in show(path, last=2)] == [4, 5]
    assert [r["seq"] for r in show(path, command="c3")] == [3]
    assert show(path, last=0) == []


def test_describe_is_one_readable_line(tmp_path: Path) -> None:
    """A record prints as local time, seq, event, command, group, point = value, reason."""
    path = tmp_path / "audit.jsonl"
    with AuditLog(path, clock=lambda: T0) as log:
        record = log.append(REFUSED, command="3f2a9c01b2d4", group="provincial", point="pcs1.p_set",
                            value=500.0, reason="above max 400")
    line = describe(record)
    assert line.startswith(record["ts_local"])
    for part in ("#1 ", "refused", "3f2a9c01b2d4", "provincial", "pcs1.p_set = 500.0", "reason: above max 400"):
        assert part in line


def test_command_ids_are_short_and_unique() -> None:
    """new_command_id gives 12 hex characters, different each time."""
    ids = {new_command_id() for _ in range(1000)}
    assert len(ids) == 1000 and all(len(i) == 12 and int(i, 16) >= 0 for i in ids)
