"""Reports of a ``gridgate dispatch-test`` run: JUnit XML for CI, one HTML page for people, a summary.

JUnit: a testsuite per device plus "link" (connect, interrogations, common address, IOAs outside
the table, latency, clock sync, group alarms); a testcase per table row whose failure message
names point, IOA, expected and received. A check that could not be made is ``<skipped>``. A
"commands" suite has a testcase per command IOA: point, value sent, ACT_CON and ACT_TERM
latency, the value the device served.

HTML: one self-contained file (inline CSS and SVG, no scripts, nothing fetched) that can be
mailed to the dispatch centre or attached to the commissioning record.
"""

import datetime
import html
import socket
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path
from typing import Iterable, Optional, Sequence

from gateway.commissioning.dispatchcheck import Check, CommandTrip, DispatchResult, Probe, Verdict
from gateway.commissioning.dispatchprobe import histogram, latency_summary
from gateway.commissioning.tripcheck import command_latency_summary, latency_text

_VERDICT_CLASS = {Verdict.PASS: "pass", Verdict.FAIL: "fail", Verdict.UNCHECKED: "skip"}


def _stamp(posix: float) -> str:
    return datetime.datetime.fromtimestamp(posix, datetime.timezone.utc).isoformat(timespec="seconds")


def _case_name(check: Check) -> str:
    return check.name if check.ioa is None else f"{check.name} (IOA {check.ioa})"


def _detail(check: Check) -> str:
    lines = [f"point: {check.name}", f"IOA: {check.ioa}", f"type (table): {check.type}",
             f"type (received): {check.received_type or '-'}", f"expected: {check.expected or '-'}",
             f"received: {check.received or '-'}", f"quality: {check.quality or '-'}"]
    return "\n".join(lines) if check.ioa is not None else check.message


def _ms(seconds: Optional[float]) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f}"


def _command_detail(trip: CommandTrip) -> str:
    lines = [trip.message, f"point: {trip.point}", f"IOA: {trip.ioa}", f"type: {trip.type} ({trip.mode})",
             f"value before: {trip.before or '-'}", f"value sent: {trip.sent or '-'}",
             f"ACT_CON: {_ms(trip.act_con_s)} ms", f"ACT_TERM: {_ms(trip.act_term_s)} ms",
             f"device value: {trip.device or '-'}", f"restored: {trip.restored or '-'}"]
    return "\n".join(lines)


def junit_tree(result: DispatchResult) -> ET.ElementTree:
    """The JUnit XML document of a run."""
    root = ET.Element("testsuites", name=f"gridgate dispatch-test {result.group}")
    for suite_name, checks in result.suites().items():
        suite = ET.SubElement(root, "testsuite", name=suite_name, tests=str(len(checks)),
                              failures=str(sum(c.verdict is Verdict.FAIL for c in checks)), errors="0",
                              skipped=str(sum(c.verdict is Verdict.UNCHECKED for c in checks)),
                              timestamp=_stamp(result.started), hostname=socket.gethostname(),
                              time=f"{sum(c.seconds for c in checks):.3f}")
        properties = ET.SubElement(suite, "properties")
        for key, value in (("group", result.group), ("target", result.target),
                           ("common_address", str(result.common_address))):
            ET.SubElement(properties, "property", name=key, value=value)
        trips = {t.ioa: t for t in result.commands} if suite_name == "commands" else {}
        for check in checks:
            _testcase(suite, result.group, suite_name, check, trips.get(check.ioa))
        if suite_name == "link" and result.notes:
            ET.SubElement(suite, "system-out").text = "\n".join(result.notes)
    _totals(root)
    ET.indent(root)
    return ET.ElementTree(root)


def _testcase(suite: ET.Element, group: str, suite_name: str, check: Check, trip: Optional[CommandTrip] = None) -> None:
    case = ET.SubElement(suite, "testcase", classname=f"dispatch.{group}.{suite_name}", name=_case_name(check),
                         time=f"{check.seconds:.3f}")
    if check.verdict is Verdict.FAIL:
        ET.SubElement(case, "failure", message=check.message,
                      type="command" if trip else "mismatch").text = _command_detail(trip) if trip else _detail(check)
    elif check.verdict is Verdict.UNCHECKED:
        ET.SubElement(case, "skipped", message=check.message)
    elif trip is not None:
        ET.SubElement(case, "system-out").text = _command_detail(trip)
    elif check.message:
        ET.SubElement(case, "system-out").text = check.message


