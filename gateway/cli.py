"""gridgate: IoT gateway and protocol adapter hub for storage, PV and EV-charging sites.

Its commands, one line each in ``gridgate --help`` (``gridgate COMMAND --help`` for the options):
run, check, simulate, demo, schema, points (export/import/to-profile), audit (init/show/verify),
certs (init/issue/show), dispatch-test, and the drivers' own tools (opcua browse). Each command validates its input fully before starting
anything: a site with any problem is reported (every problem, ``file:line: path: message``) and
not started. Commissioning commands (points, dispatch-test, demo) are imported only when run:
the gateway process never loads them.
"""

import argparse
import io
import logging
import signal
import sys
from pathlib import Path
from typing import Any, Callable, get_args

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.logger import STDLibLogObserver, globalLogBeginner

from gateway.config.loader import Site, load_site
from gateway.config.profile import ProfileSpec
from gateway.config.source import ConfigErrors
from gateway.errors import GatewayError
from gateway.model import group_by_protocol
from gateway.interfaces import ICommandPlugin
from gateway.registry import PluginError, load_plugins

log = logging.getLogger("gridgate")


def _setup_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    globalLogBeginner.beginLoggingTo([STDLibLogObserver()], redirectStandardIO=False)


def load_or_report(path: str) -> Site | None:
    """The validated site, or None after printing every problem to stderr."""
    try:
        return load_site(Path(path), load_plugins())
    except ConfigErrors as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        print(f"{len(exc.problems)} problem(s); nothing started", file=sys.stderr)
        return None


def cmd_check(args: argparse.Namespace) -> int:
    """Validate a site and every profile it uses; print a summary when clean."""
    site = load_or_report(args.site)
    if site is None:
        return 1
    plugins = load_plugins()
    points = sum(len(d.profile.points) for d in site.devices)
    writable = sum(1 for d in site.devices for p in d.profile.points if p.writable)
    print(f"{site.file}: OK")
    print(f"  site {site.spec.site}: {len(site.devices)} device(s), {points} point(s), {writable} writable")
    for protocol, devices in group_by_protocol(site.devices).items():
        print(f"  {protocol}: {len(devices)} device(s), {plugins.drivers[protocol].load_summary(devices)}")
    for device in site.devices:
        print(f"    {device.name}: {device.profile.model} ({device.profile_file.name}), "
              f"{len(device.profile.points)} points {plugins.drivers[device.profile.protocol].device_summary(device)}")
    for plugin in plugins.northbound.values():
        for line in plugin.summary(getattr(site.spec, plugin.section)):
            print(f"  {line}")
    target = site.spec.influx
    print(f"  influx: {(target.url + (' v1 db ' + target.v1_db if target.v1_db else ' bucket ' + target.bucket)) if target else 'none (spool only)'}")
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    """Write the JSON Schemas of profiles and site files for editors."""
    from gateway.schema import write_schemas
    for path in write_schemas(Path(args.out), load_plugins()):
        print(path)
    return 0


def cmd_points_export(args: argparse.Namespace) -> int:
    """Write a master group's point table (点表) as CSV, for the dispatch centre to check against."""
    from gateway.commissioning.groups import UnknownGroup
    from gateway.commissioning.pointcsv import export_rows, write_csv
    site = load_or_report(args.site)
    if site is None:
        return 1
    try:
        rows = export_rows(site, args.group)
    except UnknownGroup as exc:
        print(exc, file=sys.stderr)
        return 1
    if args.out:
        with open(args.out, "w", encoding="utf-8", newline="") as stream:
            write_csv(rows, stream)
        print(f"{args.out}: {len(rows)} row(s) of group {args.group}")
        return 0
    stream = io.TextIOWrapper(sys.stdout.buffer, encoding="utf-8", newline="", write_through=True)
    write_csv(rows, stream)
    stream.detach()
    return 0


