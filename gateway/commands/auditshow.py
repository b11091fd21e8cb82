"""Reading an audit log for people: ``gridgate audit show`` (records, one readable line each)."""

import os
from collections import deque
from typing import Any, Iterator

from gateway.commands.auditrecord import RESERVED, AuditError, RecordDamaged, parse_line


def read_records(path: str | os.PathLike) -> Iterator[dict[str, Any]]:
    """Every line as a record; a line that is not one becomes ``{"line": n, "unreadable": why}``."""
    try:
        with open(path, "rb") as stream:
            for number, raw in enumerate(stream, 1):
                try:
                    yield parse_line(raw, number, duplicates=True)
                except RecordDamaged as broken:
                    yield {"line": number, "unreadable": str(broken)}
    except OSError as exc:
        raise AuditError(f"{path}: cannot read the audit log: {exc.strerror}") from exc


def show(path: str | os.PathLike, last: int | None = None, command: str | None = None) -> list[dict[str, Any]]:
    """The records of one command (or all), the last ``last`` of them (or all), in file order."""
    selected = (r for r in read_records(path) if command is None or r.get("command") == command)
    return list(deque(selected, maxlen=last))


_SHOWN = RESERVED | {"command", "group", "point", "value", "reason"}


def describe(record: dict[str, Any]) -> str:
    """One readable line: local time, seq, event, command, group, point = value, other fields, reason."""
    if "unreadable" in record:
        return f"UNREADABLE {record['unreadable']}"
    point = record.get("point") or ""
    value = f" = {record['value']}" if "value" in record else ""
    parts = [record.get("ts_local") or record.get("ts", ""), f"#{record['seq']:<5}", f"{record['event']:<10}",
             f"{record.get('command') or '-':<12}", f"{record.get('group') or '-':<10}", f"{point}{value}"]
    parts += [f"{key}={item}" for key, item in record.items() if key not in _SHOWN and item not in (None, "")]
    if record.get("reason"):
        parts.append(f"reason: {record['reason']}")
    return "  ".join(part for part in parts if part)
