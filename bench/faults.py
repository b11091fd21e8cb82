"""Fault injection: malformed traffic at every protocol endpoint the gateway exposes or polls.

Two campaigns, each against a gateway process of its own (this file's ``serve`` command: what
``gridgate run`` does, ``gateway.runner.start_gateway`` and the status line, plus the gateway's
counters written to a JSON file every second), all on 127.0.0.1, TZ=UTC:

* iec104: the outstation of a master group with eleven command IOAs (every C_SC/C_DC/C_SE type,
  direct and select-before-operate) writing a PCS simulated by ``gridgate simulate`` (nothing
  real can be written), a command policy per point and a signed audit log. Raw masters
  (``tests/wire104``, written from the standard's octets) send random and mutated APDUs
  (``tests/fuzz104``); the outstation may close a connection on an APCI violation, the master
  then reconnects. After every ``--batch`` frames a fresh master must get a complete general
  interrogation answer (ACT_CON, objects, ACT_TERM) within 10 s, else it counts as a hang.
  Three probes follow the campaign: one well-formed command each on a connection that never
  sent STARTDT, after STOPDT, and in an I-frame without ASDU before it; what the audit log shows
  of each is reported (``probe`` lines).
* modbus: the gateway polls ``--devices`` Modbus TCP devices (``tests/fuzz_modbus``), one read
  block each (holding, input, coils, discrete inputs), every ``--poll`` s, that answer a request
  with a random mutation of the correct reply (``--good-fraction`` of them, default 20 %, stay
  correct so that values flow) until ``--replies`` replies were sent; then they answer correctly
  and every point must be good again within 30 s (else a hang). A spoilt reply carries POISON
  data, except in a frame a correct master must accept, whose data is made true before it is
  sent; so every row with good quality in the gateway's spool must carry the true value.

A crash is the gateway process ending on its own (or not exiting 0 on SIGTERM). RSS is VmRSS of
the gateway process after start-up and at the end (VmHWM: its peak; stderr has it at every check).
"rose" lists the gateway counters that grew during the campaign; ``unhandled_exceptions`` counts
exceptions that escaped to the last-resort handlers (104: ``MasterLink.receive_each`` logging
"error handling ASDU"; Modbus: any traceback in the log). Prints one summary line per protocol
(and the probe lines); exit status 1 when a crash, a hang, a bad value, an unhandled exception,
an outstation reply that does not decode, a sequence error, an I-frame before STARTDT_CON or an
executed probe was seen. ``--control`` proves the Modbus judge: with frames a correct master
accepts left poisoned, bad_values must come out above 0.

    .venv/bin/python bench/faults.py --frames 100000 --replies 100000 --seed 1
"""

import argparse
import asyncio
import json
import math
import os
import signal
import sqlite3
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import wait_port  # noqa: E402
from gateway.commissioning.demo import free_ports  # noqa: E402

CA = 1
GROUP = "fuzz"
UNHANDLED_104 = "error handling ASDU"  # MasterLink.receive_each's last net: an exception escaped the outstation
UNHANDLED_MODBUS = "Traceback"  # the Modbus driver logs none for what a device sends; any is an escape
DEADLINE_S = 900.0


# -- the gateway process -------------------------------------------------------------------------