def cmd_points_import(args: argparse.Namespace) -> int:
    """Replace a group's points and commands in the site file with an edited table; every problem, or nothing, changes."""
    from gateway.commissioning.groups import UnknownGroup
    from gateway.commissioning.pointcsv import import_csv
    site = args.site or args.site_option
    if not site or (args.site and args.site_option and args.site != args.site_option):
        print("gridgate points import: give the site file once (SITE.yaml or --site SITE.yaml)", file=sys.stderr)
        return 2
    try:
        written = import_csv(Path(args.csv), Path(site), args.group, load_plugins())
    except ConfigErrors as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        print(f"{len(exc.problems)} problem(s); {site} unchanged", file=sys.stderr)
        return 1
    except UnknownGroup as exc:
        print(f"{exc}; {site} unchanged", file=sys.stderr)
        return 1
    print(f"{site}: {written.points} point(s) and {written.commands} command(s) of group {args.group} "
          f"written from {args.csv}")
    return 0


def cmd_points_to_profile(args: argparse.Namespace) -> int:
    """Draft an IEC 104 master profile from a station's point table; every problem, or nothing, is written."""
    from gateway.commissioning.profiledraft import draft_profile
    try:
        draft = draft_profile(Path(args.csv), load_plugins(), args.model, args.kind)
    except ConfigErrors as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        print(f"{len(exc.problems)} problem(s); nothing written", file=sys.stderr)
        return 1
    for note in draft.notes:
        print(f"note: {note}", file=sys.stderr)
    if args.out:
        Path(args.out).write_text(draft.text(), encoding="utf-8")
        print(f"{args.out}: {draft.points} point(s), {draft.commands} command(s) drafted")
        return 0
    sys.stdout.buffer.write(draft.text().encode("utf-8"))  # UTF-8 names whatever the terminal's locale
    sys.stdout.buffer.flush()
    return 0


def _add_points_parser(sub: Any) -> None:
    """``gridgate points export|import|to-profile``: a 104 point table as CSV, and a station's as a profile."""
    points = sub.add_parser("points", help="104 point tables (CSV): export, import, to-profile")
    verbs = points.add_subparsers(dest="points_command", required=True)
    export = verbs.add_parser("export", help="write the group's point table as CSV (UTF-8 with BOM): every IOA "
                              "it serves, with the types sent in GI, counter interrogation and spontaneously, "
                              "and its command IOAs")
    export.add_argument("site")
    export.add_argument("--group", required=True, help="master group name")
    export.add_argument("--format", choices=["csv"], default="csv")
    export.add_argument("--out", default=None, help="file to write (default: stdout)")
    export.set_defaults(func=cmd_points_export)
    imp = verbs.add_parser("import", help="replace the group's points and commands in the site file with a CSV table")
    imp.add_argument("csv")
    imp.add_argument("site", nargs="?", default=None)
    imp.add_argument("--site", dest="site_option", default=None, help="the site file (instead of the positional)")
    imp.add_argument("--group", required=True, help="master group name")
    imp.set_defaults(func=cmd_points_import)
    draft = verbs.add_parser("to-profile", help="draft the IEC 104 master's profile of a downstream station from "
                             "its point table (the columns export writes): monitored rows become points, command "
                             "rows the command of the point that confirms them")
    draft.add_argument("csv", metavar="FILE.csv", help="the station's point table (UTF-8 with or without BOM, "
                       "or GB18030)")
    draft.add_argument("--out", default=None, metavar="PROFILE.yaml", help="file to write (default: stdout)")
    draft.add_argument("--model", default=None, metavar="NAME", help="the profile's model (default: the CSV "
                       "file's name without .csv, upper-cased)")
    draft.add_argument("--kind", default="rtu", choices=get_args(ProfileSpec.model_fields["kind"].annotation),
                       help="the profile's kind (default: rtu)")
    draft.set_defaults(func=cmd_points_to_profile)


def cmd_audit_show(args: argparse.Namespace) -> int:
    """Print an audit log's records, one readable line each (or raw JSON), for O&M review."""
    import json
    from gateway.commands.audit import AuditError, describe, show
    try:
        records = show(args.file, args.last, args.command_id)
    except AuditError as exc:
        print(exc, file=sys.stderr)
        return 1
    for record in records:
        print(json.dumps(record, ensure_ascii=False) if args.json else describe(record))
    return 0


def cmd_audit_verify(args: argparse.Namespace) -> int:
    """Check an audit log's chain and signed checkpoints: exit 0 OK, 1 naming the first error, 3 if not proven."""
    from gateway.commands.auditcli import cmd_verify
    return cmd_verify(args)


