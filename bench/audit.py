"""Audit-log benchmark: write N signed records (checkpoint every 1000), then time ``verify``.

The records are written by ``AuditLog`` itself, the gate's record shape, with fsync switched off
for the benchmark only (fsync per record is the writer's promise, not what is measured here), and
rotated into parts of ``--max-bytes``; ``verify`` then checks every file, signature and link
with the public key and the state, as ``gridgate audit verify`` does.

Prints one summary line:
  audit verify N records (F files, C checkpoints, alg A) in X s = R records/s | write W s | P MB
"""

import argparse
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from unittest import mock

from gateway.commands import audit as audit_module
from gateway.commands.audit import CONFIRMED, READ_BACK, RECEIVED, WRITTEN, AuditLog, log_files, verify
from gateway.commands.auditkeys import init_key


class FastClock:
    """A clock stepping 1 ms per reading: realistic timestamps without reading the system clock."""

    def __init__(self) -> None:
        self.now = datetime(2025, 3, 1, tzinfo=timezone.utc)

    def __call__(self) -> datetime:
        self.now += timedelta(milliseconds=1)
        return self.now


def write(folder: Path, count: int, algorithm: str, max_bytes: int | None) -> tuple[Path, Path, Path]:
    """The log, its public key and its state file, after ``count`` records of commands (4 per command)."""
    key, public, _ = init_key(folder / "audit.key")
    path = folder / "audit.jsonl"
    events = (RECEIVED, WRITTEN, READ_BACK, CONFIRMED)
    with mock.patch.object(audit_module.os, "fsync", lambda fd: None), \
            mock.patch.object(audit_module, "write_state", lambda p, line: p.write_bytes(line)):
        log = AuditLog(path, algorithm, clock=FastClock(), key=key, max_bytes=max_bytes)  # type: ignore[arg-type]
        for index in range(count):
            log.append(events[index % 4], command=f"{index // 4:012x}", group="provincial",
                       point="pcs1.active_power_setpoint", value=float(index % 500), ioa=4001, type="C_SE_NC_1")
        log.close()
    assert log.state_path is not None
    return path, public, log.state_path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--hash", choices=["sha256", "sm3"], default="sha256")
    parser.add_argument("--max-bytes", type=int, default=64 * 1024 * 1024, help="rotate at this size (0: never)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="gridgate-bench-audit-") as name:
        folder = Path(name)
        started = time.perf_counter()
        path, public, state = write(folder, args.records, args.hash, args.max_bytes or None)
        written = time.perf_counter() - started
        files = log_files(path)
        size = sum(f.stat().st_size for f in files) / 1e6
        started = time.perf_counter()
        result = verify(files, public_key=public, state=state)
        took = time.perf_counter() - started
        if not result.ok:
            raise SystemExit(f"verify failed: {result.status}: {result.reason}")
        print(f"audit verify {result.records} records ({len(files)} files, {result.checkpoints} checkpoints, "
              f"alg {result.algorithm}) in {took:.2f} s = {result.records / took:,.0f} records/s | "
              f"write {written:.1f} s | {size:.0f} MB")


if __name__ == "__main__":
    main()
