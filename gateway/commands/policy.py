"""The site's command sections: who may command which point under which interlocks
(``command_policy``), and the audit log every command is written to (``audit``).

Protocol-free: the CommandGate applies them to a command from any northbound side.
"""

import operator
from typing import Any, Callable, Literal

from pydantic import Field

from gateway.config.profile import DEVICE_POINT, Strict
from gateway.config.units import Duration, Size


OPERATORS: dict[str, Callable[[Any, Any], bool]] = {"<": operator.lt, "<=": operator.le, "==": operator.eq,
                                                   "!=": operator.ne, ">=": operator.ge, ">": operator.gt}


class Interlock(Strict):
    """A condition under which a command is refused (evaluated on the latest good values)."""

    point: str = Field(pattern=DEVICE_POINT)
    op: Literal["<", "<=", "==", "!=", ">=", ">"]
    value: float | bool
    when_command: Literal["any", "positive", "negative"] = Field(
        "any", description="refuse only commands of this sign (e.g. negative = charge)")
    reason: str

    def applies_to(self, value: float) -> bool:
        """Whether a command of ``value`` is subject to this interlock (its sign, ``when_command``)."""
        return not ((self.when_command == "positive" and not value > 0)
                    or (self.when_command == "negative" and not value < 0))

    def refuses(self, seen: Any) -> bool:
        """Whether the point's value ``seen`` trips the interlock (``seen op value``)."""
        return OPERATORS[self.op](seen, self.value)


class CommandPolicy(Strict):
    """Who may command a writable point, and under which conditions."""

    point: str = Field(pattern=DEVICE_POINT)
    groups: list[str] = Field(min_length=1, description="master groups allowed to command it")
    interlocks: list[Interlock] = []
    min_interval_s: Duration = Field(0.0, ge=0, description="rate limit between accepted commands")
    max_age_s: Duration = Field(10.0, gt=0, description="time-tagged commands older than this are refused")
    timeout_s: Duration = Field(5.0, gt=0, description="write + read-back deadline; must stay under t1")
    replay_window_s: Duration = Field(600.0, gt=0, description="a time-tagged command seen again within this is refused")


class AuditSpec(Strict):
    """The hash-chained command audit log, sealed by Ed25519-signed checkpoints when ``key`` is given."""

    path: str = "gridgate-audit.jsonl"
    hash: Literal["sha256", "sm3"] = "sha256"
    key: str | None = Field(None, description="Ed25519 signing key from `gridgate audit init --key`; "
                                              "without it the log is unsigned and a cut tail cannot be proven")
    state: str | None = Field(None, description="last checkpoint copy; default <key folder>/<log name>.state")
    checkpoint_every: int = Field(1000, ge=1, description="records between signed checkpoints")
    checkpoint_interval_s: Duration = Field(60.0, gt=0, description="a record is sealed within this")
    max_bytes: Size | None = Field(None, gt=0, description="rotate the file past this size")
    max_age_s: Duration | None = Field(None, gt=0, description="rotate the file past this age")
