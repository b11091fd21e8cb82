"""规约转换 latency, both ways, run by ``bench/iec104.py --conversion``.

Layout: the shipped booster-station RTU (``rtu/gridgate-booster-rtu``, simulated on c104's
server, time tags in Asia/Shanghai), read by the gateway as its master; its feeder breaker
forwarded to a master group as M_DP_TB_1 with a select-before-operate C_DC command; a dispatch
master (the c104 RecordingMaster of ``gridgate dispatch-test``). Simulator, gateway and master
share this process and its reactor (the master's blocking calls in threads), on 127.0.0.1.

* RTU → dispatch: the breaker is toggled in the simulated RTU (sent at once, spontaneously);
  from the toggle to the object at the dispatch master. It holds lib60870's send loop on both
  links (about 100 ms each: a slave thread polls its socket with a 100 ms timeout before it
  drains its queue), the gateway's event buffer commit and its event pump's tick.
* dispatch → RTU → dispatch: the master selects and executes the breaker; from sending the
  select to the ACT_TERM (the gateway's command went to the RTU, both confirmations and the
  return information came back), and to the new position at the master.

Prints one line: ``conversion rtu->dispatch p50 X ms p99 Y ms | command act_term p50 .. p99 ..
| new state p50 .. p99 .. | n=N``.
"""

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread

from gateway.commands.auditkeys import init_key
from gateway.commissioning.recordingmaster import RecordingMaster
from gateway.metrics import percentile
from tests.integration.sites import Running, until
from tests.ports import next_ports

CA, BREAKER, COMMAND, COMM_STATUS = 7, 101, 24601, 12289


def write_site(folder: Path) -> tuple[Path, int]:
    """The RTU, its forwarded breaker and command, the audit key; the group's port."""
    rtu_port, iec_port = next_ports(2)
    init_key(folder / "audit.key")
    site = {
        "site": "conversion-bench", "spool": {"path": str(folder / "spool.db")},
        "audit": {"path": str(folder / "audit.jsonl"), "key": str(folder / "audit.key")},
        "devices": [{"name": "rtu1", "profile": "rtu/gridgate-booster-rtu",
                     "connection": {"host": "127.0.0.1", "port": rtu_port, "common_address": 1,
                                    "wire_time_zone": "Asia/Shanghai", "clock_sync": "never",
                                    "timers": {"t1": "3s", "t2": "1s"},
                                    "command_timeout_s": "2s"}}],
        "master_groups": [{
            "name": "provincial", "bind": "127.0.0.1", "port": iec_port, "allowed_masters": ["127.0.0.1"],
            "common_address": CA, "comm_status": {"rtu1": COMM_STATUS},
            "points": [{"point": "rtu1.cb_f1_pos", "ioa": BREAKER, "type": "M_DP_TB_1"}],
            "commands": [{"ioa": COMMAND, "type": "C_DC_NA_1", "point": "rtu1.cb_f1_pos", "mode": "select_execute",
                          "related_ioa": BREAKER, "on_value": 2, "off_value": 1}]}],
        "command_policy": [{"point": "rtu1.cb_f1_pos", "groups": ["provincial"], "timeout_s": "5s"}]}
    path = folder / "site.yaml"
    path.write_text(yaml.safe_dump(site, sort_keys=False), encoding="utf-8")
    return path, iec_port


def arrived(master: RecordingMaster, state: int, since: float) -> float | None:
    """When the breaker's ``state`` reached the master at or after ``since``."""
    return next((a.at for a in master.arrivals() if a.ioa == BREAKER and a.value == state and a.at >= since), None)


@inlineCallbacks
def run(changes: int, reactor: Any) -> Any:
    """Both paths ``changes`` times each; the summary line."""
    site_path, iec_port = write_site(Path(tempfile.mkdtemp(prefix="gridgate-conversion-")))
    running = Running(site_path)
    yield running.start()
    master = RecordingMaster("127.0.0.1", iec_port, CA, 10.0)
    try:
        yield until(running.all_good, 30)
        yield deferToThread(master.connect)
        spontaneous, act_term, new_state = [], [], []
        for n in range(changes):
            state = 1 if n % 2 == 0 else 2
            toggled = time.time()
            running.simulators[0].set_value("rtu1", "cb_f1_pos", state)
            yield until(lambda: arrived(master, state, toggled) is not None, 5)
            spontaneous.append(arrived(master, state, toggled) - toggled)  # type: ignore[operator]
        for n in range(changes):
            state = 2 if n % 2 == 0 else 1
            sent = time.time()
            timeline = yield deferToThread(master.send_command, COMMAND, "C_DC_NA_1", state, True)
            if timeline.act_term_s is None:
                raise RuntimeError(f"command {n} not terminated: {timeline}")
            act_term.append(timeline.act_term_s + (timeline.select_con_s or 0.0))
            yield until(lambda: arrived(master, state, sent) is not None, 5)
            new_state.append(arrived(master, state, sent) - sent)  # type: ignore[operator]
            yield deferLater(reactor, 0.05, lambda: None)
        return summary(spontaneous, act_term, new_state)
    finally:
        master.close()
        yield running.stop()


def summary(spontaneous: list[float], act_term: list[float], new_state: list[float]) -> str:
    def ms(values: list[float], fraction: float) -> str:
        return f"{percentile(values, fraction) * 1000:.0f} ms"
    return (f"conversion rtu->dispatch p50 {ms(spontaneous, 0.5)} p99 {ms(spontaneous, 0.99)} | command act_term "
            f"p50 {ms(act_term, 0.5)} p99 {ms(act_term, 0.99)} | new state p50 {ms(new_state, 0.5)} "
            f"p99 {ms(new_state, 0.99)} | n={len(spontaneous)}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--conversion", action="store_true", help="规约转换 latency both ways (see bench/conversion104.py)")
    parser.add_argument("--conversion-changes", type=int, default=50, help="changes and commands timed")
