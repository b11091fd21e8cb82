"""``gridgate dispatch-test``: play the dispatch master against a gateway's 104 outstation.

Commissioning (联调) checks the outstation point by point against the table the dispatch centre
holds. This tool does that from the site file: it connects as a c104 master to one master
group, interrogates (station GI, and counter interrogation when the table has counters), and
checks every row (IOA, type, quality, value against the simulator's, comm status, alarms), the
common address, that nothing outside the table is sent, how fast a provoked change arrives
spontaneously, and that clock synchronisation is confirmed. Verdicts are in ``dispatchcheck``,
reports in ``report``.

How the received type is seen: the client starts with no points, so every IOA is new to it and
c104 calls ``on_new_point`` with the type that arrived; the point is then created with that
type. A later object at the IOA with another type is refused by c104 and reported through
``on_unexpected_message`` (``MISMATCHED_TYPE_ID``) with the message's type: both are recorded.

Synchronous on purpose: it needs no reactor. c104's blocking calls (start, GI, clock sync, stop)
and urllib run in the calling thread; c104 callbacks, on c104's threads, only copy plain values
under a lock and wake waiters. This module must not use ``from __future__ import annotations``:
c104 checks callback annotations as real objects.
"""

import argparse
import datetime
import json
import socket
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import c104

from gateway.config.iec104 import MasterGroup
from gateway.config.loader import Site
from gateway.northbound.dispatchcheck import (VALUE_SLACK_S, Arrival, Check, DispatchResult, Expectation, Probe,
                                              ProbePlan, TagCheck, ValueHistory, Verdict, answer_to, check_row,
                                              expectations, latency_summary, plan_probes, unexpected_ioas)
from gateway.northbound.report import summary_text, write_html, write_junit

QUALITY_FLAGS = {"Invalid": "IV", "NonTopical": "NT", "Substituted": "SB", "Blocked": "BL",
                 "Overflow": "OV", "ElapsedTimeInvalid": "EI"}
COUNTER_FLAGS = {"Invalid": "IV", "Adjusted": "CA", "Carry": "CY"}
SAMPLE_EVERY_S = 0.2
MAX_PREROLL_S = 15.0


@dataclass(frozen=True)
class Options:
    """What the command line asked for."""

    group: str
    target: tuple[str, int]
    simulator: Optional[str] = None
    timeout_s: float = 10.0
    latency_points: int = 20
    max_latency_s: float = 3.0
    time_tolerance_s: float = 2.0


class ControlError(Exception):
    """The simulator control API did not answer as expected."""


class SimulatorControl:
    """Client of ``gateway.simcontrol``: the simulator's values, and changes on demand."""

    def __init__(self, url: str, timeout_s: float = 5.0) -> None:
        self.url = url.rstrip("/")
        self._timeout_s = timeout_s

    def values(self) -> dict[str, Any]:
        """``device.point`` -> the value the simulator serves now."""
        return self._call(urllib.request.Request(f"{self.url}/values"))

    def set(self, point: str, value: Any) -> Any:
        """Serve ``value`` at ``point``; the value served afterwards (registers quantise it)."""
        body = json.dumps({"point": point, "value": value}).encode()
        request = urllib.request.Request(f"{self.url}/set", data=body, method="POST",
                                         headers={"content-type": "application/json"})
        return self._call(request)["value"]

    def _call(self, request: urllib.request.Request) -> Any:
        try:
            with urllib.request.urlopen(request, timeout=self._timeout_s) as answer:
                return json.loads(answer.read())
        except urllib.error.HTTPError as exc:
            raise ControlError(f"{request.full_url}: HTTP {exc.code} {exc.read().decode(errors='replace')}") from None
        except (OSError, ValueError) as exc:
            raise ControlError(f"{request.full_url}: {exc}") from None


def _flags(quality: Any) -> frozenset[str]:
    """c104 quality flags as their 104 abbreviations."""
    if quality is None:
        return frozenset()
    names = COUNTER_FLAGS if isinstance(quality, c104.BinaryCounterQuality) else QUALITY_FLAGS
    members = type(quality).__members__
    return frozenset(short for name, short in names.items()
                     if name in members and quality.value & members[name].value)