def serve(site_path: str, stats_path: str, status_every_s: float) -> int:
    """What ``gridgate run`` does, plus ``gateway.stats()`` written to ``stats_path`` every second and at shutdown."""
    from twisted.internet import asyncioreactor
    asyncioreactor.install()
    from twisted.internet.defer import Deferred, inlineCallbacks
    from twisted.internet.task import LoopingCall

    from gateway.cli import _react, _setup_logging, load_or_report
    from gateway.registry import load_plugins
    from gateway.runner import start_gateway, status_line

    _setup_logging("INFO")
    site = load_or_report(site_path)
    if site is None:
        return 1

    @inlineCallbacks
    def body(reactor: Any) -> Any:
        holder: dict[str, Any] = {}

        def dump() -> None:
            if "gateway" in holder:
                tmp = f"{stats_path}.tmp"
                Path(tmp).write_text(json.dumps(holder["gateway"].stats(), default=str))
                os.replace(tmp, stats_path)

        reactor.addSystemEventTrigger("before", "shutdown", dump)  # before the gateway's own stop
        gateway = holder["gateway"] = start_gateway(reactor, site, load_plugins())
        yield gateway.ready
        for step, every in ((dump, 1.0), (lambda: print(status_line(gateway), file=sys.stderr, flush=True),
                                          status_every_s)):
            loop = LoopingCall(step)
            loop.clock = reactor
            loop.start(every, now=True)
        yield Deferred()

    return _react(body)


class GatewayProcess:
    """A gateway (``serve``) as a child process: alive, RSS, counters, log; stopped with SIGTERM."""

    def __init__(self, site: Path, folder: Path) -> None:
        self.stats_path = folder / "stats.json"
        self.log_path = folder / "gateway.log"
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "serve", str(site), "--stats", str(self.stats_path)],
            cwd=folder, stdout=self._log, stderr=subprocess.STDOUT, env={**os.environ, "TZ": "UTC"})
        self.exit_code: int | None = None

    def alive(self) -> bool:
        """The process has not ended."""
        return self.process.poll() is None

    def memory_kb(self, field: str = "VmRSS") -> int:
        """VmRSS (or VmHWM, the peak) from /proc; 0 once the process is gone."""
        try:
            for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
                if line.startswith(field + ":"):
                    return int(line.split()[1])
        except OSError:
            pass
        return 0

    def wait_stats(self, timeout_s: float = 60.0) -> dict:
        """The first counters the gateway wrote (it writes them once it is fully up)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"gateway exited {self.process.returncode} at start-up:\n{self.log_tail()}")
            stats = self.stats()
            if stats:
                return stats
            time.sleep(0.1)
        raise RuntimeError(f"gateway wrote no counters within {timeout_s} s:\n{self.log_tail()}")

    def stats(self) -> dict:
        """The counters the gateway wrote last ({} before the first)."""
        try:
            return json.loads(self.stats_path.read_text())
        except (OSError, ValueError):
            return {}

    def log_tail(self, lines: int = 30) -> str:
        """The end of the gateway's output."""
        self._log.flush()
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def log_count(self, text: str) -> int:
        """Lines of the gateway's output that contain ``text``."""
        with open(self.log_path, errors="replace") as stream:
            return sum(text in line for line in stream)

    def stop(self) -> int:
        """SIGTERM, wait (SIGKILL after 30 s); the exit code."""
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self._log.close()
        self.exit_code = self.process.returncode
        return self.exit_code


def rose(before: dict, after: dict) -> dict[str, float]:
    """Numeric counters (flattened paths) that are larger after than before."""
    def flat(tree: Any, prefix: str = "") -> dict[str, float]:
        if isinstance(tree, dict):
            return {k: v for key, sub in tree.items() for k, v in flat(sub, f"{prefix}{key}.").items()}
        if isinstance(tree, list):
            return {k: v for i, sub in enumerate(tree) for k, v in flat(sub, f"{prefix}{i}.").items()}
        if isinstance(tree, (int, float)) and not isinstance(tree, bool):
            return {prefix.rstrip("."): tree}
        return {}
    old, new = flat(before), flat(after)
    return {k: v - old.get(k, 0) for k, v in new.items() if v > old.get(k, 0) and not k.endswith("_age_s")}


def run_async(factory: Callable[[], Any]) -> Any:
    """Run the coroutine ``factory()`` makes on a fresh event loop in a thread of its own (the caller may
    be inside another loop, e.g. pytest-twisted's reactor); its result, or its exception raised here."""
    outcome: dict[str, Any] = {}

    def main() -> None:
        try:
            outcome["result"] = asyncio.run(factory())
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            outcome["error"] = exc
    thread = threading.Thread(target=main, name="faults", daemon=True)
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