def _totals(root: ET.Element) -> None:
    for key in ("tests", "failures", "errors", "skipped"):
        root.set(key, str(sum(int(s.get(key, "0")) for s in root)))


def write_junit(result: DispatchResult, path: Path) -> None:
    """Write the JUnit XML report."""
    junit_tree(result).write(path, encoding="utf-8", xml_declaration=True)


# -- HTML --------------------------------------------------------------------------------------

_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left;vertical-align:top}
th{background:#f3f3f3} td.num{text-align:right;font-variant-numeric:tabular-nums}
.pass{background:#e8f6e8} .fail{background:#fde2e2} .skip{background:#fff6d6}
.verdict{font-weight:bold} h1{font-size:1.4em} h2{font-size:1.15em;margin-top:1.5em}
.summary span{display:inline-block;margin-right:1.5em}
"""


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _row(cells: Iterable[object], css: str = "", numeric: Sequence[int] = ()) -> str:
    tds = "".join(f'<td class="num">{_e(c)}</td>' if i in numeric else f"<td>{_e(c)}</td>"
                  for i, c in enumerate(cells))
    return f'<tr class="{css}">{tds}</tr>'


def _table(headers: Sequence[str], rows: Iterable[str]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


def _point_rows(checks: Sequence[Check]) -> list[str]:
    rows = []
    for c in sorted(checks, key=lambda c: c.ioa or 0):
        other = sorted(set(c.received_type.split(", ")) - set(c.type.split(", "))) if c.received_type else []
        type_text = c.type + (f" (received {', '.join(other)})" if other else "")
        rows.append(_row([c.ioa, type_text, c.name, c.expected or "-", c.received or "-", c.quality or "-",
                          c.verdict.value, c.message], _VERDICT_CLASS[c.verdict], numeric=(0,)))
    return rows


def histogram_svg(probes: Sequence[Probe], bins: int = 10) -> str:
    """The latency histogram as an inline SVG bar chart (empty string without measurements)."""
    measured = [p.latency_s for p in probes if p.latency_s is not None]
    counts = histogram(measured, bins)
    if not counts:
        return ""
    width, height, left, bottom, top = 520, 220, 40, 30, 15
    bar_w = (width - left - 10) / len(counts)
    most = max(n for _, _, n in counts)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
             f'aria-label="spontaneous latency histogram">',
             f'<line x1="{left}" y1="{height - bottom}" x2="{width - 10}" y2="{height - bottom}" stroke="#444"/>']
    for i, (low, high, n) in enumerate(counts):
        h = (height - bottom - top) * n / most
        x, y = left + i * bar_w, height - bottom - h
        parts.append(f'<rect x="{x + 2:.1f}" y="{y:.1f}" width="{bar_w - 4:.1f}" height="{h:.1f}" fill="#4a7fb5">'
                     f'<title>{low:.2f}-{high:.2f} s: {n}</title></rect>')
        if n:
            parts.append(f'<text x="{x + bar_w / 2:.1f}" y="{y - 3:.1f}" font-size="11" text-anchor="middle">{n}</text>')
        parts.append(f'<text x="{x:.1f}" y="{height - bottom + 14}" font-size="10">{low:.2f}</text>')
    parts.append(f'<text x="{width - 10}" y="{height - 3}" font-size="11" text-anchor="end">seconds</text></svg>')
    return "".join(parts)


def _latency_section(result: DispatchResult) -> str:
    if not result.probes:
        return ""
    stats = latency_summary(result.probes)
    line = (f"min {stats['min']:.3f} s, p50 {stats['p50']:.3f} s, p95 {stats['p95']:.3f} s, max {stats['max']:.3f} s"
            if stats else "nothing measured")
    rows = [_row([p.ioa, p.type, p.point, p.sim, f"{p.before:g}", f"{p.target:g}",
                  "-" if p.latency_s is None else f"{p.latency_s:.3f}", p.verdict.value, p.message],
                 _VERDICT_CLASS[p.verdict], numeric=(0, 4, 5, 6)) for p in result.probes]
    return (f"<h2>Spontaneous latency</h2><p>{len(result.probes)} point(s) moved through the simulator "
            f"(constant points preferred; the column sim says how the simulator moves each): {_e(line)}</p>"
            + histogram_svg(result.probes)
            + _table(["IOA", "type", "point", "sim", "before", "set to", "latency s", "verdict", "detail"], rows))


def _commands_section(result: DispatchResult) -> str:
    if not result.commands:
        return ""
    rows = [_row([t.ioa, t.type, t.mode, t.point, t.sent or "-", _ms(t.act_con_s), _ms(t.act_term_s),
                  t.device or "-", t.verdict.value, t.message], _VERDICT_CLASS[t.verdict], numeric=(0, 5, 6))
            for t in result.commands]
    return (f"<h2>Commands</h2><p>{len(result.commands)} command IOA(s), each sent a safe value (a small step within "
            f"the point's limits and ramp, or its current state) and then the previous value: "
            f"{_e(latency_text(command_latency_summary(result.commands)))}</p>"
            + _table(["IOA", "type", "mode", "point", "value", "ACT_CON ms", "ACT_TERM ms", "device value",
                      "verdict", "detail"], rows))


def html_page(result: DispatchResult) -> str:
    """The self-contained HTML report of a run."""
    suites = result.suites()
    link = suites.pop("link", [])
    suites.pop("commands", None)  # their own table
    outcome = "PASSED" if result.passed else "FAILED"
    command_stats = command_latency_summary(result.commands)
    commands = f"<span>commands: {_e(latency_text(command_stats))}</span>" if command_stats else ""
    summary = (f'<p class="summary"><span class="verdict {"pass" if result.passed else "fail"}">{outcome}</span>'
               f"<span>{result.count(Verdict.PASS)} passed</span><span>{result.count(Verdict.FAIL)} failed</span>"
               f"<span>{result.count(Verdict.UNCHECKED)} not checked</span>{commands}</p>")
    link_rows = [_row([c.name, c.verdict.value, c.message or "-"], _VERDICT_CLASS[c.verdict])
                 for c in link if c.ioa is None]
    body = [f"<h1>IEC 104 dispatch test: group {_e(result.group)}</h1>",
            f"<p>Outstation {_e(result.target)}, common address {result.common_address}, "
            f"started {_e(_stamp(result.started))}</p>", summary,
            "<h2>Link</h2>", _table(["check", "verdict", "detail"], link_rows)]
    alarms = [c for c in link if c.ioa is not None]
    if alarms:
        body += ["<h2>Group alarms</h2>", _points_table(alarms)]
    if result.notes:
        body += ["<h2>Notes</h2><ul>", *(f"<li>{_e(n)}</li>" for n in result.notes), "</ul>"]
    body.append(_latency_section(result))
    body.append(_commands_section(result))
    for device, checks in suites.items():
        body += [f"<h2>{_e(device)}</h2>", _points_table(checks)]
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>dispatch test {_e(result.group)}: '
            f"{outcome}</title><style>{_CSS}</style></head><body>{''.join(body)}</body></html>\n")


def _points_table(checks: Sequence[Check]) -> str:
    return _table(["IOA", "type", "point", "expected", "received", "quality", "verdict", "detail"],
                  _point_rows(checks))


def write_html(result: DispatchResult, path: Path) -> None:
    """Write the HTML report."""
    path.write_text(html_page(result), encoding="utf-8")


def summary_text(result: DispatchResult, written: Sequence[str] = ()) -> str:
    """A few lines for the terminal: outcome, counts, link checks, latency, every failure."""
    lines = [f"dispatch-test group {result.group} -> {result.target} (common address {result.common_address}): "
             f"{'PASSED' if result.passed else 'FAILED'}",
             f"  {result.count(Verdict.PASS)} passed, {result.count(Verdict.FAIL)} failed, "
             f"{result.count(Verdict.UNCHECKED)} not checked"]
    stats = latency_summary(result.probes)
    if stats:
        lines.append(f"  latency ({len(result.probes)} points): min {stats['min']:.3f} s, p50 {stats['p50']:.3f} s, "
                     f"p95 {stats['p95']:.3f} s, max {stats['max']:.3f} s")
    if command_stats := command_latency_summary(result.commands):
        lines.append(f"  commands ({len(result.commands)} IOAs): {latency_text(command_stats)}")
    reasons = Counter(c.message.split(": ", 1)[-1] if c.ioa is not None else f"{c.name}: {c.message}"
                      for c in result.checks if c.verdict is Verdict.UNCHECKED)
    lines += [f"  not checked ({count}): {reason}" for reason, count in reasons.most_common(5)]
    lines += [f"  FAIL {c.message if c.ioa is not None else f'{c.name}: {c.message}'}"
              for c in result.checks if c.verdict is Verdict.FAIL]
    lines += [f"  report: {path}" for path in written]
    return "\n".join(lines)