def cmd_audit_init(args: argparse.Namespace) -> int:
    """Make the audit log's Ed25519 signing key (mode 0600) and its public key."""
    from gateway.commands.auditcli import cmd_init
    return cmd_init(args)


def _count(text: str) -> int:
    """A non-negative integer argument."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} is negative")
    return value


def _add_audit_parser(sub: Any) -> None:
    """``gridgate audit init|show|verify``: the signing key; read and check the command audit log."""
    audit = sub.add_parser("audit", help="make the signing key; show or verify the audit log")
    verbs = audit.add_subparsers(dest="audit_command", required=True)
    show = verbs.add_parser("show", help="print the records, one line each")
    show.add_argument("file")
    show.add_argument("--last", type=_count, default=None, metavar="N", help="only the last N records")
    show.add_argument("--command", dest="command_id", default=None, metavar="ID", help="only this command's records")
    show.add_argument("--json", action="store_true", help="print the raw records (JSON Lines)")
    show.set_defaults(func=cmd_audit_show)
    verify = verbs.add_parser("verify", help="check the chain and its signed checkpoints; exit 1 naming the first "
                              "bad record, 3 when the log cannot be proven")
    verify.add_argument("files", nargs="+", metavar="FILE", help="the log (its rotated parts FILE.<n> are included), "
                        "parts, or a folder")
    verify.add_argument("--public-key", default=None, metavar="PATH", help="the signing key's public half "
                        "(gridgate audit init wrote KEY.pub)")
    verify.add_argument("--state", default=None, metavar="PATH", help="the writer's state file (or a kept copy of a "
                        "checkpoint): a cut before it is an error")
    verify.set_defaults(func=cmd_audit_verify)
    init = verbs.add_parser("init", help="make the log's Ed25519 signing key (mode 0600) and KEY.pub")
    init.add_argument("--key", required=True, metavar="PATH", help="the private key file to write")
    init.add_argument("--public-key", default=None, metavar="PATH", help="where the public key goes (default KEY.pub)")
    init.add_argument("--force", action="store_true", help="replace existing key files")
    init.set_defaults(func=cmd_audit_init)


def _react(body: Callable[[Any], Deferred]) -> int:
    """Run ``body(reactor)`` on the reactor until it fires; its result is the exit code."""
    from twisted.internet import reactor
    outcome: dict[str, int] = {"code": 0}

    def finished(result: Any) -> None:
        outcome["code"] = result if isinstance(result, int) else 0
        if reactor.running:
            reactor.stop()

    def failed(failure: Any) -> None:
        if failure.check(GatewayError):  # a known cause (port taken, spool unreadable): one line says it
            log.error("gridgate cannot run: %s", failure.getErrorMessage())
            outcome["code"] = 1
        else:
            log.error("stopped by an error: %s", failure.getTraceback())
            outcome["code"] = 2
        if reactor.running:
            reactor.stop()

    reactor.callWhenRunning(lambda: maybeDeferred(body, reactor).addCallbacks(finished, failed))
    _stop_once_on_signals(reactor)
    reactor.run()
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the reactor is done: a late repeat must not kill the exit
    return outcome["code"]


def _stop_once_on_signals(reactor: Any) -> None:
    """A second SIGTERM or SIGINT while the first one's shutdown runs is ignored: Twisted's own
    handler would call ``reactor.stop`` again, which raises ReactorNotRunning into the log at
    CRITICAL (``timeout``, systemd's KillMode=control-group and impatient operators send two)."""
    for name in ("sigTerm", "sigInt"):
        def once(number: int, frame: Any = None, handler: Callable[..., None] = getattr(reactor, name),
                 seen: list[int] = []) -> None:
            if not seen:
                seen.append(number)
                handler(number, frame)
        setattr(reactor, name, once)


def cmd_run(args: argparse.Namespace) -> int:
    """Poll the site's devices and forward to InfluxDB through the spool until stopped."""
    site = load_or_report(args.site)
    if site is None:
        return 1
    plugins = load_plugins()
    if args.salvage_spool:
        from gateway.service import spool_files
        from gateway.spoolsalvage import salvage
        for path in spool_files(site, plugins):
            salvage(path)
    from gateway.runner import run_gateway
    return _react(lambda reactor: run_gateway(reactor, site, plugins, args.status_interval))


def cmd_simulate(args: argparse.Namespace) -> int:
    """Serve simulated devices for every device of a site, until stopped."""
    site = load_or_report(args.site)
    if site is None:
        return 1
    from gateway.simulation.runner import run_simulators
    from gateway.simulation.simcontrol import parse_hostport
    control = parse_hostport(args.control) if args.control else None
    return _react(lambda reactor: run_simulators(reactor, site, load_plugins(), control))


def cmd_demo(args: argparse.Namespace) -> int:
    """A simulated storage site, the gateway polling it, and a live table of its points."""
    from gateway.commissioning.demo import run_demo
    return _react(lambda reactor: run_demo(reactor, args))


def cmd_dispatch_test(args: argparse.Namespace) -> int:
    """Act as the dispatch master against a group's outstation; check every row; write reports."""
    site = load_or_report(args.site)
    if site is None:
        return 1
    from gateway.commissioning.dispatchtest import main as dispatch_test
    return dispatch_test(site, args)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(prog="gridgate", description=__doc__.splitlines()[0])
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", title="commands")
    run = sub.add_parser("run", help="run the gateway for a site file")
    run.add_argument("site")
    run.add_argument("--status-interval", type=float, default=60.0, help="seconds between status log lines")
    run.add_argument("--salvage-spool", action="store_true", help="a spool or event buffer SQLite cannot open is "
                     "renamed FILE.corrupt-<UTC time> and its readable rows copied into a new one (never done "
                     "without this flag: the gateway exits naming the file)")
    run.set_defaults(func=cmd_run)
    check = sub.add_parser("check", help="validate a site file and its profiles")
    check.add_argument("site")
    check.set_defaults(func=cmd_check)
    simulate = sub.add_parser("simulate", help="serve simulated devices for a site file")
    simulate.add_argument("site")
    simulate.add_argument("--control", metavar="HOST:PORT", default=None,
                          help="serve the simulator control API (GET /values, POST /set), e.g. 127.0.0.1:8910")
    simulate.set_defaults(func=cmd_simulate)
    demo = sub.add_parser("demo", help="simulated storage site + gateway + live table")
    demo.add_argument("--duration", type=float, default=None, help="stop after N seconds")
    demo.add_argument("--spool", default="gridgate-demo-spool.db", help="spool file")
    demo.add_argument("--influx-url", default=None)
    demo.add_argument("--influx-token-env", default="INFLUX_TOKEN", help="env var holding the token")
    demo.add_argument("--influx-org", default="")
    demo.add_argument("--influx-bucket", default="")
    demo.add_argument("--influx-v1-db", default=None, help="InfluxDB 1.x database (v1 /write)")
    demo.add_argument("--iec104-port", type=int, default=2404, help="port of the demo's 104 outstation")
    demo.add_argument("--control-port", type=int, default=0, help="simulator control API port (0: any)")
    demo.set_defaults(func=cmd_demo)
    schema = sub.add_parser("schema", help="write JSON Schemas of profiles and site files")
    schema.add_argument("--out", default=".", help="directory to write into")
    schema.set_defaults(func=cmd_schema)
    _add_points_parser(sub)
    _add_audit_parser(sub)
    from gateway.certs import add_parser as add_certs_parser
    add_certs_parser(sub)
    from gateway.commissioning.dispatchargs import add_arguments as dispatch_test_arguments
    dispatch = sub.add_parser("dispatch-test", help="test a 104 group as its dispatch master would")
    dispatch_test_arguments(dispatch)
    dispatch.set_defaults(func=cmd_dispatch_test)
    for plugin in load_plugins().drivers.values():  # a driver's own tools: gridgate opcua browse, ...
        if ICommandPlugin.providedBy(plugin):
            plugin.add_commands(sub)
    return parser


def main(argv: list[str]) -> int:
    """Parse ``argv`` and run the chosen subcommand; returns the exit code."""
    try:
        args = build_parser().parse_args(argv)
        _setup_logging(args.log_level)
        return args.func(args)
    except PluginError as exc:
        print(f"gridgate: {exc}", file=sys.stderr)
        return 2