def _mb(kb: int) -> str:
    return f"{kb / 1024:.1f}"


def _rose_text(changes: dict[str, float], keep: Callable[[str], bool] = lambda key: True, top: int = 14) -> str:
    shown = sorted(((k, v) for k, v in changes.items() if keep(k)), key=lambda kv: -kv[1])[:top]
    return "{" + ", ".join(f"{k}:+{v:g}" for k, v in shown) + "}"


# -- iec104 --------------------------------------------------------------------------------------

COMMANDS = [  # (IOA, type, point, mode, extra)
    (0x6001, "C_SC_NA_1", "pcs1.run_command", "select_execute", {}),
    (0x6002, "C_SC_TA_1", "pcs1.run_command", "direct", {}),
    (0x6003, "C_DC_NA_1", "pcs1.fault_reset", "direct", {}),
    (0x6004, "C_DC_TA_1", "pcs1.fault_reset", "select_execute", {}),
    (0x6201, "C_SE_NC_1", "pcs1.active_power_setpoint", "direct", {}),
    (0x6202, "C_SE_NC_1", "pcs1.active_power_setpoint", "select_execute", {}),
    (0x6203, "C_SE_TC_1", "pcs1.active_power_setpoint", "direct", {}),
    (0x6204, "C_SE_NA_1", "pcs1.reactive_power_setpoint", "direct", {"full_scale": 150}),
    (0x6205, "C_SE_TA_1", "pcs1.reactive_power_setpoint", "select_execute", {"full_scale": 150}),
    (0x6206, "C_SE_NB_1", "pcs1.setpoint_revert_time", "direct", {}),
    (0x6207, "C_SE_TB_1", "pcs1.active_power_ramp_rate", "direct", {"multiplier": 1}),
]


def iec104_site(folder: Path) -> tuple[Path, int, Any]:
    """A simulated PCS and BMS, every point mapped (automap), the commands above; (site, 104 port, Target)."""
    from gateway.commands.auditkeys import init_key
    from gateway.config.loader import load_site
    from gateway.registry import load_plugins
    from gateway.northbound.iec104.automap import auto_points
    from tests.fuzz104 import TYPE_IDS, Target

    pcs, bms, port = free_ports(3)
    devices = [{"name": name, "profile": profile, "poll_s": 0.5, "timeout_s": 0.5,
                "connection": {"host": "127.0.0.1", "port": p}}
               for name, profile, p in (("pcs1", "pcs/gridgate-pcs-250", pcs), ("bms1", "bms/gridgate-bms-tcp", bms))]
    site: dict[str, Any] = {"site": "faults104", "spool": {"path": str(folder / "spool.db")}, "devices": devices}
    path = folder / "site.yaml"
    path.write_text(yaml.safe_dump(site, sort_keys=False))
    points, status = auto_points(load_site(path, load_plugins()).devices)
    by_point = {p["point"]: p["ioa"] for p in points}
    commands = []
    for ioa, type_, point, mode, extra in COMMANDS:
        command = {"ioa": ioa, "type": type_, "point": point, "mode": mode, **extra}
        related = {"pcs1.run_command": "pcs1.grid_connected"}.get(point, point)
        if related in by_point:
            command["related_ioa"] = by_point[related]
        commands.append(command)
    init_key(folder / "audit.key")
    site["audit"] = {"path": str(folder / "audit.jsonl"), "key": str(folder / "audit.key")}
    site["master_groups"] = [{
        "name": GROUP, "bind": "127.0.0.1", "port": port, "allowed_masters": ["127.0.0.1"], "max_connections": 4,
        "common_address": CA, "comm_status": status, "clock_alarm_ioa": 0x3101, "buffer_overflow_ioa": 0x3102,
        "clock_sync": {"step_os_clock": False}, "points": points, "commands": commands}]
    local = {"point": "pcs1.remote_mode", "op": "==", "value": False, "reason": "PCS in local mode"}
    site["command_policy"] = [{"point": point, "groups": [GROUP], "interlocks": [local], "timeout_s": "3s"}
                              for point in sorted({c[2] for c in COMMANDS})]
    path.write_text(yaml.safe_dump(site, sort_keys=False))
    target = Target(CA, tuple((c[0], TYPE_IDS[c[1]]) for c in COMMANDS), tuple(p["ioa"] for p in points))
    return path, port, target


