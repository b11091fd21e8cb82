"""What every driver checks around a write, whatever its protocol: before, that the point exists,
is writable and the value is inside its limits (the CommandGate checked already; a driver does
not trust its caller with a device's setpoint); after, that the value read back is the one
written, within the point's ``readback_tolerance``."""

from typing import Any

from gateway.config.profile import PointSpec, ProfileSpec
from gateway.errors import CommandFailed, CommandRejected
from gateway.model import Command, Quality


def writable_point(profile: ProfileSpec, command: Command) -> PointSpec:
    """The point ``command`` writes; CommandRejected naming it when it cannot be written with that value."""
    try:
        point = profile.point(command.point)
    except KeyError:
        raise CommandRejected(f"{command.device}: no point {command.point!r}") from None
    limits = point.writable
    if limits is None:
        raise CommandRejected(f"{command.device}.{command.point}: not writable")
    if not limits.min <= float(command.value) <= limits.max:
        raise CommandRejected(f"{command.device}.{command.point}: {command.value} outside "
                              f"[{limits.min}, {limits.max}]")
    return point


def check_readback(command: Command, point: PointSpec, value: Any, quality: Quality) -> None:
    """CommandFailed (written, read back) when the read-back is invalid or not what was written."""
    tolerance = point.writable.readback_tolerance if point.writable else 0.0
    if quality & Quality.IV or value is None or abs(float(value) - float(command.value)) > tolerance:
        raise CommandFailed(f"{command.device}.{command.point}: wrote {command.value}, read back {value!r}", True,
                            read_back=True, readback=value)
