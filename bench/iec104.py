"""IEC 104 benchmark: GI time, spontaneous latency, and the event rate the outstation sustains.

Layout: N simulated devices x M holding registers, all mapped as M_ME_TF_1 (answered in GI as its
untagged twin M_ME_NC_1) in one master group, plus L load devices of the same kind mapped for
events only (``gi: false``, so the GI figure stays that of the N x M points); deadband 0,
``event_buffer.send_rate`` at its maximum (20,000 objects/s), standard timers (k=12, w=8; the
group's k is ``--k``). Per device, register r000 is a probe, r001 a drive value, and r002.. integrate r001 (sim kind
``integrate``, gain 1): they hold still while r001 is 0 and change r001 times a second once it
is set (at most once per poll), their start values spread over one unit so that the changes of
a level come evenly rather than all on one poll. The simulator is the one
``gridgate simulate --control`` runs, stepping its values every poll period instead of every
0.5 s. Simulator and gateway (``gridgate run``) run as separate processes, the masters in this
one; all on 127.0.0.1, TZ=UTC, wire time UTC.

* GI time (c104 master, the one of ``gridgate dispatch-test``): from sending C_IC_NA_1 to the
  last of the N x M objects at the master.
* Spontaneous latency (c104 master): one probe changed at a time (control API), spread over the
  devices; from the change in the simulated device to the object at the master. It holds the
  wait for the next poll (0 to P), the event buffer's commit and the event pump's 50 ms tick.
* Sustained event rate, acknowledged: a ladder of offered rates (``--event-rates``, up to
  (N + L) x (M - 2) / P), each set through the drive values of every device. Per level, after
  ``--warmup`` seconds (and up to 5 s more while the backlog of the step drains), a window
  of ``--window`` seconds is measured. Method: what the gateway offered is read from its
  event-buffer file (``<spool>.<group>.events``, SQLite in WAL mode, opened read-only):
  ``sqlite_sequence`` counts every event ever appended (ids only grow), ``count(*)`` is the
  depth, the events the master has not acknowledged yet. What arrived are the COT 3 objects the
  master received in the window. A level is sustained when the arrivals are at least 95 % of the
  events offered in the window, the depth grew by at most 5 % of them, and it never held more
  than one second of the offer (sampled every 0.5 s; a standing backlog means the outstation
  runs at its limit, and its latency is the backlog's). A level that is not is measured once
  more (``--retries``), then the ladder stops. The line reports the highest sustained level's
  arrival rate and the p99 of its events' latency (arrival at the master minus the CP56Time2a
  source time, which is the device poll time), what the next level offered and got through,
  and the CPU other processes used meanwhile (a shared machine shows in the figures). Per
  level, a line on stderr gives the figures and the CPU share of gateway, simulator, this
  process (the master) and everything else on the machine.

The master of the rate phase: by default ``tests/wire104.RawMaster``, a small asyncio master
written from the standard's octets (S-frame after w=8 I-frames or its t2 of 0.5 s), on a thread
of its own. ``--master c104`` keeps the RecordingMaster of phase 1 (lib60870, also w=8). Both
gave the same sustained rates on the 2-core VM, so neither master is the bottleneck; the raw
one is the default because it takes half the CPU of the RecordingMaster (which decodes every
frame twice, with c104 and ``monitorframes``) on a machine the gateway shares, and it
acknowledges the frames left over at the end of a burst after 0.5 s (c104's client left them
unacknowledged for more than 5 s).

``--conversion`` measures 规约转换 instead, both ways (a downstream RTU's change to the dispatch
master, a dispatch SBO command through the gateway to the RTU and back): ``bench/conversion104.py``.

Prints one summary line:
  iec104 points=2000 (+2000 events only) poll=0.2 s | GI 2000 objects in X s | spontaneous latency
  p50 A ms p99 B ms max C ms (K of K changes) | events sustained N/s to one master (acknowledged,
  raw master, gateway at G% of a core), latency p99 L ms at that rate | next level offered O/s:
  D/s delivered, buffer +B | other processes U% of a core
"""