def _plain(value: Any) -> Any:
    """A c104 value as a Python bool/int/float (Double as its state number 0-3)."""
    if isinstance(value, (bool, int, float)) or value is None:
        return value
    if isinstance(value, c104.Double):
        return int(value.value)
    if isinstance(value, c104.NormalizedFloat):
        return float(value)
    return int(value) if hasattr(value, "__int__") else str(value)


class MasterSession:
    """A c104 client on one connection, recording every information object it receives."""

    def __init__(self, host: str, port: int, common_address: int, timeout_s: float) -> None:
        self.host, self.port, self.common_address = socket.gethostbyname(host), port, common_address
        self._timeout_s = timeout_s
        self._changed = threading.Condition(threading.RLock())
        self._arrivals: list[Arrival] = []
        self._commands: list[tuple[str, str, bool, float]] = []  # type, cot, negative, at
        self.foreign_cas: set[int] = set()
        self.unexpected: dict[tuple[str, str, str], set[int]] = {}  # (cause, type, cot) -> IOAs
        self._client = c104.Client(tick_rate_ms=50, command_timeout_ms=int(timeout_s * 1000))
        self._client.on_new_point(callable=self._on_new_point)
        self._client.on_new_station(callable=self._on_new_station)
        self.connection = self._client.add_connection(ip=self.host, port=port, init=c104.Init.NONE)
        self.connection.add_station(common_address=common_address)
        self.connection.on_unexpected_message(callable=self._on_unexpected)
        self.connection.on_receive_raw(callable=self._on_raw)

    # -- c104 threads: copy plain values, wake waiters ------------------------------------------

    def _on_new_point(self, client: c104.Client, station: c104.Station, io_address: int, point_type: c104.Type) -> None:
        point = station.add_point(io_address=io_address, type=point_type)
        if point is not None:
            point.on_receive(callable=self._on_receive)

    def _on_new_station(self, client: c104.Client, connection: c104.Connection, common_address: int) -> None:
        with self._changed:
            self.foreign_cas.add(common_address)

    def _on_receive(self, point: c104.Point, previous_info: c104.Information, message: c104.IncomingMessage) -> c104.ResponseState:
        info = point.info
        self._record(Arrival(point.io_address, message.type.name, message.cot.name, _plain(info.value),
                             _flags(info.quality), info.recorded_at, time.time()))
        return c104.ResponseState.NONE

    def _on_unexpected(self, connection: c104.Connection, message: c104.IncomingMessage, cause: c104.Umc) -> None:
        with self._changed:
            key = (cause.name, message.type.name, message.cot.name)
            self.unexpected.setdefault(key, set()).add(message.io_address)
        if cause == c104.Umc.MISMATCHED_TYPE_ID:
            self._record(Arrival(message.io_address, message.type.name, message.cot.name, None, frozenset(),
                                 None, time.time(), accepted=False))

    def _on_raw(self, connection: c104.Connection, data: bytes) -> None:
        frame = c104.explain_bytes_dict(apdu=data)
        kind = frame.get("type")
        if isinstance(kind, c104.Type) and kind.name in ("C_IC_NA_1", "C_CI_NA_1", "C_CS_NA_1"):
            with self._changed:
                self._commands.append((kind.name, frame["cot"].name, bool(frame.get("negative")), time.time()))
                self._changed.notify_all()

    def _record(self, arrival: Arrival) -> None:
        with self._changed:
            self._arrivals.append(arrival)
            self._changed.notify_all()

    # -- the calling thread -------------------------------------------------------------------

    def arrivals(self) -> list[Arrival]:
        """Everything received so far, oldest first."""
        with self._changed:
            return list(self._arrivals)

    def wait_for(self, condition: Callable[[], bool], timeout_s: float) -> bool:
        """Block until ``condition()`` holds (checked at each arrival) or the time is up."""
        with self._changed:
            return self._changed.wait_for(condition, timeout_s)

    def connect(self) -> Optional[float]:
        """Open the link and STARTDT; seconds it took, or None when it did not open in time."""
        started = time.monotonic()
        self._client.start()
        deadline = started + self._timeout_s
        while self.connection.state != c104.ConnectionState.OPEN:
            if time.monotonic() > deadline:
                return None
            time.sleep(0.01)
        return time.monotonic() - started

    def command(self, name: str, send: Callable[[], bool], terminated: bool = True) -> Optional[str]:
        """Send a command; None when confirmed positively (and terminated), else what went wrong."""
        started = time.time()
        answered = send()
        seen = lambda cot: [c for c in self._commands if c[0] == name and c[1] == cot and c[3] >= started]
        if terminated:
            self.wait_for(lambda: bool(seen("ACTIVATION_TERMINATION")), self._timeout_s if answered else 0.0)
        with self._changed:
            confirmations, terminations = seen("ACTIVATION_CON"), seen("ACTIVATION_TERMINATION")
        if any(c[2] for c in confirmations):
            return f"negative confirmation of {name}"
        if not confirmations:
            return f"no confirmation of {name} within {self._timeout_s:g} s"
        if terminated and not terminations:
            return f"{name} confirmed but not terminated (ACT_TERM) within {self._timeout_s:g} s"
        return None

    def interrogate(self) -> Optional[str]:
        """Station general interrogation; None once confirmed and terminated."""
        return self.command("C_IC_NA_1", lambda: self.connection.interrogation(
            common_address=self.common_address, cause=c104.Cot.ACTIVATION, qualifier=c104.Qoi.STATION))

    def counter_interrogate(self) -> Optional[str]:
        """General counter interrogation (read); None once confirmed and terminated."""
        return self.command("C_CI_NA_1", lambda: self.connection.counter_interrogation(
            common_address=self.common_address, cause=c104.Cot.ACTIVATION, qualifier=c104.Rqt.GENERAL,
            freeze=c104.Frz.READ))

    def clock_sync(self) -> Optional[str]:
        """C_CS_NA_1 with this machine's clock; None on a positive confirmation."""
        return self.command("C_CS_NA_1", lambda: self.connection.clock_sync(common_address=self.common_address),
                            terminated=False)

    def close(self) -> None:
        """Close the link and stop c104's threads."""
        self._client.stop()


