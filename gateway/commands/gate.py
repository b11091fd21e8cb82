"""CommandGate: the only way a command reaches a driver.

Every command passes the same pipeline, each stage able to refuse with a reason that is audited
and logged once: master group allowed for the point; command age (time-tagged commands) and
replay; value (finite, inside the point's limits); rate limit and ramp; device communicating
and the target point valid; the site's interlocks (evaluated on the latest good values, failing
closed when an interlock's point has no valid value); one command per device at a time. Then
the driver writes with a deadline and reads back (tolerance per point), and only then is the
command confirmed. The fail-safe uses the same pipeline with its own origin.

Its audit records carry (all optional; ``audit show`` displays them): ``command`` (the id from
``new_command_id``), ``group`` (master group), ``point`` (device.point), ``value``, ``reason``,
plus ``ioa``, ``type``, ``issued_at``, ``origin``, ``latency_ms``.
"""

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from twisted.internet.defer import Deferred, inlineCallbacks

from gateway.commands.audit import (CONFIRMED, FAILED, FAILSAFE, READ_BACK, RECEIVED, REFUSED, SELECTED, WRITTEN,
                                    AuditLog, new_command_id)
from gateway.commands.policy import CommandPolicy, Interlock
from gateway.config.profile import PointSpec
from gateway.errors import CommandFailed, CommandRejected, GatewayError
from gateway.interfaces import IDriver
from gateway.model import ONLINE_POINT, Command, CommandResult, Device, Quality, Value, point_id
from gateway.points import PointTable

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CommandRequest:
    """A command as received, before any check."""

    group: str
    point: str  # device.point
    value: float
    ioa: int | None = None
    type: str = ""
    issued_at: float | None = None  # the command's own time tag (time-tagged types), POSIX seconds
    origin: str = "northbound"  # which side sent it: the 104 outstation says "iec104"


@dataclass(frozen=True)
class Outcome:
    """The gate's verdict on one command: confirmed by the device (with the value read back after
    the write), or not, with the reason."""

    confirmed: bool
    readback: Value = None
    reason: str = ""

    def __bool__(self) -> bool:
        return self.confirmed


@dataclass
class _PointState:
    last_value: float | None = None
    last_at: float = 0.0
    seen: dict[tuple, float] = field(default_factory=dict)  # replay keys -> when


