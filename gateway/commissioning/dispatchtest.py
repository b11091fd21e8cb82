"""``gridgate dispatch-test``: play the dispatch master against a gateway's 104 outstation.

Commissioning (联调) checks the outstation point by point against the table the dispatch centre
holds. This tool does that from the site file, with the rows ``gridgate points export`` writes
(``wiretable``): it connects as a c104 master to one master group, interrogates (station GI, and
counter interrogation when the table has counters), and checks every row (IOA, the type of each
cause, quality, value against the simulator's, comm status, alarms), the
common address, that nothing outside the table is sent, how fast a provoked change arrives
spontaneously, that clock synchronisation is confirmed, and (unless --no-commands) one
command round trip per command IOA with a safe value and back (``commandtrips``). Verdicts are
in ``dispatchcheck``, reports in ``report``.

Synchronous on purpose: it needs no reactor. The master (``recordingmaster``) and urllib block
the calling thread; c104's own threads only record what arrives.
"""

import argparse
import datetime
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Optional
from zoneinfo import ZoneInfo

from gateway.commissioning.commandtrips import CommandTrips
from gateway.commissioning.dispatchcheck import (GI_COT, VALUE_SLACK_S, Arrival, Check, CommandTrip, DispatchResult,
                                                 Expectation, Probe, TagCheck, ValueHistory, Verdict, check_row,
                                                 expectations, unexpected_ioas)
from gateway.commissioning.dispatchprobe import ProbePlan, answer_to, latency_summary, plan_probes
from gateway.commissioning.groups import UnknownGroup, find_group
from gateway.commissioning.recordingmaster import RecordingMaster
from gateway.commissioning.report import summary_text, write_html, write_junit
from gateway.commissioning.tlstunnel import TlsClientFiles, TlsTunnel, client_context
from gateway.commissioning.tripcheck import trip_check, unchecked_trips
from gateway.config.loader import Site
from gateway.iec104.wiretime import WireClock
from gateway.model import Device
from gateway.northbound.iec104.section import MasterGroup
from gateway.northbound.iec104.wiretable import commands, wire_rows
from gateway.simulation.simclient import ControlError, SimulatorControl

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
    tls: Optional[TlsClientFiles] = None  # reach a 104-over-TLS outstation through a local tunnel
    commands: bool = True  # a round trip per command IOA (--no-commands: reported "not checked")


def tag_check(zone: str, tolerance_s: float) -> TagCheck:
    """Time-tag checks through ``WireClock`` of the wire time zone."""
    return TagCheck(WireClock(zone).from_c104, tolerance_s)


