"""Ingest benchmark: N simulated devices x M holding registers, polled for T seconds.

Default layout (the one other gateways are commonly measured on): N devices on N TCP ports, 100
holding registers each, values changing every second. The simulators run in a separate
``gridgate simulate`` process so that only the gateway's own work is measured; the gateway runs
in this process (its CPU time and peak RSS are this process's), writing to its spool and, unless
``--no-influx``, through the writer into a VictoriaMetrics started on 127.0.0.1.

Prints one summary line:
  ingest devices=N points/device=M period=P s duration=T s | spool X pts/s | influx Y pts/s |
  cpu Z s/10k pts | peak rss R MB | skipped polls K | spool depth at end D

Asked for more than the machine can do, the gateway plateaus: polls are skipped (counted here),
memory stays bounded.
"""

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from twisted.internet import asyncioreactor

asyncioreactor.install()

import yaml  # noqa: E402
from twisted.internet import reactor  # noqa: E402
from twisted.internet.defer import inlineCallbacks  # noqa: E402
from twisted.internet.task import deferLater  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import stop, wait_port  # noqa: E402
from gateway.config.loader import load_site  # noqa: E402
from gateway.commissioning.demo import free_ports  # noqa: E402
from gateway.registry import load_plugins  # noqa: E402
from gateway.service import Gateway  # noqa: E402
from tests.tsdb import victoria_metrics  # noqa: E402


def write_layout(folder: Path, args: argparse.Namespace, influx_url: str | None) -> Path:
    """The benchmark profile (M points, each a ramp: holding registers, or Float nodes) and a site
    with N devices, polled (Modbus) or subscribed (OPC UA) every ``period``."""
    ramp = {"kind": "ramp", "step": 1.0, "min": 0, "max": 60000}
    if args.protocol == "modbus":
        points = [{"id": f"r{i:03d}", "address": i, "type": "uint16", "sim": {**ramp, "value": i}}
                  for i in range(args.points)]
        profile = {"model": "BENCH-100", "kind": "other", "protocol": "modbus", "points": points}
    else:
        points = [{"id": f"r{i:03d}", "node": f"i={1000 + i}", "data_type": "Float", "sim": {**ramp, "value": i}}
                  for i in range(args.points)]
        profile = {"model": "BENCH-100", "kind": "other", "protocol": "opcua", "points": points,
                   "opcua": {"namespace": "urn:gridgate:bench", "queue_size": 1}}
    (folder / "bench-device.yaml").write_text(yaml.safe_dump(profile), encoding="utf-8")
    devices = [{"name": f"d{n:04d}", "profile": "bench-device", "connection": _connection(args, port)}
               | ({"poll_s": args.period, "timeout_s": 1.0} if args.protocol == "modbus" else {})
               for n, port in enumerate(free_ports(args.devices))]
    site = {"site": "bench", "spool": {"path": str(folder / "spool.db")}, "devices": devices}
    if influx_url:
        site["influx"] = {"url": influx_url, "bucket": "bench", "batch_size": 20000, "flush_interval_s": 0.2}
    path = folder / "site.yaml"
    path.write_text(yaml.safe_dump(site), encoding="utf-8")
    return path


def _connection(args: argparse.Namespace, port: int) -> dict:
    if args.protocol == "modbus":
        return {"host": "127.0.0.1", "port": port, "unit": 1}
    return {"endpoint": f"opc.tcp://127.0.0.1:{port}", "publishing_interval_ms": int(args.period * 1000)}


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@inlineCallbacks
def measure(site_path: Path, args: argparse.Namespace):
    site = load_site(site_path, load_plugins())
    gateway = Gateway(site, load_plugins(), reactor)
    gateway.startService()
    yield deferLater(reactor, min(3.0, args.duration / 4), lambda: None)  # warm-up: connections, first polls
    spool0, sent0, cpu0, t0 = gateway.spool.stats()["committed"], _sent(gateway), cpu_s(), time.monotonic()
    yield deferLater(reactor, args.duration, lambda: None)
    elapsed = time.monotonic() - t0
    spooled = gateway.spool.stats()["committed"] - spool0
    sent = _sent(gateway) - sent0
    cpu = cpu_s() - cpu0
    skipped = int(gateway.metrics.total("gridgate_skipped_polls_total"))
    depth = gateway.spool.stats()["depth"]
    yield gateway.stopService()
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    influx = f"{sent / elapsed:.0f} pts/s" if gateway.writer else "off"
    print(f"ingest {args.protocol} devices={args.devices} points/device={args.points} period={args.period:g} s "
          f"duration={args.duration:g} s | spool {spooled / elapsed:.0f} pts/s | influx {influx} | "
          f"cpu {cpu / max(spooled, 1) * 10000:.3f} s/10k pts | peak rss {rss_mb:.0f} MB | "
          f"skipped polls {skipped} | spool depth at end {depth}", flush=True)


def _report(failure) -> None:
    print(f"benchmark failed: {failure.getTraceback()}", file=sys.stderr)


def _sent(gateway: Gateway) -> int:
    return gateway.writer.stats()["sent"] if gateway.writer else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=10)
    parser.add_argument("--points", type=int, default=100)
    parser.add_argument("--period", type=float, default=1.0)
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--no-influx", action="store_true", help="spool only")
    parser.add_argument("--protocol", choices=["modbus", "opcua"], default="modbus",
                        help="polled Modbus TCP devices, or subscribed OPC UA servers (values change every 0.5 s)")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="gridgate-bench-"))
    vm = None
    if not args.no_influx and shutil.which("victoria-metrics"):
        vm = victoria_metrics(folder)
        vm.start()
    site_path = write_layout(folder, args, vm.url if vm else None)
    ports = [int(str(d["connection"].get("port") or d["connection"]["endpoint"].rsplit(":", 1)[1]))
             for d in yaml.safe_load(site_path.read_text())["devices"]]
    simulator = subprocess.Popen([sys.executable, "-m", "gateway", "--log-level", "WARNING", "simulate",
                                  str(site_path)], stdout=subprocess.DEVNULL, cwd=folder)
    try:
        for port in ports:
            wait_port(port)
        reactor.callWhenRunning(lambda: measure(site_path, args).addErrback(_report).addBoth(lambda _: reactor.stop()))
        reactor.run()
    finally:
        stop([simulator])
        if vm:
            vm.stop()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