def audit_events(folder: Path) -> Counter:
    """Audit records by event (frame, received, written, confirmed, refused, ...)."""
    path = folder / "audit.jsonl"
    counts: Counter = Counter()
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                counts[json.loads(line).get("event", "?")] += 1
            except ValueError:
                counts["unreadable"] += 1
    return counts


async def _probes(port: int, target: Any, folder: Path) -> list[dict[str, Any]]:
    """One well-formed direct setpoint (C_SE_NC_1, COT 6) each: before STARTDT, after STOPDT, and after an
    I-frame without ASDU; what came back, what the audit log recorded for it, and a summary line."""
    from tests.wire104 import RawMaster, asdu, i_frame, setpoint_float

    ioa = 0x6201
    lines: list[dict[str, Any]] = []
    for case in ("before STARTDT", "after STOPDT", "after an I-frame without ASDU (before STARTDT)"):
        before = audit_events(folder)
        value = 1.5 + len(lines)
        master = RawMaster()
        await master.connect("127.0.0.1", port)
        try:
            if case == "after STOPDT":
                await master.startdt()
                await master.stopdt()
                await asyncio.sleep(0.3)
            if case.startswith("after an I-frame"):
                await master.send_raw(bytes([0x68, 4, 0, 0, 0, 0]))
                master.ssn = 1
            await master.send_raw(i_frame(master.ssn, master.rsn, asdu(50, 6, CA, [(ioa, setpoint_float(value))])))
            deadline = time.monotonic() + 1.5
            while time.monotonic() < deadline and not master.closed and audit_events(folder) == before:
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.3)  # the gate's write and read-back
            await asyncio.sleep(0.1)
            closed = master.closed
            replies = [a.summary() for a in master.received if a.kind == "I"]
        finally:
            await master.close()
        after = audit_events(folder)
        grew = {k: after[k] - before[k] for k in after if after[k] > before[k]}
        verdict = ("EXECUTED" if grew.get("written") else "reached the command gate"
                   if grew.get("received") or grew.get("refused") else "not executed")
        lines.append({"case": case, "executed": bool(grew.get("written")), "audited": grew, "closed": closed,
                      "line": f"probe iec104 command {case}: {verdict}; connection "
                              f"{'closed' if closed else 'kept open'} by the outstation; replies {replies or 'none'}; "
                              f"audit +{grew}"})
    return lines