def tag_check(zone: str, tolerance_s: float) -> Optional[TagCheck]:
    """Time-tag checks through ``WireClock`` of the wire time zone, or None if it is not available."""
    try:
        from gateway.northbound.wiretime import WireClock  # pylint: disable=import-outside-toplevel
    except ImportError:
        return None
    clock = WireClock(zone)

    def to_posix(tag: datetime.datetime) -> float:
        converted = clock.from_c104(tag)
        return converted.timestamp() if isinstance(converted, datetime.datetime) else float(converted)
    return TagCheck(to_posix, tolerance_s)


class DispatchTest:
    """One run against one master group of a site."""

    def __init__(self, site: Site, group: MasterGroup, options: Options) -> None:
        self.site, self.group, self.options = site, group, options
        self.rows = expectations(group)
        self.control = SimulatorControl(options.simulator, options.timeout_s) if options.simulator else None
        self.history = ValueHistory()
        self.tags = tag_check(group.wire_time_zone, options.time_tolerance_s)
        host, port = options.target
        self.result = DispatchResult(group.name, f"{host}:{port}", group.common_address, time.time())
        self._lag = {d.name: d.poll_s + VALUE_SLACK_S for d in site.devices}

    def run(self) -> DispatchResult:
        """Every check, in the order a commissioning engineer would make them."""
        self._sample_values()
        session = MasterSession(*self.options.target, self.group.common_address, self.options.timeout_s)
        try:
            if self._connect(session):
                self._preroll()
                window = self._interrogate(session)
                self._sample_values()
                self._check_rows(session, window)
                self._probe_latency(session)
                self._clock_sync(session)
        finally:
            session.close()
        return self.result

    def _link(self, name: str, problem: Optional[str], seconds: float = 0.0, unchecked: bool = False) -> None:
        verdict = Verdict.UNCHECKED if unchecked else (Verdict.FAIL if problem else Verdict.PASS)
        self.result.checks.append(Check("link", name, verdict, problem or "", seconds=seconds))

    def _sample_values(self) -> None:
        if self.control is None:
            return
        try:
            self.history.add(time.time(), self.control.values())
        except ControlError as exc:
            if not any(c.name == "simulator control API" for c in self.result.checks):
                self._link("simulator control API", f"simulator control API unreachable: {exc}")
            self.control = None

    def _connect(self, session: MasterSession) -> bool:
        opened = session.connect()
        target = self.result.target
        if opened is None:
            self._link("connect", f"no connection to {target} within {self.options.timeout_s:g} s "
                                  f"(last state {session.connection.state.name})")
            for row in self.rows:
                self.result.checks.append(Check(row.suite, row.point, Verdict.UNCHECKED,
                                                f"{row.point} at IOA {row.ioa}: not checked, no connection",
                                                row.ioa, row.type))
            return False
        self._link("connect", None, opened)
        return True

    def _preroll(self) -> None:
        """Read the simulator long enough that values a poll period old are known at GI time."""
        if self.control is None:
            return
        lags = [self._lag.get(row.suite, 1.0) for row in self.rows if row.mapping is not None]
        until = self.result.started + min(max(lags, default=0.0), MAX_PREROLL_S)
        while time.time() < until and self.control is not None:
            time.sleep(SAMPLE_EVERY_S)
            self._sample_values()

    def _interrogate(self, session: MasterSession) -> tuple[float, float]:
        started = time.time()
        self._link("general interrogation", session.interrogate(), time.time() - started)
        if any(row.type.startswith("M_IT") for row in self.rows):
            begun = time.time()
            self._link("counter interrogation", session.counter_interrogate(), time.time() - begun)
        return started, time.time()

    def _check_rows(self, session: MasterSession, window: tuple[float, float]) -> None:
        arrivals = session.arrivals()
        by_ioa: dict[int, list[Arrival]] = {}
        for arrival in arrivals:
            by_ioa.setdefault(arrival.ioa, []).append(arrival)
        for row in self.rows:
            served = self._served(row, window)
            self.result.checks.append(check_row(row, by_ioa.get(row.ioa, []), served, self.tags))
        self.result.checks.append(unexpected_ioas(self.rows, arrivals))
        foreign = sorted(session.foreign_cas)
        self._link("common address", f"ASDUs with common address {', '.join(map(str, foreign))}, "
                                     f"expected {self.group.common_address}" if foreign else None)
        self._notes(session)

    def _served(self, row: Expectation, window: tuple[float, float]) -> Optional[list[Any]]:
        if self.control is None or row.mapping is None:
            return None
        start, end = window
        return self.history.during(row.point, start - self._lag.get(row.suite, 1.0), end + VALUE_SLACK_S)

    def _notes(self, session: MasterSession) -> None:
        for (cause, type_name, cot), ioas in sorted(session.unexpected.items()):
            listed = ", ".join(str(i) for i in sorted(ioas)[:10]) + (" ..." if len(ioas) > 10 else "")
            if cause == "INVALID_COT" and cot == "INTERROGATED_BY_STATION":
                self.result.notes.append(f"{type_name} (time-tagged) answered the GI at IOA {listed}: strict "
                                         "masters expect untagged types in interrogation answers")
            elif cause != "MISMATCHED_TYPE_ID":
                self.result.notes.append(f"c104 flagged {type_name} with cause {cot} at IOA {listed}: {cause}")
        if self.tags is None:
            self.result.notes.append("time tags not checked (gateway.northbound.wiretime is not available)")

    def _probe_latency(self, session: MasterSession) -> None:
        if self.control is None:
            self._link("spontaneous latency", "not checked (no --simulator)", unchecked=True)
            return
        specs = {f"{d.name}.{p.id}": p for d in self.site.devices for p in d.profile.points}
        polls = {d.name: d.poll_s for d in self.site.devices}
        plans, skipped = plan_probes(self.group, specs, polls, self.history.latest(), self.options.latency_points)
        self.result.notes += skipped
        if not plans:
            self._link("spontaneous latency", "not checked (no numeric point to move)", unchecked=True)
            return
        posted = self._post(plans)
        session.wait_for(lambda: all(answer_to(p, s, t, session.arrivals()) for p, s, t in posted if s is not None),
                         self.options.timeout_s)
        arrivals = session.arrivals()
        self.result.probes = [self._probe(plan, served, at, arrivals) for plan, served, at in posted]
        self._restore(plans)
        self._latency_verdict()

    def _post(self, plans: list[ProbePlan]) -> list[tuple[ProbePlan, Optional[float], float]]:
        posted = []
        for plan in plans:
            at = time.time()
            try:
                served = self.control.set(plan.mapping.point, plan.target)
            except ControlError:
                served = None
            posted.append((plan, served if isinstance(served, (int, float)) else None, at))
        return posted

    def _probe(self, plan: ProbePlan, served: Optional[float], at: float, arrivals: list[Arrival]) -> Probe:
        mapping = plan.mapping
        base = dict(point=mapping.point, ioa=mapping.ioa, type=mapping.type, sim=plan.sim, before=plan.before,
                    target=plan.target if served is None else served)
        if served is None:
            return Probe(**base, latency_s=None, verdict=Verdict.FAIL, message="the simulator refused the value")
        answer = answer_to(plan, served, at, arrivals)
        if answer is None:
            return Probe(**base, latency_s=None, verdict=Verdict.FAIL,
                         message=f"no spontaneous {mapping.type} with the new value within {self.options.timeout_s:g} s")
        latency = answer.at - at
        problem = self.tags.outside(answer, at, answer.at) if self.tags and answer.recorded_at else None
        if latency > self.options.max_latency_s:
            problem = f"{latency:.2f} s, above --max-latency {self.options.max_latency_s:g} s"
        return Probe(**base, latency_s=latency, verdict=Verdict.FAIL if problem else Verdict.PASS, message=problem or "")

    def _restore(self, plans: list[ProbePlan]) -> None:
        """Put the moved points back (best effort: the test should leave the site as it found it)."""
        for plan in plans:
            try:
                self.control.set(plan.mapping.point, plan.before)
            except ControlError:
                self.result.notes.append(f"could not restore {plan.mapping.point} to {plan.before:g}")

    def _latency_verdict(self) -> None:
        probes, stats = self.result.probes, latency_summary(self.result.probes)
        failed = [p for p in probes if p.verdict is Verdict.FAIL]
        text = (f"{len(probes)} point(s): min {stats['min']:.3f} s, p50 {stats['p50']:.3f} s, "
                f"p95 {stats['p95']:.3f} s, max {stats['max']:.3f} s" if stats else f"{len(probes)} point(s)")
        if failed:
            text += "; " + "; ".join(f"{p.point} (IOA {p.ioa}): {p.message}" for p in failed)
        self.result.checks.append(Check("link", "spontaneous latency", Verdict.FAIL if failed else Verdict.PASS,
                                        text, seconds=stats["max"] if stats else 0.0))

    def _clock_sync(self, session: MasterSession) -> None:
        started = time.time()
        self._link("clock synchronisation", session.clock_sync(), time.time() - started)


