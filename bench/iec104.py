"""IEC 104 benchmark: GI time for a large point table and spontaneous latency, device to master.

Layout: N simulated devices x M holding registers (constant values), all mapped as M_ME_NC_1 in
one master group; `gridgate simulate --control` and `gridgate run` run as separate processes,
the dispatch master (c104, the one `gridgate dispatch-test` uses) in this one.

* GI time: from sending C_IC_NA_1 to the last of the N x M objects at the master.
* Spontaneous latency: a value is changed in the simulated device (control API), the gateway
  polls it (poll period P: on average P/2 of the latency), filters it, buffers it, and c104
  sends it (its slave thread polls every 100 ms); measured to the arrival at the master.

Prints one summary line:
  iec104 points=2000 poll=0.2 s | GI 2000 objects in X s | spontaneous latency p50 A ms p99 B ms max C ms (K changes)
"""

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import percentile, stop, wait_port  # noqa: E402
from gateway.demo import free_ports  # noqa: E402
from gateway.northbound.dispatchtest import SimulatorControl  # noqa: E402
from gateway.northbound.recordingmaster import RecordingMaster  # noqa: E402

CA = 1


def write_site(folder: Path, args: argparse.Namespace) -> tuple[Path, int, int]:
    """Profile, site with one master group covering every point; returns (site, 104 port, control port)."""
    points = [{"id": f"r{i:03d}", "address": i, "type": "uint16", "sim": {"kind": "constant", "value": i}}
              for i in range(args.points)]
    (folder / "bench.yaml").write_text(yaml.safe_dump({"model": "B104", "kind": "other", "protocol": "modbus",
                                                      "points": points}))
    *device_ports, iec_port, control = free_ports(args.devices + 2)
    table = [{"point": f"d{n:03d}.r{i:03d}", "ioa": 16385 + n * args.points + i, "type": "M_ME_NC_1"}
             for n in range(args.devices) for i in range(args.points)]
    site = {"site": "bench104", "spool": {"path": str(folder / "spool.db")},
            "devices": [{"name": f"d{n:03d}", "profile": "bench", "poll_s": args.poll,
                         "connection": {"host": "127.0.0.1", "port": port}} for n, port in enumerate(device_ports)],
            "master_groups": [{"name": "bench", "bind": "127.0.0.1", "port": iec_port, "allowed_masters": ["127.0.0.1"],
                               "common_address": CA, "event_buffer": {"send_rate": 20000}, "points": table}]}
    path = folder / "site.yaml"
    path.write_text(yaml.safe_dump(site))
    return path, iec_port, control


def gi_time(master: RecordingMaster, total: int) -> float:
    """Seconds from sending GI to the arrival of ``total`` interrogated objects."""
    before = len([a for a in master.arrivals() if a.cot == "INTERROGATED_BY_STATION"])
    started = time.time()
    master.interrogate()
    master.wait_for(lambda: len([a for a in master.arrivals() if a.cot == "INTERROGATED_BY_STATION"]) >= before + total, 60)
    last = max(a.at for a in master.arrivals() if a.cot == "INTERROGATED_BY_STATION")
    return last - started


def latencies(master: RecordingMaster, control: SimulatorControl, args: argparse.Namespace) -> list[float]:
    """Change a point, time its spontaneous arrival; one change at a time, on points spread over devices."""
    found = []
    for k in range(args.changes):
        device, register = k % args.devices, (k * 7) % args.points
        ioa, value = 16385 + device * args.points + register, 50000 + k
        started = time.time()
        control.set(f"d{device:03d}.r{register:03d}", value)
        if master.wait_for(lambda: any(a.ioa == ioa and a.value == value for a in master.arrivals()), 10):
            arrival = next(a for a in master.arrivals() if a.ioa == ioa and a.value == value)
            found.append(arrival.at - started)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=20)
    parser.add_argument("--points", type=int, default=100)
    parser.add_argument("--poll", type=float, default=0.2)
    parser.add_argument("--changes", type=int, default=100)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="gridgate-bench104-"))
    site, iec_port, control_port = write_site(folder, args)
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "cwd": folder}
    processes = [subprocess.Popen([sys.executable, "-m", "gateway", "simulate", str(site), "--control",
                                   f"127.0.0.1:{control_port}"], **quiet),
                 subprocess.Popen([sys.executable, "-m", "gateway", "run", str(site)], **quiet)]
    master = RecordingMaster("127.0.0.1", iec_port, CA, timeout_s=30)
    try:
        wait_port(iec_port)
        wait_port(control_port)
        master.connect()
        total = args.devices * args.points
        master.wait_for(lambda: len({a.ioa for a in master.arrivals() if a.value is not None and a.quality == frozenset()}) >= total, 60)
        gi = gi_time(master, total)
        found = sorted(latencies(master, SimulatorControl(f"http://127.0.0.1:{control_port}"), args))
        p99 = percentile(found, 0.99)
        print(f"iec104 points={total} poll={args.poll:g} s | GI {total} objects in {gi:.3f} s | spontaneous latency "
              f"p50 {statistics.median(found) * 1000:.0f} ms p99 {p99 * 1000:.0f} ms max {found[-1] * 1000:.0f} ms "
              f"({len(found)} of {args.changes} changes)", flush=True)
    finally:
        master.close()
        stop(processes)


if __name__ == "__main__":
    main()