def run_iec104(frames: int, seed: int, batch: int, folder: Path, deadline_s: float = DEADLINE_S,
               probes: bool = True) -> dict[str, Any]:
    """The iec104 campaign against a fresh gateway and simulator; its figures and summary line."""
    from tests.fuzz104 import Campaign

    folder.mkdir(parents=True, exist_ok=True)
    site, port, target = iec104_site(folder)
    simulator = subprocess.Popen([sys.executable, "-m", "gateway", "--log-level", "WARNING", "simulate", str(site)],
                                 cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                 env={**os.environ, "TZ": "UTC"})
    gateway = GatewayProcess(site, folder)
    try:
        wait_port(port)
        gateway.wait_stats()
        time.sleep(1.5)  # first polls of both devices
        rss_before, stats_before = gateway.memory_kb(), gateway.stats()
        campaign = Campaign("127.0.0.1", port, target, seed, gateway.alive, memory=gateway.memory_kb)
        tally = run_async(lambda: campaign.run(frames, batch, deadline_s))
        time.sleep(1.1)  # one more counter dump
        rss_after, peak, stats_after = gateway.memory_kb(), gateway.memory_kb("VmHWM"), gateway.stats()
        audit = audit_events(folder)
        probe_lines = run_async(lambda: _probes(port, target, folder)) if probes and gateway.alive() else []
    finally:
        code = gateway.stop()
        simulator.terminate()
        simulator.wait(20)
    crashes = int(tally.crashed or code not in (0, None))
    unhandled = gateway.log_count(UNHANDLED_104)
    changes = rose(stats_before, stats_after)
    replies = " ".join(f"{k}:{v}" for k, v in sorted(tally.replies.items(), key=lambda kv: -kv[1])[:12])
    line = (f"faults iec104 frames={tally.frames}{' (partial: time limit)' if tally.partial else ''} "
            f"connections={tally.connections} closed_by_outstation={tally.closed_by_outstation} "
            f"without_startdt={tally.pre_startdt_connections} refused={tally.refused} hangs={tally.hangs} "
            f"crashes={crashes} "
            f"rss_before={_mb(rss_before)} MB rss_after={_mb(rss_after)} MB peak={_mb(peak)} MB "
            f"positive_act_con={tally.positive_act_con} positive_select={tally.positive_select} "
            f"audit_written={audit['written']} audit_confirmed={audit['confirmed']} "
            f"unhandled_exceptions={unhandled} undecodable_replies={tally.undecodable} "
            f"sequence_errors={tally.sequence_errors} "
            f"i_frames_before_startdt={tally.i_before_startdt} gi_checks={tally.checks} "
            f"replies[{replies}] rose{_rose_text(changes, lambda k: k.startswith('northbound'))} "
            f"exit={code} in {tally.seconds:.0f} s")
    return {"line": line, "tally": tally, "crashes": crashes, "rss_before": rss_before, "rss_after": rss_after,
            "rose": changes, "audit": audit, "probes": probe_lines, "exit": code, "log": gateway.log_path,
            "unhandled": unhandled}


# -- modbus --------------------------------------------------------------------------------------

TABLES = {  # table -> points (profile entries) and the registers / bits that hold their true values
    "holding": [{"id": "u16", "address": 0, "type": "uint16"},
                {"id": "i16", "address": 1, "type": "int16", "scale": 0.1},
                {"id": "f32", "address": 2, "type": "float32"},
                {"id": "u32", "address": 4, "type": "uint32"},
                {"id": "flag", "address": 6, "type": "bool", "bit": 3}],
    "input": [{"id": "freq", "table": "input", "address": 0, "type": "uint16", "scale": 0.01},
              {"id": "i32", "table": "input", "address": 1, "type": "int32"}],
    "coil": [{"id": f"c{i}", "table": "coil", "address": i, "type": "bool"} for i in range(5)],
    "discrete": [{"id": f"d{i}", "table": "discrete", "address": i, "type": "bool"} for i in range(3)],
}
TRUTH = {"u16": 1234, "i16": -50.5, "f32": 230.5, "u32": 123456789, "flag": True, "freq": 50.0, "i32": -42,
         "c0": True, "c1": False, "c2": True, "c3": True, "c4": False, "d0": False, "d1": True, "d2": True}


def true_image() -> Any:
    """The register image that holds TRUTH (POISON, 0x77 in every byte, never decodes to a true value)."""
    from tests.hostile_modbus import Image
    f_hi, f_lo = struct.unpack(">HH", struct.pack(">f", 230.5))
    u_hi, u_lo = struct.unpack(">HH", struct.pack(">I", 123456789))
    i_hi, i_lo = struct.unpack(">HH", struct.pack(">i", -42))
    return Image(holding={0: 1234, 1: -505 & 0xFFFF, 2: f_hi, 3: f_lo, 4: u_hi, 5: u_lo, 6: 0x0008},
                 input={0: 5000, 1: i_hi, 2: i_lo},
                 coils={i: TRUTH[f"c{i}"] for i in range(5)}, discrete={i: TRUTH[f"d{i}"] for i in range(3)})


