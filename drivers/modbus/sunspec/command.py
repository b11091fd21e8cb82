"""``gridgate discover HOST[:PORT]``: find a SunSpec device's models and draft its Modbus profile.

A SunSpec device says what it is: the command prints the model chain it found (one line per
model, known to SunSpec or not) and writes a draft profile of every known model's points, to be
reviewed (its header lists what needs a decision) and named in a site file. An existing file is
never overwritten without ``--force``: a draft someone already edited is worth more than a new one.
"""

import argparse
import asyncio
import logging
import re
import sys
from pathlib import Path
from typing import Any

from drivers.modbus.sunspec.discovery import Discovery, discover
from drivers.modbus.sunspec.draft import draft_text
from drivers.modbus.sunspec.models import model_label
from gateway.errors import DeviceError

WHO = "gridgate discover"
DEFAULT_PORT = 502


def add_command(sub: Any) -> None:
    """``gridgate discover HOST[:PORT] [--unit N] [--out FILE] [--timeout S] [--force]``."""
    parser = sub.add_parser("discover", help="find a SunSpec device's models and draft its profile")
    parser.add_argument("target", metavar="HOST[:PORT]", help=f"the device; port {DEFAULT_PORT} unless given "
                                                             "([ADDRESS]:PORT for IPv6)")
    parser.add_argument("--unit", type=int, default=1, help="unit id (default 1)")
    parser.add_argument("--out", metavar="FILE", help="the draft profile (default: sunspec-HOST-UNIT.yaml here)")
    parser.add_argument("--timeout", type=float, default=3.0, metavar="S",
                        help="seconds to wait for each answer (default 3)")
    parser.add_argument("--force", action="store_true", help="overwrite FILE if it exists")
    parser.set_defaults(func=_run)


def parse_target(target: str) -> tuple[str, int]:
    """``host``, ``host:port`` or ``[v6 address]:port`` -> (host, port); ValueError if malformed."""
    match = re.fullmatch(r"\[(?P<v6>[^\]]+)\](?::(?P<v6port>\d+))?|(?P<host>[^:\[\]]+)(?::(?P<port>\d+))?", target)
    if match is None:
        raise ValueError(f"{target!r} is not HOST, HOST:PORT or [IPv6]:PORT")
    host = match["v6"] or match["host"]
    port = int(match["v6port"] or match["port"] or DEFAULT_PORT)
    if not 1 <= port <= 65535:
        raise ValueError(f"port {port} is outside 1..65535")
    return host, port


def summary(found: Discovery) -> list[str]:
    """What the device showed: the marker's base, then one line per model."""
    lines = [f"{found.host}:{found.port} unit {found.unit}: SunSpec marker at {found.base}"]
    for model in found.models:
        label = model_label(model.id) or "-"
        lines.append(f"  model {model.id:>5}  {label:<40} at {model.address:>5}  L {model.length:>3}  "
                     + ("known" if model.known else "unknown: not drafted"))
    return lines


def _run(args: argparse.Namespace) -> int:
    """Exit 2 for options that cannot work, 1 for a device that is not reachable or not SunSpec."""
    try:
        host, port = parse_target(args.target)
    except ValueError as exc:
        print(f"{WHO}: {exc}", file=sys.stderr)
        return 2
    if not 0 <= args.unit <= 255 or args.timeout <= 0:
        print(f"{WHO}: --unit takes 0..255 and --timeout a positive number of seconds", file=sys.stderr)
        return 2
    out = Path(args.out or f"sunspec-{re.sub(r'[^A-Za-z0-9.-]', '_', host)}-{args.unit}.yaml")
    if out.exists() and not args.force:
        print(f"{WHO}: {out} exists; --force overwrites it", file=sys.stderr)
        return 1
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)  # its own lines would repeat ours
    try:
        found = asyncio.run(discover(host, port, args.unit, args.timeout))
    except (DeviceError, OSError) as exc:  # the message names host:port, unit and address
        print(f"{WHO}: {exc}", file=sys.stderr)
        return 1
    print("\n".join(summary(found)))
    out.write_text(draft_text(found), encoding="utf-8")
    known = sum(1 for m in found.models if m.known)
    print(f"{out}: draft profile of {known} known model(s); review its header before use")
    return 0