import argparse
import asyncio
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench import conversion104  # noqa: E402
from bench.common import stop, wait_port  # noqa: E402
from gateway.metrics import percentile  # noqa: E402
from gateway.commissioning.demo import free_ports  # noqa: E402
from gateway.simulation.simclient import SimulatorControl  # noqa: E402
from gateway.commissioning.recordingmaster import RecordingMaster  # noqa: E402
from gateway.iec104.wiretime import WireClock  # noqa: E402

CA = 1
GROUP = "bench"
FIRST_IOA = 16385
PROBE, DRIVE = "r000", "r001"
GOLDEN = 0.6180339887
WIRE = WireClock("UTC")
KEPT_UP = 0.95
LATENCY_BUDGET_S = 60.0  # the single-change phase gives up after this, so a broken run still ends
MAX_BACKLOG_S = 1.0  # a level that holds more than this much of its offer unacknowledged runs at its limit
SETTLED_BACKLOG_S = 0.5  # a window starts once the backlog of a rate step is below this...
SETTLE_MAX_S = 5.0  # ...or this long after the warm-up (then the level is measured as it is)


# -- the site --------------------------------------------------------------------------------

def write_site(folder: Path, args: argparse.Namespace) -> tuple[Path, int, int]:
    """Profile and site with one master group covering every point; (site, 104 port, control port)."""
    points = [{"id": PROBE, "address": 0, "type": "uint16", "sim": {"kind": "constant", "value": 0}},
              {"id": DRIVE, "address": 1, "type": "uint16", "sim": {"kind": "constant", "value": 0}}]
    points += [{"id": f"r{i:03d}", "address": i, "type": "uint16",  # start phases spread over one unit
                "sim": {"kind": "integrate", "source": DRIVE, "rate_per_s": 1, "value": round(i * GOLDEN % 1, 3),
                        "min": 0, "max": 65535}}
               for i in range(2, args.points)]
    (folder / "bench.yaml").write_text(yaml.safe_dump({"model": "B104", "kind": "other", "protocol": "modbus",
                                                      "points": points}))
    devices = args.devices + args.load_devices
    *device_ports, iec_port, control = free_ports(devices + 2)
    table = [{"point": f"d{n:03d}.r{i:03d}", "ioa": ioa(args, n, i), "type": "M_ME_TF_1", "gi": n < args.devices}
             for n in range(devices) for i in range(args.points)]
    site = {"site": "bench104", "spool": {"path": str(folder / "spool.db")},
            "devices": [{"name": f"d{n:03d}", "profile": "bench", "poll_s": args.poll,
                         "connection": {"host": "127.0.0.1", "port": port}} for n, port in enumerate(device_ports)],
            "master_groups": [{"name": GROUP, "bind": "127.0.0.1", "port": iec_port, "allowed_masters": ["127.0.0.1"],
                               "common_address": CA, "event_buffer": {"send_rate": 20000}, "points": table,
                               "timers": {"k": args.k, "w": min(8, args.k * 2 // 3)}}]}
    path = folder / "site.yaml"
    path.write_text(yaml.safe_dump(site))
    return path, iec_port, control


def ioa(args: argparse.Namespace, device: int, register: int) -> int:
    """The IOA of register ``register`` of device ``device``."""
    return FIRST_IOA + device * args.points + register


def serve_simulator(site_path: str, control_port: int, period_s: float) -> None:
    """What ``gridgate simulate --control`` does, with values stepped every ``period_s``."""
    from twisted.internet import asyncioreactor
    asyncioreactor.install()
    from twisted.internet import reactor

    from drivers.modbus.sim.server import ModbusSimulator
    from gateway.config.loader import load_site
    from gateway.registry import load_plugins
    from gateway.simulation.simcontrol import start_control

    site = load_site(Path(site_path), load_plugins())
    simulator = ModbusSimulator(site.devices, reactor, period_s=period_s)
    reactor.addSystemEventTrigger("before", "shutdown", simulator.stop)
    reactor.callWhenRunning(lambda: simulator.start().addCallback(
        lambda _: start_control(reactor, [simulator], site.devices, "127.0.0.1", control_port)))
    reactor.run()


# -- GI and single-change latency (c104 master) ----------------------------------------------

def gi_time(master: RecordingMaster, total: int) -> float:
    """Seconds from sending GI to the arrival of ``total`` interrogated objects."""
    before = len([a for a in master.arrivals() if a.cot == "INTERROGATED_BY_STATION"])
    started = time.time()
    master.interrogate()
    master.wait_for(lambda: len([a for a in master.arrivals() if a.cot == "INTERROGATED_BY_STATION"]) >= before + total, 60)
    last = max(a.at for a in master.arrivals() if a.cot == "INTERROGATED_BY_STATION")
    return last - started


def latencies(master: RecordingMaster, control: SimulatorControl, args: argparse.Namespace) -> list[float]:
    """Change a probe, time its spontaneous arrival; one change at a time, spread over the devices."""
    found: list[float] = []
    deadline = time.monotonic() + LATENCY_BUDGET_S
    for k in range(args.changes):
        if time.monotonic() > deadline:
            break
        device = k % args.devices
        address, value = ioa(args, device, 0), 50000 + k
        started = time.time()
        control.set(f"d{device:03d}.{PROBE}", value)
        if master.wait_for(lambda: any(a.ioa == address and a.value == value for a in master.arrivals()), 10):
            arrival = next(a for a in master.arrivals() if a.ioa == address and a.value == value)
            found.append(arrival.at - started)
    return found


# -- the rate phase: masters, buffer, CPU ----------------------------------------------------

class EventLog(Protocol):
    """What the rate phase reads of a master: spontaneous objects as (arrival, source time)."""

    def mark(self) -> int: ...
    def between(self, start: int, end: int) -> list[tuple[float, float]]: ...
    def close(self) -> None: ...


class C104Events:
    """Spontaneous objects recorded by the c104 RecordingMaster (the one of phase 1)."""

    def __init__(self, master: RecordingMaster) -> None:
        self._master = master

    def mark(self) -> int:
        return len(self._master.arrivals())

    def between(self, start: int, end: int) -> list[tuple[float, float]]:
        return [(a.at, WIRE.from_wall(a.recorded_at)) for a in self._master.arrivals()[start:end]
                if a.cot == "SPONTANEOUS" and a.recorded_at is not None]

    def close(self) -> None:
        self._master.close()


class RawEvents:
    """``tests/wire104.RawMaster`` (written from the standard's octets, acknowledges every w=8
    I-frames or after its t2 of 0.5 s) on an asyncio loop of its own thread. Once data transfer
    runs it keeps, per frame, only the arrival time and the source times of its COT 3 objects."""

    def __init__(self, port: int) -> None:
        from tests.wire104 import RawMaster

        class CompactRawMaster(RawMaster):
            def __init__(self) -> None:
                super().__init__(w=8)
                self.compact = False
                self.arrived: list[tuple[float, list[float]]] = []

            def _on_frame(self, frame: bytes) -> None:
                at = time.time()
                super()._on_frame(frame)
                if not self.compact:
                    return
                asdu = self.received.pop().asdu if self.received else None
                if asdu is not None and asdu.cot == 3:
                    self.arrived.append((at, [WIRE.from_wall(o.time.datetime()) for o in asdu.objects if o.time]))

        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="raw-master", daemon=True)
        self._thread.start()
        self._master = CompactRawMaster()
        asyncio.run_coroutine_threadsafe(self._open(port), self._loop).result(30)

    async def _open(self, port: int) -> None:
        await self._master.connect("127.0.0.1", port)
        await self._master.startdt()
        self._master.received.clear()
        self._master.compact = True

    def mark(self) -> int:
        return len(self._master.arrived)

    def between(self, start: int, end: int) -> list[tuple[float, float]]:
        return [(at, source) for at, sources in self._master.arrived[start:end] for source in sources]

    def close(self) -> None:
        if self._master.errors:
            print(f"iec104 raw master: {self._master.errors[:5]}", file=sys.stderr)
        asyncio.run_coroutine_threadsafe(self._master.close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


def buffer_counts(path: Path) -> tuple[int, int]:
    """(events ever appended, events not yet acknowledged) in the gateway's event-buffer file."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    try:
        appended = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'samples'").fetchall()
        depth = db.execute("SELECT count(*) FROM samples").fetchall()[0][0]
        return (appended[0][0] if appended else 0), depth
    finally:
        db.close()


def cpu_seconds(pid: int | None = None) -> float:
    """User + system CPU seconds so far of a process (Linux /proc), or of the whole machine."""
    if pid is None:
        user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, Path("/proc/stat").read_text().split()[1:9])
        return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Level:
    """One measured window of the ladder."""

    asked: int              # the rate the level meant to offer
    seconds: float
    offered: int            # events the gateway appended to its buffer in the window
    arrived: int            # COT 3 objects the master received in the window
    depth: tuple[int, int]  # buffer depth (not acknowledged) at the start and the end of the window
    deepest: int            # the largest depth seen in the window (sampled every 0.5 s)
    latencies: list[float]  # arrival minus source time, sorted
    cpu: dict[str, float]   # share of one core: each process, and everything else on the machine

    @property
    def kept_up(self) -> bool:
        """Arrivals within 5 % of the offer, the backlog not growing, and never more than a second of it."""
        grew = self.depth[1] - self.depth[0]
        return (self.arrived >= KEPT_UP * self.offered and grew <= (1 - KEPT_UP) * self.offered
                and self.deepest <= self.per_s(self.offered) * MAX_BACKLOG_S)

    def per_s(self, count: int) -> float:
        """A count of the window as a rate."""
        return count / self.seconds

    def describe(self) -> str:
        """The level's figures on one line (stderr)."""
        p50, p99 = statistics.median(self.latencies or [0.0]), percentile(self.latencies or [0.0], 0.99)
        cpu = " ".join(f"{name} {share:.0%}" for name, share in self.cpu.items())
        return (f"asked {self.asked:5d}/s: offered {self.per_s(self.offered):5.0f}/s, arrived "
                f"{self.per_s(self.arrived):5.0f}/s, buffer {self.depth[0]} -> {self.depth[1]} (max {self.deepest}), "
                f"latency p50 {p50 * 1000:.0f} ms p99 {p99 * 1000:.0f} ms; CPU {cpu}; "
                f"{'kept up' if self.kept_up else 'FELL BEHIND'}")


def measure(events: EventLog, buffer: Path, pids: dict[str, int], window_s: float, asked: int) -> Level:
    """Offered and arrived events, buffer depth, latency and CPU over ``window_s`` seconds."""
    mark, (appended, depth) = events.mark(), buffer_counts(buffer)
    used, machine, started = {name: cpu_seconds(pid) for name, pid in pids.items()}, cpu_seconds(), time.monotonic()
    deepest = depth
    while (left := started + window_s - time.monotonic()) > 0:
        time.sleep(min(0.5, left))
        deepest = max(deepest, buffer_counts(buffer)[1])
    end, (appended_end, depth_end) = events.mark(), buffer_counts(buffer)
    seconds = time.monotonic() - started
    cpu = {name: (cpu_seconds(pid) - used[name]) / seconds for name, pid in pids.items()}
    cpu["others"] = max(0.0, (cpu_seconds() - machine) / seconds - sum(cpu.values()))
    found = sorted(at - source for at, source in events.between(mark, end))
    return Level(asked, seconds, appended_end - appended, len(found), (depth, depth_end), max(deepest, depth_end),
                 found, cpu)


def settle(buffer: Path, rate: int, warmup_s: float) -> None:
    """Wait ``warmup_s``, then while the backlog of the rate step is still draining (at most
    ``SETTLE_MAX_S`` more), so that a window starts in the level's steady state."""
    time.sleep(warmup_s)
    deadline = time.monotonic() + SETTLE_MAX_S
    while buffer_counts(buffer)[1] > rate * SETTLED_BACKLOG_S and time.monotonic() < deadline:
        time.sleep(0.5)


def ladder(events: EventLog, control: SimulatorControl, buffer: Path, pids: dict[str, int],
           args: argparse.Namespace) -> list[Level]:
    """Offer each rate in turn (every follower moving at rate / followers per second) and measure
    it; a level that falls behind is measured once more (``--retries``: a hiccup of a shared
    machine can fail a level), then the ladder stops."""
    levels: list[Level] = []
    devices = args.devices + args.load_devices
    followers = devices * (args.points - 2)
    for step, rate in enumerate(args.event_rates, 1):
        per_point = min(rate / followers, 1 / args.poll)  # a point changes at most once per poll
        for device in range(devices):
            control.set(f"d{device:03d}.{DRIVE}", per_point)
        for attempt in range(1 + args.retries):
            settle(buffer, rate, args.warmup)
            level = measure(events, buffer, pids, args.window, rate)
            again = f" (again, {attempt + 1})" if attempt else ""
            print(f"iec104 rate level {step}/{len(args.event_rates)}{again}: {level.describe()}", file=sys.stderr,
                  flush=True)
            if level.kept_up:
                break
        levels.append(level)
        if not level.kept_up:
            break
    return levels


def rate_summary(levels: list[Level], master: str) -> str:
    """The sustained level with its latency p99, what the next level got through, and how busy
    the rest of the machine was (a shared VM)."""
    kept = [level for level in levels if level.kept_up]
    if kept:
        best = kept[-1]
        text = (f"events sustained {best.per_s(best.arrived):.0f}/s to one master (acknowledged, {master} master, "
                f"gateway at {best.cpu['gateway']:.0%} of a core), latency p99 "
                f"{percentile(best.latencies, 0.99) * 1000:.0f} ms at that rate")
    else:
        text = f"events: not even the first level sustained ({master} master)"
    if levels and not levels[-1].kept_up:
        over = levels[-1]
        text += (f" | next level offered {over.per_s(over.offered):.0f}/s: {over.per_s(over.arrived):.0f}/s delivered, "
                 f"buffer {over.depth[1] - over.depth[0]:+d}")
    else:
        text += " (the highest level offered)"
    others = statistics.mean(level.cpu["others"] for level in levels) if levels else 0.0
    return text + f" | other processes {others:.0%} of a core"


# -- main ------------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=20, help="devices answered in GI (phases 1 and 2)")
    parser.add_argument("--points", type=int, default=100, help="per device, at least 3 (probe, drive, followers)")
    parser.add_argument("--poll", type=float, default=0.2)
    parser.add_argument("--changes", type=int, default=100, help="single changes timed for the latency")
    parser.add_argument("--load-devices", type=int, default=20, help="extra devices, events only, for the rate ladder")
    parser.add_argument("--event-rates", type=lambda text: [int(r) for r in text.split(",")],
                        default=[2000, 4000, 6000, 7000, 8000, 10000, 12000, 14000],
                        help="events/s offered by the ladder's levels, ascending (comma-separated)")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds before each level's window")
    parser.add_argument("--window", type=float, default=8.0, help="seconds measured per level")
    parser.add_argument("--retries", type=int, default=1, help="measurements more of a level that falls behind")
    parser.add_argument("--master", choices=["raw", "c104"], default="raw", help="master of the rate ladder")
    parser.add_argument("--k", type=int, default=12, help="the group's send window k (I-frames not yet acknowledged)")
    parser.add_argument("--serve-simulator", nargs=3, metavar=("SITE", "CONTROL_PORT", "PERIOD_S"),
                        help=argparse.SUPPRESS)
    conversion104.add_arguments(parser)
    args = parser.parse_args()
    if args.conversion:
        conversion(args.conversion_changes)
        return
    if args.serve_simulator:
        site, port, period = args.serve_simulator
        serve_simulator(site, int(port), float(period))
        return
    if args.points < 3:
        parser.error("--points must be at least 3")
    folder = Path(tempfile.mkdtemp(prefix="gridgate-bench104-"))
    site, iec_port, control_port = write_site(folder, args)
    env = {**os.environ, "TZ": "UTC"}
    with open(folder / "simulator.log", "wb") as sim_log, open(folder / "gateway.log", "wb") as gateway_log:
        processes = [subprocess.Popen([sys.executable, __file__, "--serve-simulator", str(site), str(control_port),
                                       str(args.poll)], stdout=sim_log, stderr=subprocess.STDOUT, cwd=folder, env=env),
                     subprocess.Popen([sys.executable, "-m", "gateway", "run", str(site)], stdout=gateway_log,
                                      stderr=subprocess.STDOUT, cwd=folder, env=env)]
    pids = {"gateway": processes[1].pid, "simulator": processes[0].pid, "master": os.getpid()}
    master = RecordingMaster("127.0.0.1", iec_port, CA, timeout_s=30)
    events: EventLog = C104Events(master)
    try:
        wait_port(iec_port)
        wait_port(control_port)
        if master.connect() is None:
            raise RuntimeError(f"the c104 master could not start data transfer on 127.0.0.1:{iec_port}")
        total = args.devices * args.points
        gi_ioas = range(FIRST_IOA, FIRST_IOA + total)
        if not master.wait_for(lambda: len({a.ioa for a in master.arrivals() if a.ioa in gi_ioas and a.value is not None
                                            and a.quality == frozenset()}) >= total, 60):
            raise RuntimeError(f"not every point arrived with good quality within 60 s; logs in {folder}")
        gi = gi_time(master, total)
        control = SimulatorControl(f"http://127.0.0.1:{control_port}")
        found = sorted(latencies(master, control, args))
        if not found:
            raise RuntimeError(f"no single change arrived; logs in {folder}")
        if args.master == "raw":
            master.close()
            events = RawEvents(iec_port)
        levels = ladder(events, control, folder / f"spool.db.{GROUP}.events", pids, args)
        load = f" (+{args.load_devices * args.points} events only)" if args.load_devices else ""
        print(f"iec104 points={total}{load} poll={args.poll:g} s | GI {total} objects in {gi:.3f} s | spontaneous "
              f"latency p50 {statistics.median(found) * 1000:.0f} ms p99 {percentile(found, 0.99) * 1000:.0f} ms max "
              f"{found[-1] * 1000:.0f} ms ({len(found)} of {args.changes} changes) | "
              f"{rate_summary(levels, args.master)}", flush=True)
    finally:
        events.close()
        stop(processes)
    shutil.rmtree(folder)  # spool and event buffer, tens of MB; kept (with the logs) when the run failed


def conversion(changes: int) -> None:
    """The 规约转换 benchmark on an asyncio reactor of this process (installed here, not at import)."""
    from twisted.internet import asyncioreactor
    asyncioreactor.install()
    from twisted.internet import reactor
    outcome: list = []

    def done(result: object) -> None:
        outcome.append(result)
        reactor.stop()
    reactor.callWhenRunning(lambda: conversion104.run(changes, reactor).addBoth(done))
    reactor.run()
    if not outcome or not isinstance(outcome[0], str):
        raise SystemExit(f"conversion benchmark failed: {outcome[0] if outcome else 'no result'}")
    print(outcome[0], flush=True)


if __name__ == "__main__":
    main()