def same(value: object, truth: object) -> bool:
    """Does a spooled value equal the true one (floats to 1e-9 relative, bools as 0/1)?"""
    if isinstance(truth, bool):
        return value == int(truth)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return math.isclose(float(value), float(truth), rel_tol=1e-9, abs_tol=1e-12)
    return False


def modbus_site(folder: Path, ports: list[int], poll_s: float, timeout_s: float) -> tuple[Path, dict[str, object]]:
    """One profile per table, device m<n> reading table n % 4; (site, point id -> true value)."""
    tables = list(TABLES)
    for table, points in TABLES.items():
        (folder / f"fuzz-{table}.yaml").write_text(yaml.safe_dump(
            {"model": f"FUZZ-{table}", "kind": "meter", "protocol": "modbus", "points": points}))
    devices, truth = [], {}
    for n, port in enumerate(ports):
        table = tables[n % len(tables)]
        devices.append({"name": f"m{n}", "profile": f"fuzz-{table}", "poll_s": poll_s, "timeout_s": timeout_s,
                        "retries": n // len(tables) % 2, "offline_after": 3 if n == 0 else 1_000_000,
                        "connection": {"host": "127.0.0.1", "port": port, "unit": 1 + n % 3}})
        truth.update({f"m{n}.{p['id']}": TRUTH[p["id"]] for p in TABLES[table]})
    site = {"site": "faultsmodbus", "spool": {"path": str(folder / "spool.db")}, "devices": devices}
    path = folder / "site.yaml"
    path.write_text(yaml.safe_dump(site, sort_keys=False))
    return path, truth


def spool_rows(path: Path, since: float = 0.0) -> list[tuple[str, object, int]]:
    """(point, value, quality) of every committed sample received after ``since``."""
    if not path.exists():
        return []
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10) as db:
        try:
            return list(db.execute("SELECT point, value, quality FROM samples WHERE gateway_time > ?", (since,)))
        except sqlite3.OperationalError:
            return []


async def _modbus_campaign(devices: list, replies: int, start: Callable[[], "GatewayProcess"], spool: Path,
                           truth: dict[str, object], deadline_s: float) -> dict[str, Any]:
    """Serve the devices, start the gateway, spoil until ``replies``; then answer correctly and wait for every
    point to be good again. The devices listen before the gateway starts, so start-up is no failure."""
    result: dict[str, Any] = {"partial": False, "crashed": False, "recovered": False}
    for device in devices:
        await device.start(device.port)
    gateway = result["gateway"] = start()
    try:
        result["stats_before"] = await asyncio.to_thread(gateway.wait_stats)
        result["rss_before"] = gateway.memory_kb()
        for device in devices:
            device.replies = device.spoilt = device.restored = 0
            device.kinds.clear()
            device.last_request, device.longest_gap_s, device.mutating = time.monotonic(), 0.0, True
        started = time.monotonic()
        result["rss_kb"] = rss = [(0, gateway.memory_kb())]
        while sum(d.replies for d in devices) < replies:
            if sum(d.replies for d in devices) >= rss[-1][0] + 10_000:
                rss.append((sum(d.replies for d in devices), gateway.memory_kb()))
            if not gateway.alive():
                result["crashed"] = True
                break
            if time.monotonic() - started > deadline_s:
                result["partial"] = True
                break
            await asyncio.sleep(0.2)
        for device in devices:
            device.mutating = False
        result["seconds"] = time.monotonic() - started
        switched = time.time()
        deadline = time.monotonic() + 30
        while not result["crashed"] and time.monotonic() < deadline:
            good = {point for point, _value, quality in spool_rows(spool, switched) if quality == 0}
            if set(truth) <= good:
                result["recovered"] = True
                result["recovery_s"] = time.time() - switched
                break
            if not gateway.alive():
                result["crashed"] = True
            await asyncio.sleep(0.5)
        if not result["recovered"]:
            missing = set(truth) - {p for p, _v, q in spool_rows(spool, switched) if q == 0}
            result["not_recovered"] = sorted(missing)
        await asyncio.sleep(1.1)  # one more counter dump
        result["rss_after"], result["peak"] = gateway.memory_kb(), gateway.memory_kb("VmHWM")
        result["stats_after"] = gateway.stats()
    finally:
        result["exit"] = await asyncio.to_thread(gateway.stop)  # stopped while the devices still answer
        for device in devices:
            await device.stop()
    return result