def find_group(site: Site, name: str) -> MasterGroup:
    """The master group called ``name``; KeyError naming the groups there are."""
    for group in site.spec.master_groups:
        if group.name == name:
            return group
    known = ", ".join(g.name for g in site.spec.master_groups) or "none"
    raise KeyError(f"no master group {name!r} in {site.file} (groups: {known})")


def run_dispatch_test(site: Site, options: Options) -> DispatchResult:
    """Run every check against the group's outstation at ``options.target``."""
    return DispatchTest(site, find_group(site, options.group), options).run()


def main(site: Site, args: argparse.Namespace) -> int:
    """The ``gridgate dispatch-test`` command: run, write the reports, print a summary; 0 only when all passed."""
    from gateway.simcontrol import parse_hostport  # pylint: disable=import-outside-toplevel
    options = Options(args.group, parse_hostport(args.target), args.simulator, args.timeout,
                      args.latency_points, args.max_latency, args.time_tolerance)
    try:
        result = run_dispatch_test(site, options)
    except KeyError as exc:
        print(exc.args[0])
        return 2
    if args.junit:
        write_junit(result, Path(args.junit))
    if args.html:
        write_html(result, Path(args.html))
    print(summary_text(result, [p for p in (args.junit, args.html) if p]))
    return 0 if result.passed else 1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``gridgate dispatch-test`` (kept here so the CLI module stays small)."""
    parser.add_argument("site")
    parser.add_argument("--group", required=True, help="master group (dispatch centre) to test")
    parser.add_argument("--target", required=True, metavar="HOST:PORT", help="the outstation of that group")
    parser.add_argument("--simulator", metavar="URL", default=None,
                        help="simulator control API (gridgate simulate --control), e.g. http://127.0.0.1:8910")
    parser.add_argument("--junit", metavar="FILE", default=None, help="write a JUnit XML report")
    parser.add_argument("--html", metavar="FILE", default=None, help="write a self-contained HTML report")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for connection, answers, events")
    parser.add_argument("--latency-points", type=int, default=20, help="points moved to time spontaneous changes")
    parser.add_argument("--max-latency", type=float, default=3.0, help="seconds a spontaneous change may take")
    parser.add_argument("--time-tolerance", type=float, default=2.0, help="seconds a time tag may be off")
