"""`gridgate audit init|verify|show`: the key pair, exit codes (0 OK, 1 error, 3 not proven) and output lines."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.commands.audit import RECEIVED, AuditLog
from tests.auditlogs import Keys, StepClock, line_of_seq, lines_of, rewrite, signed_log


def gridgate(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gateway", *args], capture_output=True, text=True, timeout=60)


@pytest.fixture
def keys(tmp_path: Path) -> Keys:
    return Keys(tmp_path)


def test_init_writes_a_key_pair(tmp_path: Path) -> None:
    """`audit init --key` writes the private key 0600 and KEY.pub, prints the key id; a second run needs --force."""
    key = tmp_path / "etc" / "audit.key"
    made = gridgate("audit", "init", "--key", str(key))
    assert made.returncode == 0, made.stderr
    lines = made.stdout.splitlines()
    assert lines[0] == f"wrote {key} (private signing key, mode 0600: keep it on the gateway, never with the log)"
    assert lines[1] == f"wrote {key}.pub (public key: give it to whoever verifies the log)"
    assert lines[2].startswith("key id ") and len(lines[2].split()[-1]) == 16
    assert key.stat().st_mode & 0o777 == 0o600 and b"PUBLIC KEY" in Path(f"{key}.pub").read_bytes()
    again = gridgate("audit", "init", "--key", str(key))
    assert again.returncode == 1 and "exists" in again.stderr and "--force" in again.stderr
    assert gridgate("audit", "init", "--key", str(key), "--force").returncode == 0


def test_verify_ok(tmp_path: Path, keys: Keys) -> None:
    """A clean signed log with its public key and state: exit 0, an OK line naming key and last checkpoint."""
    path = tmp_path / "audit.jsonl"
    signed_log(path, keys, 3, clock=StepClock())
    result = gridgate("audit", "verify", str(path), "--public-key", str(keys.public), "--state", str(keys.state(path)))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == (f"OK: 5 records, chain intact (sha256), signed by key {keys.id}; last checkpoint seq 5 "
                        f"(close, 2025-03-01T02:15:05.123Z)")
    assert lines[1] == f"NOTE: state {keys.state(path)}: checkpoint seq 5 found in the chain"
    assert lines[-1].startswith("last hash ") and result.stderr == ""


def test_verify_edit_is_exit_1(tmp_path: Path, keys: Keys) -> None:
    """An edited record: exit 1, ERROR naming file, line and seq on stderr."""
    path = tmp_path / "audit.jsonl"
    signed_log(path, keys, 3)
    rewrite(path, [line.replace('"value":2.0', '"value":20.0') for line in lines_of(path)])
    result = gridgate("audit", "verify", str(path), "--public-key", str(keys.public))
    assert result.returncode == 1
    assert result.stderr.splitlines() == [f"ERROR: {path}:3: seq 3: hash does not match its content (edited)",
                                          "  2 record(s) intact before it"]


def test_verify_unsealed_tail_is_a_warning(tmp_path: Path, keys: Keys) -> None:
    """Records after the last checkpoint: exit 0 with a WARNING line saying how many and after which seq."""
    path = tmp_path / "audit.jsonl"
    signed_log(path, keys, 5, every=2, close=False)
    result = gridgate("audit", "verify", str(path), "--public-key", str(keys.public))
    assert result.returncode == 0, result.stderr
    assert "WARNING: unsealed: 1 records after the last checkpoint (seq 7)" in result.stdout.splitlines()


def test_verify_cut_before_the_state_is_exit_1(tmp_path: Path, keys: Keys) -> None:
    """A log cut before the checkpoint the state names: exit 1, 'cut before the last checkpoint'."""
    path = tmp_path / "audit.jsonl"
    signed_log(path, keys, 4, every=2)
    rewrite(path, lines_of(path)[:line_of_seq(path, 4) + 1])
    result = gridgate("audit", "verify", str(path), "--public-key", str(keys.public), "--state", str(keys.state(path)))
    assert result.returncode == 1
    assert "cut before the last checkpoint" in result.stderr and "the log ends at seq 4" in result.stderr


def test_verify_empty_file_is_exit_1(tmp_path: Path, keys: Keys) -> None:
    """An empty file is not 'OK: 0 records': exit 1, no signed genesis."""
    path = tmp_path / "audit.jsonl"
    path.write_bytes(b"")
    result = gridgate("audit", "verify", str(path), "--public-key", str(keys.public))
    assert result.returncode == 1
    assert result.stderr.splitlines()[0] == f"ERROR: {path}: empty: no signed genesis (emptied, or the wrong file)"


def test_verify_unsigned_and_unproven_are_exit_3(tmp_path: Path, keys: Keys) -> None:
    """An old unsigned log, or a signed one without --public-key: exit 3 with UNSIGNED / UNPROVEN, never OK."""
    old = tmp_path / "old.jsonl"
    with AuditLog(old, "sm3", clock=StepClock()) as log:
        for i in range(3):
            log.append(RECEIVED, command=f"c{i}")
    unsigned = gridgate("audit", "verify", str(old))
    assert unsigned.returncode == 3
    assert unsigned.stdout.splitlines()[0].startswith("UNSIGNED: 3 records, chain intact (sm3), no signed checkpoint")
    path = tmp_path / "audit.jsonl"
    signed_log(path, keys, 1)
    unproven = gridgate("audit", "verify", str(path))
    assert unproven.returncode == 3
    assert unproven.stdout.splitlines()[0] == (f"UNPROVEN: 3 records, chain intact (sha256), signed by key {keys.id}, "
                                               f"signatures not checked: give --public-key KEY.pub")


def test_verify_takes_the_rotated_parts(tmp_path: Path, keys: Keys) -> None:
    """Given the active file, verify also checks its rotated parts FILE.<n>; a missing middle part is exit 1."""
    path = tmp_path / "audit.jsonl"
    signed_log(path, keys, 12, every=5, max_bytes=2000)
    parts = len(list(tmp_path.glob("audit.jsonl.*"))) + 1
    result = gridgate("audit", "verify", str(path), "--public-key", str(keys.public))
    assert result.returncode == 0, result.stderr
    assert f" in {parts} files (parts 1-{parts})" in result.stdout.splitlines()[0]
    Path(f"{path}.2").unlink()
    broken = gridgate("audit", "verify", str(tmp_path), "--public-key", str(keys.public))
    assert broken.returncode == 1 and "part 2 missing" in broken.stderr


def test_verify_missing_file(tmp_path: Path) -> None:
    """A log that cannot be read is exit 1 with the reason, not a traceback."""
    result = gridgate("audit", "verify", str(tmp_path / "absent.jsonl"))
    assert result.returncode == 1 and "cannot read" in result.stderr and "Traceback" not in result.stderr


def test_show_last_and_json(tmp_path: Path) -> None:
    """`audit show --last 2` prints two readable lines; --json prints the raw records."""
    path = tmp_path / "audit.jsonl"
    with AuditLog(path, clock=StepClock()) as log:
        records = [log.append(RECEIVED, command=f"c{i}", point="pcs1.p_set", value=float(i)) for i in range(1, 5)]
    shown = gridgate("audit", "show", str(path), "--last", "2")
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert len(lines) == 2 and "#3 " in lines[0] and "c4" in lines[1] and "pcs1.p_set = 4.0" in lines[1]
    raw = gridgate("audit", "show", str(path), "--command", "c2", "--json")
    assert [json.loads(line) for line in raw.stdout.splitlines()] == [records[1]]
