"""Command benchmark: setpoint latency through the whole secured path, under ingest load.

A PCS and N load devices (100 holding registers each, values changing every second, polled every
second: the ingest benchmark's layout) are simulated by `gridgate simulate`; `gridgate run`
polls them and serves one master group with a C_SE_NC_1 setpoint (direct) for the PCS; this
process is the dispatch master and sends setpoints one after the other, alternating inside the
point's ramp.

Two figures per command: master ACT -> positive ACT_CON (c104's blocking transmit), and the
gateway's own time from receiving the command to the confirmed device write + read-back (from
the audit log: received -> confirmed).

Prints one summary line:
  commands load_devices=N sent=K | ACT->ACT_CON p50 A ms p99 B ms | received->device confirmed p50 C ms p99 D ms
"""

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import c104
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import stop, wait_port  # noqa: E402
from gateway.metrics import percentile  # noqa: E402
from gateway.commissioning.demo import free_ports  # noqa: E402
from gateway.commissioning.recordingmaster import RecordingMaster  # noqa: E402

CA, SETPOINT = 1, 24833


def write_site(folder: Path, load_devices: int) -> tuple[Path, int, int]:
    load = [{"id": f"r{i:03d}", "address": i, "type": "uint16", "sim": {"kind": "ramp", "value": i, "step": 1, "min": 0,
                                                                        "max": 60000}} for i in range(100)]
    (folder / "load.yaml").write_text(yaml.safe_dump({"model": "LOAD", "kind": "other", "protocol": "modbus", "points": load}))
    pcs_port, iec_port, *load_ports = free_ports(load_devices + 2)
    devices = [{"name": "pcs1", "profile": "pcs/gridgate-pcs-250", "poll_s": 1.0, "timeout_s": 1.0,
                "connection": {"host": "127.0.0.1", "port": pcs_port}}]
    devices += [{"name": f"l{n:03d}", "profile": "load", "poll_s": 1.0, "connection": {"host": "127.0.0.1", "port": port}}
                for n, port in enumerate(load_ports)]
    site = {"site": "benchcmd", "spool": {"path": str(folder / "spool.db")}, "audit": {"path": str(folder / "audit.jsonl")},
            "devices": devices,
            "master_groups": [{"name": "bench", "bind": "127.0.0.1", "port": iec_port, "allowed_masters": ["127.0.0.1"],
                               "common_address": CA,
                               "points": [{"point": "pcs1.ac_active_power", "ioa": 16385, "type": "M_ME_NC_1"}],
                               "commands": [{"ioa": SETPOINT, "type": "C_SE_NC_1", "point": "pcs1.active_power_setpoint",
                                             "mode": "direct"}]}],
            "command_policy": [{"point": "pcs1.active_power_setpoint", "groups": ["bench"]}]}
    path = folder / "site.yaml"
    path.write_text(yaml.safe_dump(site, sort_keys=False))
    return path, iec_port, pcs_port


def gateway_latencies(audit: Path) -> list[float]:
    """received -> confirmed per command, from the audit log (seconds)."""
    started: dict[str, datetime] = {}
    found = []
    for line in audit.read_text().splitlines():
        record = json.loads(line)
        if record["event"] == "received":
            started[record["command"]] = datetime.fromisoformat(record["ts"])
        elif record["event"] == "confirmed" and record["command"] in started:
            found.append((datetime.fromisoformat(record["ts"]) - started[record["command"]]).total_seconds())
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--load-devices", type=int, default=100)
    parser.add_argument("--commands", type=int, default=200)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="gridgate-benchcmd-"))
    site, iec_port, pcs_port = write_site(folder, args.load_devices)
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "cwd": folder}
    processes = [subprocess.Popen([sys.executable, "-m", "gateway", "simulate", str(site)], **quiet),
                 subprocess.Popen([sys.executable, "-m", "gateway", "run", str(site)], **quiet)]
    master = RecordingMaster("127.0.0.1", iec_port, CA, timeout_s=30)
    try:
        wait_port(pcs_port)
        wait_port(iec_port)
        master.connect()
        time.sleep(3)  # first polls: the PCS must be communicating
        point = master.connection.get_station(CA).add_point(io_address=SETPOINT, type=c104.Type.C_SE_NC_1)
        act_con, confirmed = [], 0
        for k in range(args.commands):
            point.value = 10.0 if k % 2 else 20.0
            started = time.perf_counter()
            ok = point.transmit(cause=c104.Cot.ACTIVATION)
            act_con.append(time.perf_counter() - started)
            confirmed += ok
            time.sleep(0.05)  # let the ACT_TERM arrive: c104's client refuses a new command before it
        device = gateway_latencies(folder / "audit.jsonl")
        print(f"commands load_devices={args.load_devices} sent={args.commands} confirmed={confirmed} | ACT->ACT_CON "
              f"p50 {statistics.median(act_con) * 1000:.1f} ms p99 {percentile(act_con, 0.99) * 1000:.1f} ms | "
              f"received->device confirmed p50 {statistics.median(device) * 1000:.1f} ms "
              f"p99 {percentile(device, 0.99) * 1000:.1f} ms", flush=True)
    finally:
        master.close()
        stop(processes)


if __name__ == "__main__":
    main()