def run_modbus(replies: int, seed: int, folder: Path, n_devices: int = 12, poll_s: float = 0.01,
               timeout_s: float = 0.05, good_fraction: float = 0.2, deadline_s: float = DEADLINE_S,
               control: bool = False) -> dict[str, Any]:
    """The modbus campaign against a fresh gateway; its figures and summary line. ``control``: acceptable spoilt
    frames keep their POISON data, so bad_values must come out > 0 (proof that the judge sees them)."""
    import random

    from tests.fuzz_modbus import MutatingTcpDevice, judge_samples

    folder.mkdir(parents=True, exist_ok=True)
    ports = free_ports(n_devices)
    site, truth = modbus_site(folder, ports, poll_s, timeout_s)
    rng = random.Random(seed)
    devices = [MutatingTcpDevice(1 + n % 3, true_image(), random.Random(rng.randrange(1 << 30)), good_fraction,
                                 late_s=timeout_s * 1.2, restore_valid=not control) for n in range(n_devices)]
    for device, port in zip(devices, ports):
        device.port, device.mutating = port, False
    spool = folder / "spool.db"
    result = run_async(lambda: _modbus_campaign(devices, replies, lambda: GatewayProcess(site, folder), spool, truth,
                                                deadline_s))
    code = result["exit"]
    log_path = folder / "gateway.log"
    unhandled = sum(UNHANDLED_MODBUS in line for line in log_path.read_text(errors="replace").splitlines())
    checked, bad, examples = judge_samples(spool_rows(spool), truth, same)
    crashes = int(result["crashed"] or code not in (0, None))
    gap = max(d.longest_gap_s for d in devices)
    hangs = int(not result["recovered"] and not crashes) + int(gap > 25.0)
    changes = rose(result.get("stats_before", {}), result.get("stats_after", {}))
    causes: Counter = Counter()
    for key, grew in changes.items():
        if ".failures." in key:
            causes[key.rsplit(".", 1)[1]] += int(grew)
    kinds: Counter = sum((d.kinds for d in devices), Counter())
    sent = sum(d.replies for d in devices)
    line = (f"faults modbus{' CONTROL (no restore)' if control else ''} "
            f"replies={sent}{' (partial: time limit)' if result['partial'] else ''} "
            f"spoilt={sum(d.spoilt for d in devices)} restored_to_true={sum(d.restored for d in devices)} "
            f"devices={n_devices} good_rows_checked={checked} bad_values={bad} crashes={crashes} hangs={hangs} "
            f"unhandled_exceptions={unhandled} "
            f"rss_before={_mb(result.get('rss_before', 0))} MB rss_after={_mb(result.get('rss_after', 0))} MB "
            f"peak={_mb(result.get('peak', 0))} MB "
            f"recovered_in={result.get('recovery_s', float('nan')):.1f} s longest_request_gap={gap:.1f} s "
            f"connections={sum(d.connections for d in devices)} "
            f"failed_polls_by_cause{{{', '.join(f'{k}:{v}' for k, v in causes.most_common())}}} "
            f"ignored_frames=+{int(sum(v for k, v in changes.items() if k.endswith('ignored_frames')))} "
            f"exit={code} in {result.get('seconds', 0):.0f} s")
    return {"line": line, "bad": bad, "examples": examples, "crashes": crashes, "hangs": hangs, "checked": checked,
            "result": result, "kinds": kinds, "rose": changes, "exit": code, "log": log_path, "replies": sent,
            "unhandled": unhandled, "internal": causes.get("internal", 0)}


