"""``gridgate demo``: a simulated storage and charging site, the gateway polling it, a live table.

The site is an ordinary site file written next to the spool and loaded through the same
validation as ``gridgate run``: a PCS, a BMS, a three-phase meter, a SunSpec PV inverter, a DC
fast charger and an AC charger on Modbus TCP (free ports on 127.0.0.1), a second BMS string on Modbus RTU over a serial
line (an in-process pty pair) and the container EMS on OPC UA.

Its master group ``demo`` maps every point (``automap``) and two commands of the PCS, with the
policies the CommandGate needs, so that ``gridgate dispatch-test`` runs command round trips:

* the active-power setpoint as C_SE_NC_1, direct: AGC sends a setpoint every few seconds, and
  dispatch specifications that allow direct operate allow it for AGC setpoints; its return
  information is the setpoint read back (the monitored IOA of the same register);
* run/stop as C_SC_NA_1, select-before-operate, as switching commands always are; its return
  information is the PCS's grid-connected indication;
* each charger's power limit as C_SE_NC_1, direct (dispatch or the EMS caps charging).

Both are refused while the PCS is in local mode; the setpoint also refuses charging above 95 %
state of charge. The audit log and its signing key are written next to the spool.

Output. The table goes to stdout, logs to stderr; on a terminal both interleave, so the demo
drops Twisted's INFO lines about factories and ports starting and stopping (``QuietTwisted``):
the InfluxDB v1 writer's HTTP pool logs "Starting factory" / "Stopping factory" for every
connection it opens and closes. Twisted's warnings and errors still pass.

The header counts the 104 group as the outstation's own log does: every monitored point a
master receives in an interrogation, the device points plus one comm-status point
(``<device>._online``) per device, and says how many of each.
"""

import argparse
import logging
import re
import shutil
import socket
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.task import LoopingCall, deferLater

from gateway.certs import issue, make_ca, write_pair
from gateway.commands.auditkeys import init_key
from gateway.config.loader import load_site
from gateway.northbound.iec104.automap import SETPOINT_BASE, SWITCHING_BASE, auto_points
from gateway.registry import load_plugins
from gateway.runner import start_gateway, status_line
from gateway.simulation.livetable import CLEAR, render
from gateway.simulation.ptypair import PtyPair
from gateway.simulation.runner import start_simulators
from gateway.simulation.simcontrol import start_control

TCP_DEVICES = (("pcs1", "pcs/gridgate-pcs-250"), ("bms1", "bms/gridgate-bms-tcp"),
               ("meter1", "meter/gridgate-meter-3p"), ("pv1", "pv/gridgate-sunspec-inverter"),
               ("ev1", "charger/gridgate-dc-charger"),
               ("ev2", "charger/gridgate-ac-charger"))
CHARGERS = ("ev1", "ev2")


class QuietTwisted(logging.Filter):
    """Drops Twisted's INFO lines about factories and listening ports starting and stopping.

    They say nothing an operator of the demo acts on and tear the live table apart on a
    terminal. Records at WARNING and above always pass.
    """

    _NOISE = re.compile(r"(Starting|Stopping) factory |\S+ starting on \d+$|\(\S+ Port \d+ Closed\)$")

    def filter(self, record: logging.LogRecord) -> bool:
        """False for a factory or port start/stop line below WARNING."""
        return record.levelno >= logging.WARNING or not self._NOISE.match(record.getMessage())


QUIET_TWISTED = QuietTwisted()


