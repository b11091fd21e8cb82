"""``gridgate opcua browse``: walk a server's address space and draft a profile from what it serves.

A new device should start from what it really serves, not from a manual: every variable under
Objects (to ``--depth`` levels) becomes a point with its node id by namespace URI, its data type,
engineering units and writability, and writable ones get their EURange as limits. What the
server does not say (a writable node without an EURange, a data type the driver does not carry)
is listed for the engineer to decide, never guessed.
"""

import argparse
import asyncio
import re
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from asyncua import Client, Node, ua

from drivers.opcua.session import VARIANTS

TYPES = {getattr(ua.ObjectIds, name): name for name in VARIANTS}


@dataclass
class Draft:
    """The points found, and what the engineer must decide."""

    points: list[dict[str, Any]] = field(default_factory=list)
    review: list[str] = field(default_factory=list)


async def browse(endpoint: str, depth: int, timeout_s: float = 10.0) -> tuple[dict[str, Any], list[str]]:
    """The draft profile of the server at ``endpoint`` and the lines to review."""
    async with Client(endpoint, timeout=timeout_s) as client:
        namespaces = await client.get_namespace_array()
        draft = Draft()
        await _walk(client.nodes.objects, [], depth, namespaces, draft)
    uris = Counter(p["namespace"] for p in draft.points)
    default = uris.most_common(1)[0][0] if uris else "urn:unknown"
    for point in draft.points:
        if point["namespace"] == default:
            del point["namespace"]
    profile = {"model": "DRAFT", "kind": "other", "protocol": "opcua",
               "description": f"drafted by gridgate opcua browse from {endpoint}",
               "opcua": {"namespace": default}, "points": draft.points}
    return profile, draft.review


async def _walk(node: Node, path: list[str], depth: int, namespaces: list[str], draft: Draft) -> None:
    for child in await node.get_children(refs=ua.ObjectIds.HierarchicalReferences):
        name = (await child.read_browse_name()).Name
        if child.nodeid.NamespaceIndex == 0:
            continue  # the standard's own nodes (Server, ...)
        node_class = await child.read_node_class()
        if node_class == ua.NodeClass.Variable:
            await _variable(child, path + [name], namespaces, draft)
        elif node_class == ua.NodeClass.Object and depth > 1:
            await _walk(child, path + [name], depth - 1, namespaces, draft)


async def _variable(node: Node, path: list[str], namespaces: list[str], draft: Draft) -> None:
    identifier = node.nodeid.to_string().split(";", 1)[-1]
    where = f"{'/'.join(path)} ({identifier})"
    type_id = await node.read_data_type()
    data_type = TYPES.get(type_id.Identifier) if type_id.NamespaceIndex == 0 else None
    if data_type is None:
        draft.review.append(f"{where}: data type not carried by the driver; left out")
        return
    point: dict[str, Any] = {"id": _point_id(path, draft), "name": "/".join(path), "node": identifier,
                             "namespace": namespaces[node.nodeid.NamespaceIndex], "data_type": data_type}
    properties = {(await p.read_browse_name()).Name: p for p in await node.get_properties()}
    if "EngineeringUnits" in properties:
        units = await properties["EngineeringUnits"].read_value()
        point["unit"] = units.DisplayName.Text or ""
    access = await node.read_attribute(ua.AttributeIds.UserAccessLevel)
    if access.Value.Value & ua.AccessLevel.CurrentWrite.mask:
        if data_type == "Boolean":
            point["writable"] = {"min": 0, "max": 1}
        elif "EURange" in properties:
            span = await properties["EURange"].read_value()
            point["writable"] = {"min": span.Low, "max": span.High}
        else:
            draft.review.append(f"{where}: writable, but no EURange: give it writable limits to command it")
    draft.points.append(point)


def _point_id(path: list[str], draft: Draft) -> str:
    base = re.sub(r"[^a-z0-9_]+", "_", "_".join(path[-2:]).lower()).strip("_") or "point"
    base = base if base[0].isalpha() else f"p_{base}"
    taken = {p["id"] for p in draft.points}
    candidate, n = base, 2
    while candidate in taken:
        candidate, n = f"{base}_{n}", n + 1
    return candidate


def add_command(sub: Any) -> None:
    """``gridgate opcua browse ENDPOINT [--depth N] [--out FILE]``."""
    opcua = sub.add_parser("opcua", help="OPC UA tools: browse a server and draft a profile")
    verbs = opcua.add_subparsers(dest="opcua_command", required=True)
    walk = verbs.add_parser("browse", help="walk a server's address space and draft a profile from it")
    walk.add_argument("endpoint", help="opc.tcp://HOST:PORT (security None)")
    walk.add_argument("--depth", type=int, default=4, help="object levels below Objects to walk (default 4)")
    walk.add_argument("--out", default=None, help="write the draft profile here (default: print it)")
    opcua.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    try:
        profile, review = asyncio.run(browse(args.endpoint, args.depth))
    except (OSError, asyncio.TimeoutError, ua.UaError) as exc:
        print(f"gridgate opcua browse: {args.endpoint}: {type(exc).__name__} {exc}", file=sys.stderr)
        return 1
    text = yaml.safe_dump(profile, sort_keys=False, allow_unicode=True)
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
        print(f"{args.out}: {len(profile['points'])} point(s) drafted")
    else:
        print(text, end="")
    for line in review:
        print(f"review: {line}", file=sys.stderr)
    return 0