# -- command line --------------------------------------------------------------------------------

def main(argv: list[str]) -> int:
    """Run the campaigns (or, with ``serve``, be the gateway process)."""
    if argv[:1] == ["serve"]:
        serve_args = argparse.ArgumentParser(prog="faults.py serve")
        serve_args.add_argument("site")
        serve_args.add_argument("--stats", required=True)
        serve_args.add_argument("--status-interval", type=float, default=5.0)
        args = serve_args.parse_args(argv[1:])
        return serve(args.site, args.stats, args.status_interval)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=100_000, help="104 frames to send (0: skip)")
    parser.add_argument("--replies", type=int, default=100_000, help="spoilt-or-not Modbus replies (0: skip)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--batch", type=int, default=2000, help="104 frames between GI checks")
    parser.add_argument("--devices", type=int, default=12, help="Modbus devices polled")
    parser.add_argument("--poll", type=float, default=0.01, help="Modbus poll period, s")
    parser.add_argument("--timeout", type=float, default=0.05, help="Modbus reply timeout, s")
    parser.add_argument("--good-fraction", type=float, default=0.2, help="Modbus replies left correct")
    parser.add_argument("--time-limit", type=float, default=DEADLINE_S, help="seconds per campaign, then partial")
    parser.add_argument("--control", action="store_true", help="Modbus control run: frames a correct master "
                        "accepts keep their poisoned data, so bad_values > 0 shows the judge works")
    parser.add_argument("--keep", default=None, help="folder for sites, logs, spool, audit (default: a temp dir)")
    args = parser.parse_args(argv)
    folder = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="gridgate-faults-"))
    failed = False
    if args.frames:
        iec = run_iec104(args.frames, args.seed, args.batch, folder / "iec104", args.time_limit)
        print(iec["line"], flush=True)
        for probe in iec["probes"]:
            print(probe["line"], flush=True)
        failed |= any(probe["executed"] for probe in iec["probes"])
        tally = iec["tally"]
        for problem in tally.problems:
            print(f"  iec104: {problem}", file=sys.stderr)
        print("  iec104 RSS MB by frames sent: " + " ".join(f"{n}:{_mb(kb)}" for n, kb in tally.rss_kb),
              file=sys.stderr)
        failed |= bool(iec["crashes"] or tally.hangs or tally.undecodable or tally.sequence_errors or iec["unhandled"]
                       or tally.i_before_startdt)
    if args.replies:
        mb = run_modbus(args.replies, args.seed, folder / "modbus", args.devices, args.poll, args.timeout,
                        args.good_fraction, args.time_limit, args.control)
        print(mb["line"], flush=True)
        for example in mb["examples"]:
            print(f"  modbus bad value: {example}", file=sys.stderr)
        print("  modbus RSS MB by replies: " + " ".join(f"{n}:{_mb(kb)}" for n, kb in mb["result"].get("rss_kb", [])),
              file=sys.stderr)
        if not mb["result"]["recovered"]:
            print(f"  modbus: not good again after 30 s: {mb['result'].get('not_recovered')}", file=sys.stderr)
        failed |= bool(mb["crashes"] or mb["hangs"] or mb["unhandled"] or mb["internal"]
                       or (not mb["bad"] if args.control else mb["bad"]))
    print(f"faults: files in {folder}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
