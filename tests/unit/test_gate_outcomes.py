"""The CommandGate audits every outcome of a command it accepted: how far it went, then why it failed."""

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest_twisted
from twisted.internet.defer import fail, succeed

from gateway.commands.audit import AuditLog
from gateway.commands.gate import CommandGate, CommandRequest
from gateway.commands.policy import CommandPolicy
from gateway.config.profile import PointSpec
from gateway.errors import CommandFailed, CommandRejected
from gateway.model import CommandResult, Quality, Sample
from gateway.points import PointTable


class _Driver:
    """Fails (or succeeds) every command the way it is told to."""

    def __init__(self, outcome: Any) -> None:
        self.outcome = outcome

    def execute(self, command: Any) -> Any:
        if isinstance(self.outcome, Exception):
            return fail(self.outcome)
        return succeed(CommandResult(command, self.outcome, 0.0))


def _gate(tmp_path: Path, driver: _Driver) -> tuple[CommandGate, Path]:
    spec = PointSpec(id="p_set", writable={"min": -100, "max": 100})
    device = SimpleNamespace(name="pcs1", profile=SimpleNamespace(points=[spec]))
    table = PointTable()
    table.publish([Sample("pcs1._online", True, Quality.GOOD, 0.0, 0.0)])
    path = tmp_path / "audit.jsonl"
    policy = CommandPolicy(point="pcs1.p_set", groups=["dispatch"])
    return CommandGate([policy], [device], table, {"pcs1": driver}, AuditLog(path)), path


def _events(path: Path) -> list[tuple[str, Any]]:
    records = [json.loads(line) for line in path.read_text().splitlines()]
    return [(r["event"], r.get("acknowledged", r.get("readback"))) for r in records
            if r["event"] in ("received", "written", "read_back", "failed", "confirmed")]


async def _submit(gate: CommandGate) -> Any:
    return await gate.submit(CommandRequest("dispatch", "pcs1.p_set", 40.0))


@pytest_twisted.ensureDeferred
async def test_read_back_failure_after_an_acknowledged_write_is_audited_as_written_then_failed(tmp_path: Path) -> None:
    """The PCS took the write but answered the read-back with nothing: received, written, failed; not confirmed."""
    gate, path = _gate(tmp_path, _Driver(CommandFailed("written, read-back failed: 0 registers", True)))
    outcome = await _submit(gate)
    assert not outcome and "read-back failed" in outcome.reason
    assert [e for e, _ in _events(path)] == ["received", "written", "failed"]
    assert _events(path)[1] == ("written", True)


@pytest_twisted.ensureDeferred
async def test_wrong_read_back_is_audited_with_the_value_read(tmp_path: Path) -> None:
    """Read back 12 after writing 40: written, read_back 12, failed carrying 12."""
    gate, path = _gate(tmp_path, _Driver(CommandFailed("wrote 40, read back 12", True, read_back=True, readback=12.0)))
    assert not await _submit(gate)
    assert _events(path)[1:] == [("written", True), ("read_back", None), ("failed", 12.0)]


@pytest_twisted.ensureDeferred
async def test_unacknowledged_and_unknown_failures_are_audited_as_possibly_written(tmp_path: Path) -> None:
    """A write timeout, or an error nobody foresaw: written (not acknowledged), then failed."""
    for error in (CommandFailed("write not acknowledged", None), ZeroDivisionError("driver bug")):
        gate, path = _gate(tmp_path, _Driver(error))
        assert not await _submit(gate)
        assert [e for e in _events(path)][-2:] == [("written", False), ("failed", None)]
        path.unlink()


@pytest_twisted.ensureDeferred
async def test_refused_before_writing_is_audited_without_a_write(tmp_path: Path) -> None:
    """The driver refused before sending anything: received, failed; no written record."""
    gate, path = _gate(tmp_path, _Driver(CommandRejected("deadline passed before writing")))
    assert not await _submit(gate)
    assert [e for e, _ in _events(path)] == ["received", "failed"]