def free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports on 127.0.0.1 that were free a moment ago; nothing holds them for the caller.

    The kernel picks them (bind to port 0) and they are released again before the simulators and
    the gateway bind them. In between, another program, or the kernel giving an outgoing
    connection its source port (from the same ephemeral range), can take one, and then that
    server fails to start. Good enough for the demo and the benches: a single run on a laptop,
    binding the ports a moment later. Tests run concurrently and use ``tests/ports.py`` instead.
    """
    probes = [socket.socket() for _ in range(count)]
    try:
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return [probe.getsockname()[1] for probe in probes]
    finally:
        for probe in probes:
            probe.close()


def demo_site(serial_gateway_side: str, serial_device_side: str, args: argparse.Namespace) -> tuple[dict, dict]:
    """The site file the gateway reads, and the one the simulator serves (other end of the cable)."""
    devices = [{"name": name, "profile": profile, "poll_s": "1s", "timeout_s": "500ms",
                "connection": {"host": "127.0.0.1", "port": port, "unit": 1}}
               for (name, profile), port in zip(TCP_DEVICES, free_ports(len(TCP_DEVICES)))]
    devices.append({"name": "bms2", "profile": "bms/gridgate-bms-rtu", "poll_s": "1s", "timeout_s": "500ms",
                    "connection": {"serial": serial_gateway_side, "baudrate": 19200, "unit": 2}})
    devices.append(_ems(Path(args.spool).resolve().parent))
    site: dict[str, Any] = {"site": "demo-ess", "spool": {"path": args.spool}, "devices": devices,
                            "audit": {"path": str(Path(args.spool).resolve().parent / "gridgate-demo-audit.jsonl")}}
    if args.influx_url:
        site["influx"] = {"url": args.influx_url, "org": args.influx_org, "bucket": args.influx_bucket,
                          "token_env": args.influx_token_env}
        if args.influx_v1_db:
            site["influx"]["v1_db"] = args.influx_v1_db
    simulated = yaml.safe_load(yaml.safe_dump(site))
    next(d for d in simulated["devices"] if d["name"] == "bms2")["connection"]["serial"] = serial_device_side
    simulated.pop("influx", None)
    return site, simulated


def _ems(folder: Path) -> dict[str, Any]:
    """The container EMS over OPC UA, Basic256Sha256 SignAndEncrypt, with the gateway's application
    certificate beside the spool (made on the first run, as `gridgate certs issue --role opcua`
    would). The simulator's certificate is made on this laptop: trusted on first use and pinned."""
    cert, key = folder / "gridgate-demo-opcua.crt", folder / "gridgate-demo-opcua.key"
    if not (cert.exists() and key.exists()):
        write_pair(issue(make_ca("gridgate demo CA", use_rsa=True), "gridgate-demo", "opcua",
                         dns=["localhost", socket.gethostname()], uri="urn:gridgate:demo"), cert, key, force=True)
    [port] = free_ports(1)
    security = {"policy": "Basic256Sha256", "mode": "SignAndEncrypt", "certificate": str(cert),
                "private_key_file": str(key), "trust": str(folder / "gridgate-demo-trusted"), "trust_on_first_use": True}
    return {"name": "ems1", "profile": "ems/gridgate-ems-opcua",
            "connection": {"endpoint": f"opc.tcp://127.0.0.1:{port}", "security": security}}


def _write(data: dict, path: Path) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


@inlineCallbacks
def run_demo(reactor: Any, args: argparse.Namespace) -> Any:
    """Start simulator and gateway, redraw the table each second, stop after ``--duration``."""
    logging.getLogger("twisted").addFilter(QUIET_TWISTED)  # Twisted logs through this one logger
    Path(args.spool).resolve().parent.mkdir(parents=True, exist_ok=True)
    cable = PtyPair()
    gateway_side, device_side = cable.open()
    reactor.addSystemEventTrigger("after", "shutdown", cable.close)
    site_dict, sim_dict = demo_site(gateway_side, device_side, args)
    folder = Path(args.spool).resolve().parent
    plugins = load_plugins()
    sim_site = load_site(_write(sim_dict, folder / "gridgate-demo-simulated.yaml"), plugins)
    site_dict["master_groups"] = [_master_group(sim_site.devices, args.iec104_port)]
    site_dict["command_policy"] = COMMAND_POLICY
    site_dict["audit"]["key"] = str(_audit_key(folder))
    site = load_site(_write(site_dict, folder / "gridgate-demo-site.yaml"), plugins)
    simulators = yield start_simulators(reactor, sim_site, plugins)
    control = start_control(reactor, simulators, sim_site.devices, "127.0.0.1", args.control_port)
    reactor.addSystemEventTrigger("before", "shutdown", control.stopListening)
    gateway = start_gateway(reactor, site, plugins)
    header = _header(site, args, control.getHost().port)
    view = LoopingCall(_draw, header, site, gateway, sys.stdout.isatty())
    view.clock = reactor
    print("\n".join(header), flush=True)
    view.start(1.0, now=False)
    if args.duration is None:
        yield Deferred()
    yield deferLater(reactor, args.duration, lambda: None)
    view.stop()
    print("\n".join(render(site.devices, gateway.table, time.time())))
    print(status_line(gateway))
    return 0