class CommandGate:
    """Authorise, limit, interlock, execute, verify, audit."""

    def __init__(self, policies: Sequence[CommandPolicy], devices: Sequence[Device], table: PointTable,
                 drivers: Mapping[str, IDriver], audit: AuditLog, clock: Callable[[], float] = time.time) -> None:
        self._policies = {p.point: p for p in policies}
        self._specs: dict[str, PointSpec] = {point_id(d.name, p.id): p for d in devices for p in d.profile.points}
        self._table = table
        self._drivers = drivers
        self._audit = audit
        self._clock = clock
        self._state: dict[str, _PointState] = {}
        self._busy: set[str] = set()

    def submit(self, request: CommandRequest) -> Deferred:
        """Check and execute ``request``; fires an ``Outcome`` (true once the device confirmed).

        Never fails: an audit log that cannot be written (disk, broken chain) refuses the
        command, because an unaudited command must not reach a device.
        """
        return self._submit(request).addErrback(self._unaudited, request)

    def select(self, request: CommandRequest) -> Outcome:
        """Run every check ``submit`` runs, write nothing: the verdict on a select-before-operate
        select, audited as ``selected`` or ``refused``. A select that could never be executed is
        refused now, not at execute time."""
        cid = new_command_id()
        try:
            self._audit.append(RECEIVED, command=cid, stage="select", **_fields(request))
            self._check(request, select=True)
        except CommandRejected as refusal:
            return self._refused(cid, request, refusal.reason)
        except GatewayError as exc:
            return self._unaudited(exc, request)
        self._audit.append(SELECTED, command=cid, point=request.point, group=request.group, value=request.value)
        return Outcome(True)

    def _unaudited(self, failure: Any, request: CommandRequest) -> Outcome:
        reason = failure.getErrorMessage() if hasattr(failure, "getErrorMessage") else str(failure)
        log.error("command %s=%s from %s refused: %s", request.point, request.value, request.group, reason)
        return Outcome(False, reason=f"not audited: {reason}")

    def _refused(self, cid: str, request: CommandRequest, reason: str) -> Outcome:
        self._audit.append(REFUSED, command=cid, point=request.point, group=request.group, reason=reason)
        log.warning("command %s %s=%s from %s refused: %s", cid, request.point, request.value, request.group, reason)
        return Outcome(False, reason=reason)

    def refuse(self, request: CommandRequest, reason: str, **fields: Any) -> None:
        """Audit a command the protocol layer refused before any check (wrong cause, test bit,
        execute not bound to its select): received, then refused with the reason."""
        cid = new_command_id()
        self._audit.append(RECEIVED, command=cid, **_fields(request), **fields)
        self._refused(cid, request, reason)

    @inlineCallbacks
    def _submit(self, request: CommandRequest) -> Any:
        cid = new_command_id()
        self._audit.append(RECEIVED, command=cid, **_fields(request))
        device = request.point.split(".", 1)[0]
        try:
            policy = self._check(request)
        except CommandRejected as refusal:
            return self._refused(cid, request, refusal.reason)
        self._busy.add(device)
        try:
            result = yield self._execute(cid, request, policy)
        finally:
            self._busy.discard(device)
        return result

    @inlineCallbacks
    def _execute(self, cid: str, request: CommandRequest, policy: CommandPolicy | None) -> Any:
        device, point = request.point.split(".", 1)
        timeout = policy.timeout_s if policy else 5.0
        started = self._clock()
        command = Command(device, point, request.value, started + timeout, origin=f"{request.origin}:{request.group}")
        try:
            result: CommandResult = yield self._drivers[device].execute(command)
        except CommandFailed as exc:
            return self._failed(cid, request, exc, exc.written, exc.read_back, exc.readback)
        except CommandRejected as exc:  # the driver refused before writing
            return self._failed(cid, request, exc, False, False, None)
        except Exception as exc:  # noqa: BLE001 - unknown how far it went: audited as possibly written
            return self._failed(cid, request, exc, None, False, None)
        self._audit.append(WRITTEN, command=cid, point=request.point, value=request.value)
        self._audit.append(READ_BACK, command=cid, point=request.point, value=result.readback)
        state = self._state.setdefault(request.point, _PointState())
        state.last_value, state.last_at = request.value, self._clock()
        self._audit.append(CONFIRMED, command=cid, point=request.point, value=request.value,
                           latency_ms=round((result.completed_at - started) * 1000, 1))
        log.info("command %s %s=%s from %s confirmed (read back %s)", cid, request.point, request.value,
                 request.group, result.readback)
        return Outcome(True, result.readback)

    def _failed(self, cid: str, request: CommandRequest, exc: Exception, written: bool | None, read_back: bool,
                readback: Value) -> Outcome:
        """Audit how far a failed command went (written, read back), then the failure itself."""
        if written is not False:
            self._audit.append(WRITTEN, command=cid, point=request.point, value=request.value,
                               acknowledged=written is True)
        if read_back:
            self._audit.append(READ_BACK, command=cid, point=request.point, value=readback)
        self._audit.append(FAILED, command=cid, point=request.point, reason=str(exc), readback=readback)
        log.warning("command %s %s=%s failed: %s", cid, request.point, request.value, exc)
        return Outcome(False, readback, reason=str(exc))

    def _check(self, request: CommandRequest, select: bool = False) -> CommandPolicy | None:
        policy = self._policies.get(request.point)
        if request.origin != FAILSAFE and (policy is None or request.group not in policy.groups):
            raise CommandRejected(f"master group {request.group!r} is not allowed to command {request.point}")
        now = self._clock()
        state = self._state.setdefault(request.point, _PointState())
        if policy is not None and request.issued_at is not None:
            _check_age(request, policy, now)
            if not select:  # the execute that follows a select may carry the select's time tag
                _check_replay(request, policy, state, now)
        spec = self._specs.get(request.point)
        if spec is None or spec.writable is None:
            raise CommandRejected(f"{request.point} is not a writable point")
        _check_value(request, spec)
        if policy is not None and request.origin != FAILSAFE:
            _check_rate(request, policy, state, spec, now, self._current(request.point))
        self._check_device(request)
        for lock in policy.interlocks if policy else ():
            self._check_interlock(request, lock)
        return policy

    def _current(self, point: str) -> float | None:
        sample = self._table.get(point)
        if sample is None or sample.quality & Quality.IV or sample.value is None:
            return None
        return float(sample.value)

    def _check_device(self, request: CommandRequest) -> None:
        device = request.point.split(".", 1)[0]
        online = self._table.get(point_id(device, ONLINE_POINT))
        if online is None or online.value is not True:
            raise CommandRejected(f"device {device} is not communicating")
        if device in self._busy:
            raise CommandRejected(f"device {device} is executing another command")

    def _check_interlock(self, request: CommandRequest, lock: Interlock) -> None:
        if not lock.applies_to(request.value):
            return
        sample = self._table.get(lock.point)
        if sample is None or sample.value is None or sample.quality & (Quality.IV | Quality.NT):
            raise CommandRejected(f"interlock on {lock.point} cannot be evaluated (no valid value): {lock.reason}")
        if lock.refuses(sample.value):
            raise CommandRejected(f"interlock: {lock.reason} ({lock.point} = {sample.value})")