class DispatchTest:
    """One run against one master group of a site."""

    def __init__(self, site: Site, group: MasterGroup, options: Options) -> None:
        self.site, self.group, self.options = site, group, options
        self.table = wire_rows(group)
        self.rows = [replace(row, device_deadband=_device_deadband(site, row.point)) if row.mapping else row
                     for row in expectations(self.table)]
        self.control = SimulatorControl(options.simulator, options.timeout_s) if options.simulator else None
        self.history = ValueHistory()
        self.tags = tag_check(group.wire_time_zone, options.time_tolerance_s)
        host, port = options.target
        self.result = DispatchResult(group.name, f"{host}:{port}", group.common_address, time.time())
        self._lag = {d.name: value_age(d) + VALUE_SLACK_S for d in site.devices}
        self._tunnel: Optional[TlsTunnel] = None

    def run(self) -> DispatchResult:
        """Every check, in the order a commissioning engineer would make them."""
        self._sample_values()
        try:
            session = RecordingMaster(*self._endpoint(), self.group.common_address, self.options.timeout_s)
        except OSError as exc:  # the host name does not resolve, the client certificate does not load
            self._no_connection(f"cannot reach {self.result.target}: {exc}")
            self._close_tunnel()
            return self.result
        try:
            if self._connect(session):
                self._preroll()
                window = self._interrogate(session)
                self._sample_values()
                self._check_rows(session, window)
                self._probe_latency(session)
                self._clock_sync(session)
                self._command_trips(session)
        finally:
            session.close()
            self._close_tunnel()
        return self.result

    def _endpoint(self) -> tuple[str, int]:
        """Where the c104 master connects: the target, or a local TLS tunnel to it (c104 2.2.1's TLS client is broken)."""
        if self.options.tls is None:
            return self.options.target
        self._tunnel = TlsTunnel(self.options.target, client_context(self.options.tls), self.options.tls.server_name,
                                 self.options.timeout_s)
        return self._tunnel.start()

    def _close_tunnel(self) -> None:
        if self._tunnel is not None:
            self._tunnel.stop()

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

    def _connect(self, session: RecordingMaster) -> bool:
        opened = session.connect()
        if opened is None:
            why = f"(last state {session.connection.state.name})"
            if self._tunnel is not None and self._tunnel.last_error:
                why += f"; {self._tunnel.last_error}"
            elif self._tunnel is None and self.group.tls is not None:
                why += "; the group uses TLS: give --tls-cert, --tls-key and --tls-ca"
            self._no_connection(f"no connection to {self.result.target} within {self.options.timeout_s:g} s {why}")
            return False
        self._link("connect", None, opened)
        if self._tunnel is not None and self._tunnel.sessions:
            self.result.notes.append(f"connected over {self._tunnel.sessions[-1]} (through a local TLS tunnel)")
        return True

    def _no_connection(self, why: str) -> None:
        self._link("connect", why)
        self._report_trips(unchecked_trips(commands(self.table), "no connection: nothing sent"))
        for row in self.rows:
            self.result.checks.append(Check(row.suite, row.point, Verdict.UNCHECKED,
                                            f"{row.point} at IOA {row.ioa}: no connection",
                                            row.ioa, row.type))

    def _preroll(self) -> None:
        """Read the simulator long enough that values a poll period old are known at GI time."""
        if self.control is None:
            return
        lags = [self._lag.get(row.suite, 1.0) for row in self.rows if row.mapping is not None]
        until = self.result.started + min(max(lags, default=0.0), MAX_PREROLL_S)
        while time.time() < until and self.control is not None:
            time.sleep(SAMPLE_EVERY_S)
            self._sample_values()

    def _interrogate(self, session: RecordingMaster) -> tuple[float, float]:
        started = time.time()
        self._link("general interrogation", session.interrogate(), time.time() - started)
        if any(row.ci_type for row in self.rows):
            begun = time.time()
            self._link("counter interrogation", session.counter_interrogate(), time.time() - begun)
        return started, time.time()

    def _check_rows(self, session: RecordingMaster, window: tuple[float, float]) -> None:
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

    def _notes(self, session: RecordingMaster) -> None:
        """What c104 flagged that the rows do not already judge (types and causes per IOA)."""
        for (cause, type_name, cot), ioas in sorted(session.unexpected.items()):
            reported = cause == "MISMATCHED_TYPE_ID" or (cause == "INVALID_COT" and cot == GI_COT)
            if not reported:
                self.result.notes.append(f"c104 flagged {type_name} with cause {cot} at IOA {_listed(ioas)}: {cause}")
        self.result.notes += [f"frame not decoded (it breaks the IEC 104 layout): {why}" for why in session.undecodable]

    def _probe_latency(self, session: RecordingMaster) -> None:
        if self.control is None:
            self._link("spontaneous latency", "no --simulator to provoke changes", unchecked=True)
            return
        specs = {f"{d.name}.{p.id}": p for d in self.site.devices for p in d.profile.points}
        polls = {d.name: poll_period(d) for d in self.site.devices}
        deadbands = {row.point: row.device_deadband for row in self.rows}
        plans, skipped = plan_probes(self.group, specs, polls, self.history.latest(), self.options.latency_points,
                                     deadbands)
        self.result.notes += skipped
        if not plans:
            self._link("spontaneous latency", "no measured point (M_ME_*) the simulator can move", unchecked=True)
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
        problems = [f"{latency:.2f} s, above --max-latency {self.options.max_latency_s:g} s"
                    ] if latency > self.options.max_latency_s else []
        if off := self.tags.outside(answer, at, answer.at):
            problems.append(off)
        return Probe(**base, latency_s=latency, verdict=Verdict.FAIL if problems else Verdict.PASS,
                     message="; ".join(problems))

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

    def _command_trips(self, session: RecordingMaster) -> None:
        """A safe value to every command IOA and back (``commandtrips``), unless --no-commands."""
        if not self.options.commands:
            self._report_trips(unchecked_trips(commands(self.table), "not checked (--no-commands)"))
            return
        trips = CommandTrips(self.site, self.group, self._simulator_values, self.options.timeout_s)
        self._report_trips(trips.run(session))
        self.result.notes += trips.notes

    def _report_trips(self, trips: list[CommandTrip]) -> None:
        self.result.commands = trips
        self.result.checks += [trip_check(trip) for trip in trips]

    def _simulator_values(self) -> Optional[dict[str, Any]]:
        """What the simulator serves now; None without one, or when it does not answer."""
        if self.control is None:
            return None
        try:
            return self.control.values()
        except ControlError:
            return None

    def _clock_sync(self, session: RecordingMaster) -> None:
        """C_CS_NA_1, unless the wire zone is not UTC now: c104 2.2.1 can only send this machine's
        clock as UTC fields, which such an outstation would read hours off (raising its clock
        alarm, or stepping its OS clock if configured to)."""
        zone = self.group.wire_time_zone
        offset = ZoneInfo(zone).utcoffset(datetime.datetime.now())
        if offset:
            self._link("clock synchronisation", f"not sent: the wire time zone {zone} is UTC{_hours(offset)} now and "
                       "c104 2.2.1 sends this machine's clock as UTC; the outstation would read it "
                       f"{_hours(offset)} h off", unchecked=True)
            return
        started = time.time()
        self._link("clock synchronisation", session.clock_sync(), time.time() - started)