def _audit_key(folder: Path) -> Path:
    """The demo's audit signing key beside its spool, made on the first run (as `gridgate audit init` would)."""
    key = folder / "gridgate-demo-audit.key"
    if not key.exists():
        init_key(key)
    return key


LOCAL_MODE = {"point": "pcs1.remote_mode", "op": "==", "value": False, "reason": "PCS in local mode"}
COMMAND_POLICY = [
    {"point": "pcs1.active_power_setpoint", "groups": ["demo"],
     "interlocks": [LOCAL_MODE, {"point": "bms1.soc", "op": ">=", "value": 95, "when_command": "negative",
                                 "reason": "BMS SoC >= 95 %: no charging"}]},
    {"point": "pcs1.run_command", "groups": ["demo"], "interlocks": [LOCAL_MODE]},
] + [{"point": f"{charger}.power_limit", "groups": ["demo"]} for charger in CHARGERS]


def _master_group(devices: Any, port: int) -> dict[str, Any]:
    points, status = auto_points(devices)
    ioa = {p["point"]: p["ioa"] for p in points}
    commands = [{"ioa": SWITCHING_BASE, "type": "C_SC_NA_1", "point": "pcs1.run_command", "mode": "select_execute",
                 "related_ioa": ioa["pcs1.grid_connected"]},
                {"ioa": SETPOINT_BASE, "type": "C_SE_NC_1", "point": "pcs1.active_power_setpoint", "mode": "direct",
                 "related_ioa": ioa["pcs1.active_power_setpoint"]}]
    commands += [{"ioa": SETPOINT_BASE + n, "type": "C_SE_NC_1", "point": f"{charger}.power_limit", "mode": "direct",
                  "related_ioa": ioa[f"{charger}.power_limit"]} for n, charger in enumerate(CHARGERS, 1)]
    return {"name": "demo", "bind": "127.0.0.1", "port": port, "allowed_masters": ["127.0.0.1"],
            "common_address": 1, "comm_status": status, "points": points, "commands": commands}


def _header(site: Any, args: argparse.Namespace, control_port: int) -> list[str]:
    lines = [f"gridgate demo: site {site.spec.site}, site file {site.file}"]
    for device in site.devices:
        where = device.connection
        at = (getattr(where, "endpoint", None) or
              (f"serial {where.serial} unit {where.unit}" if where.serial else f"tcp {where.host}:{where.port} unit {where.unit}"))
        lines.append(f"  {device.name:<7} {device.profile.model:<16} {at}")
    target = f"InfluxDB {args.influx_url}" if args.influx_url else "no InfluxDB (spool only)"
    group = site.spec.master_groups[0]
    lines.append(f"  IEC 104 outstation for dispatch masters: 127.0.0.1:{group.port}, common address "
                 f"{group.common_address}, {outstation_points(group)}, {len(group.commands)} commands")
    lines.append(f"  point table: gridgate points export {site.file} --group demo")
    lines.append(f"  simulator control: http://127.0.0.1:{control_port}/values")
    lines.append(f"  spool {Path(args.spool).resolve()} -> {target}.  Ctrl-C stops.")
    return lines


def outstation_points(group: Any) -> str:
    """The group's monitored points as the outstation counts them, with what they are made of."""
    total = len(group.points) + len(group.comm_status)
    return (f"{total} points ({len(group.points)} device points + {len(group.comm_status)} "
            f"comm-status <device>._online)")


def _draw(header: list[str], site: Any, gateway: Any, tty: bool) -> None:
    if tty:
        room = shutil.get_terminal_size().lines - len(header) - 3
        body = render(site.devices, gateway.table, time.time(), max_rows=max(room, 5))
        sys.stdout.write(CLEAR + "\n".join(header + [status_line(gateway), ""] + body) + "\n")
        sys.stdout.flush()
    else:
        print(status_line(gateway), flush=True)