def _fields(request: CommandRequest) -> dict[str, Any]:
    return {"group": request.group, "point": request.point, "value": request.value, "ioa": request.ioa,
            "type": request.type, "issued_at": request.issued_at, "origin": request.origin}


def _check_age(request: CommandRequest, policy: CommandPolicy, now: float) -> None:
    age = now - (request.issued_at or now)
    if age > policy.max_age_s:
        raise CommandRejected(f"stale command: issued {age:.1f} s ago (max {policy.max_age_s:g} s)")
    if age < -policy.max_age_s:
        raise CommandRejected(f"command time tag {-age:.1f} s in the future")


def _check_replay(request: CommandRequest, policy: CommandPolicy, state: _PointState, now: float) -> None:
    for key, seen_at in list(state.seen.items()):
        if now - seen_at > policy.replay_window_s:
            del state.seen[key]
    key = (request.group, request.ioa, request.value, request.issued_at)
    if key in state.seen:
        raise CommandRejected("replayed command (same time tag and value seen before)")
    state.seen[key] = now


def _check_value(request: CommandRequest, spec: PointSpec) -> None:
    limits = spec.writable
    assert limits is not None
    if not math.isfinite(request.value):
        raise CommandRejected(f"{request.point}: value {request.value} is not a number")
    if not limits.min <= request.value <= limits.max:
        raise CommandRejected(f"{request.point}: {request.value:g} outside [{limits.min:g}, {limits.max:g}]")


def _check_rate(request: CommandRequest, policy: CommandPolicy, state: _PointState, spec: PointSpec,
                now: float, current: float | None) -> None:
    elapsed = now - state.last_at
    if state.last_value is not None and elapsed < policy.min_interval_s:
        raise CommandRejected(f"rate limit: {elapsed:.2f} s since the last command (min {policy.min_interval_s:g} s)")
    ramp = spec.writable.ramp_per_s if spec.writable else None
    reference = state.last_value if state.last_value is not None else current
    if ramp is None or reference is None:
        return
    allowed = ramp * max(elapsed, 1.0) if state.last_value is not None else ramp
    if abs(request.value - reference) > allowed:
        raise CommandRejected(f"ramp exceeded: {reference:g} -> {request.value:g} is more than {allowed:g} "
                              f"({ramp:g}/s)")