def _listed(ioas: Any, most: int = 12) -> str:
    ordered = sorted(ioas)
    return ", ".join(map(str, ordered[:most])) + (f" and {len(ordered) - most} more" if len(ordered) > most else "")


def _hours(offset: datetime.timedelta) -> str:
    return f"{offset.total_seconds() / 3600:+g}"


def _device_deadband(site: Site, point: str) -> float:
    """The deadband the device itself applies to ``device.point`` before reporting it."""
    name, point_id = point.split(".", 1)
    device = next((d for d in site.devices if d.name == name), None)
    if device is None:
        return 0.0
    try:
        return device.profile.reporting_deadband(device.profile.point(point_id))
    except KeyError:
        return 0.0


def poll_period(device: Device) -> float:
    """A polled device's period; 0 for a driver that pushes changes."""
    return float(getattr(device.connection, "poll_s", 0.0))


def value_age(device: Device) -> float:
    """How old a good value in the gateway may be, as its connection model says (``value_age_s``:
    a poll period and a request, a publishing interval...); 0 when it says nothing."""
    return float(getattr(device.connection, "value_age_s", 0.0))


def run_dispatch_test(site: Site, options: Options) -> DispatchResult:
    """Run every check against the group's outstation at ``options.target``."""
    return DispatchTest(site, find_group(site, options.group)[1], options).run()


def main(site: Site, args: argparse.Namespace) -> int:
    """The ``gridgate dispatch-test`` command: run, write the reports, print a summary.

    Exit code 0 when no check failed, 1 when one did, 2 for a usage error (group, target).
    """
    from gateway.simulation.simcontrol import parse_hostport  # pylint: disable=import-outside-toplevel
    try:
        options = Options(args.group, parse_hostport(args.target), args.simulator, args.timeout,
                          args.latency_points, args.max_latency, args.time_tolerance, tls_files(args),
                          commands=not getattr(args, "no_commands", False))
        _, group = find_group(site, options.group)
    except (ValueError, OSError, UnknownGroup) as exc:  # ssl.SSLError is an OSError
        print(f"gridgate dispatch-test: {exc}", file=sys.stderr)
        return 2
    result = DispatchTest(site, group, options).run()
    if args.junit:
        write_junit(result, Path(args.junit))
    if args.html:
        write_html(result, Path(args.html))
    print(summary_text(result, [p for p in (args.junit, args.html) if p]))
    return 0 if result.passed else 1


def tls_files(args: argparse.Namespace) -> Optional[TlsClientFiles]:
    """The master's TLS files from ``--tls-*`` (all three or none), checked by loading them; None for plain 104."""
    given = [getattr(args, f"tls_{name}", None) for name in ("cert", "key", "ca")]
    if not any(given):
        return None
    if not all(given):
        raise ValueError("--tls-cert, --tls-key and --tls-ca go together")
    files = TlsClientFiles(*given, getattr(args, "tls_server_name", None))
    client_context(files)  # a missing file or a key that does not fit is a usage error, before connecting
    return files
