"""``gridgate opcua browse``: walk a server's address space and draft a profile from what it serves.

A new device should start from what it really serves, not from a manual: every variable under
Objects (to ``--depth`` levels) becomes a point with its node id by namespace URI, its data type,
engineering units and writability, and writable ones get their EURange as limits. What the
server does not say (a writable node without an EURange, a data type the driver does not carry)
is listed for the engineer to decide, never guessed.

Field servers (EMS, PLCs) often offer only Sign or SignAndEncrypt endpoints and want a user, so the
command takes the security and user a device connection takes, checked by the same model
(``Security``, ``User``) and connected through the driver's own ``prepared_client``: the server's
certificate is checked against the trust folder before any credential is sent, exactly as for a
device.
"""

import argparse
import asyncio
import os
import re
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args

import yaml
from asyncua import Node, ua
from pydantic import ValidationError
from pydantic_core import ErrorDetails

from drivers.opcua.profile import OpcUaConnection, SecurityMode, SecurityPolicy, User
from drivers.opcua.session import TYPE_NAMES, prepared_client, security_problems
from gateway.errors import DeviceError

WHO = "gridgate opcua browse"
OPTIONS = {"endpoint": "ENDPOINT", "name": "--user", "password_env": "--password-env"}  # model field -> CLI
TIMEOUT_S = 10.0  # one request's answer: a slow PLC browsing thousands of nodes gets more than a device's 4 s


@dataclass
class Draft:
    """The points found, and what the engineer must decide."""

    points: list[dict[str, Any]] = field(default_factory=list)
    review: list[str] = field(default_factory=list)


async def browse(connection: OpcUaConnection, depth: int) -> tuple[dict[str, Any], list[str]]:
    """The draft profile of the server ``connection`` reaches and the lines to review.

    Raises DeviceError (UntrustedServer among them) when the secured connection is refused
    before it is tried, OSError, TimeoutError or UaError when the server does not serve.
    """
    async with await prepared_client(WHO, connection) as client:
        namespaces = await client.get_namespace_array()
        draft = Draft()
        await _walk(client.nodes.objects, [], depth, namespaces, draft)
    uris = Counter(p["namespace"] for p in draft.points)
    default = uris.most_common(1)[0][0] if uris else "urn:unknown"
    for point in draft.points:
        if point["namespace"] == default:
            del point["namespace"]
    profile = {"model": "DRAFT", "kind": "other", "protocol": "opcua",
               "description": f"drafted by gridgate opcua browse from {connection.endpoint}",
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
    data_type = TYPE_NAMES.get(type_id.Identifier) if type_id.NamespaceIndex == 0 else None
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
    """``gridgate opcua browse ENDPOINT [--depth N] [--out FILE]`` and the security and user options."""
    opcua = sub.add_parser("opcua", help="OPC UA tools: browse a server and draft a profile")
    verbs = opcua.add_subparsers(dest="opcua_command", required=True)
    walk = verbs.add_parser("browse", help="walk a server's address space and draft a profile from it")
    walk.add_argument("endpoint", help="opc.tcp://HOST:PORT (security None unless --policy and --mode are given)")
    walk.add_argument("--depth", type=int, default=4, help="object levels below Objects to walk (default 4)")
    walk.add_argument("--out", default=None, help="write the draft profile here (default: print it)")
    _add_security_options(walk)
    opcua.set_defaults(func=_run)


def _add_security_options(walk: argparse.ArgumentParser) -> None:
    """The options of a device connection's ``security:`` and ``user:``, checked by the same model."""
    walk.add_argument("--policy", default="None", choices=get_args(SecurityPolicy), help="default None")
    walk.add_argument("--mode", default="None", choices=get_args(SecurityMode), help="default None")
    walk.add_argument("--certificate", metavar="FILE",
                      help="the client certificate (gridgate certs issue DIR --role opcua --uri URN)")
    walk.add_argument("--private-key", metavar="FILE", help="its private key (PEM)")
    walk.add_argument("--trust", metavar="DIR", help="folder of trusted server (or CA) certificates")
    walk.add_argument("--trust-on-first-use", action="store_true",
                      help="pin the certificate the server shows first into --trust DIR (default: ./trusted)")
    walk.add_argument("--user", metavar="NAME", help="user name (default: anonymous)")
    walk.add_argument("--password-env", metavar="VAR", help="environment variable holding the user's password")


def _run(args: argparse.Namespace) -> int:
    """Exit 2 for options that cannot work (before connecting), 1 for a server that refused or failed."""
    try:
        connection = _connection(args)
    except ValidationError as exc:
        for error in exc.errors():
            print(f"{WHO}: {_option_error(error)}", file=sys.stderr)
        return 2
    problems = security_problems(connection.security) + _password_problems(connection.user)
    for problem in problems:
        print(f"{WHO}: {problem}", file=sys.stderr)
    if problems:
        return 2
    try:
        profile, review = asyncio.run(browse(connection, args.depth))
    except DeviceError as exc:  # its message names the endpoint, and for an untrusted one the file to move
        print(exc, file=sys.stderr)
        return 1
    except (OSError, asyncio.TimeoutError, ua.UaError) as exc:
        print(f"{WHO}: {args.endpoint}: {type(exc).__name__} {exc}", file=sys.stderr)
        return 1
    _emit(profile, review, args.out)
    return 0


def _connection(args: argparse.Namespace) -> OpcUaConnection:
    """The connection the options describe, validated as a site file's would be (ValidationError)."""
    security = {"policy": args.policy, "mode": args.mode, "certificate": args.certificate,
                "private_key_file": args.private_key, "trust": args.trust,
                "trust_on_first_use": args.trust_on_first_use}
    user = {key: value for key, value in (("name", args.user), ("password_env", args.password_env))
            if value is not None}  # either alone is then a missing field, named by its option
    return OpcUaConnection.model_validate({"endpoint": args.endpoint, "security": security,
                                           "user": user or None, "timeout_s": TIMEOUT_S})


def _option_error(error: ErrorDetails) -> str:
    """A pydantic error in the options' words: ``--user: Field required``, or the model's sentence."""
    message = error["msg"].removeprefix("Value error, ")
    name = str(error["loc"][-1]) if error["loc"] else ""
    return f"{OPTIONS[name]}: {message}" if name in OPTIONS else message


def _password_problems(user: User | None) -> list[str]:
    """An unset variable would send an empty password and read as a wrong one."""
    if user is None or user.password_env in os.environ:
        return []
    return [f"--password-env: {user.password_env} is not set (the password of {user.name} is read from it)"]


def _emit(profile: dict[str, Any], review: list[str], out: str | None) -> None:
    """The draft on stdout or into ``out``; the lines to review on stderr, apart from the YAML."""
    text = yaml.safe_dump(profile, sort_keys=False, allow_unicode=True)
    if out:
        Path(out).write_text(text, encoding="utf-8")
        print(f"{out}: {len(profile['points'])} point(s) drafted")
    else:
        print(text, end="")
    for line in review:
        print(f"review: {line}", file=sys.stderr)
