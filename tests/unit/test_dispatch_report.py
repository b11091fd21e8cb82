"""JUnit XML, HTML and terminal summary of ``gridgate dispatch-test``, from a hand-made result set."""

import xml.etree.ElementTree as ET
from pathlib import Path

from gateway.commissioning.dispatchcheck import Check, DispatchResult, Probe, Verdict
from gateway.commissioning.report import histogram_svg, html_page, junit_tree, summary_text, write_html, write_junit

P, F, U = Verdict.PASS, Verdict.FAIL, Verdict.UNCHECKED


def result() -> DispatchResult:
    """Two devices, link checks, one wrong type, one wrong value, one unchecked row, latency probes."""
    run = DispatchResult("dispatch", "127.0.0.1:2404", 7, 1_800_000_000.0)
    run.checks = [
        Check("link", "connect", P, seconds=0.01),
        Check("link", "general interrogation", P, seconds=0.02),
        Check("link", "spontaneous latency", P, "2 point(s): ..."),
        Check("link", "clock_alarm_ioa", U, "clock_alarm_ioa at IOA 900 (M_SP_NA_1): not sent (optional alarm point)",
              900, "M_SP_NA_1"),
        Check("pcs1", "pcs1.p_ac", F, "pcs1.p_ac at IOA 16385 (M_ME_NC_1): received type M_ME_NB_1, table says M_ME_NC_1",
              16385, "M_ME_NC_1", "M_ME_NB_1", "1000 ±10", "1000", "good"),
        Check("pcs1", "pcs1.running", P, "", 1, "M_SP_NA_1", "M_SP_NA_1", "ON (1)", "ON (1)", "good"),
        Check("bms1", "bms1.soc", F, "bms1.soc at IOA 16400 (M_ME_NA_1): value 0.75, simulator served 0.55 ±0.005",
              16400, "M_ME_NA_1", "M_ME_NA_1", "0.55 ±0.005", "0.75", "good"),
        Check("bms1", "bms1.soh", U, "bms1.soh at IOA 16401 (M_ME_NC_1): value not checked (no --simulator)",
              16401, "M_ME_NC_1", "M_ME_NC_1", "", "98", "good"),
    ]
    run.probes = [Probe("pcs1.p_ac", 16385, "M_ME_NC_1", "constant", 1000, 1101, 0.12, P),
                  Probe("bms1.soc", 16400, "M_ME_NA_1", "none", 55, 61, 0.31, P)]
    run.notes = ["M_SP_TB_1 (time-tagged) answered the GI at IOA 100: <strict> masters expect untagged types"]
    return run


def test_junit_counts_failures_per_device_suite(tmp_path: Path) -> None:
    """The JUnit file parses; a suite per device plus "link"; failures and skipped are counted per suite and in total."""
    write_junit(result(), tmp_path / "junit.xml")
    root = ET.parse(tmp_path / "junit.xml").getroot()
    assert root.tag == "testsuites"
    assert (root.get("tests"), root.get("failures"), root.get("skipped")) == ("8", "2", "2")
    suites = {s.get("name"): s for s in root.iter("testsuite")}
    assert list(suites) == ["link", "pcs1", "bms1"]
    assert [(s.get("tests"), s.get("failures"), s.get("skipped")) for s in suites.values()] == \
        [("4", "0", "1"), ("2", "1", "0"), ("2", "1", "1")]
    failures = [f for f in root.iter("failure")]
    assert len(failures) == 2
    assert all(f.get("message") and f.text for f in failures)


def test_junit_failure_names_point_ioa_expected_and_received() -> None:
    """A row's failure message names the point and IOA; its text lists expected and received."""
    cases = {c.get("name"): c for c in junit_tree(result()).getroot().iter("testcase")}
    failure = cases["bms1.soc (IOA 16400)"].find("failure")
    assert failure is not None
    assert failure.get("message") == "bms1.soc at IOA 16400 (M_ME_NA_1): value 0.75, simulator served 0.55 ±0.005"
    assert "expected: 0.55 ±0.005" in failure.text and "received: 0.75" in failure.text
    assert cases["bms1.soh (IOA 16401)"].find("skipped").get("message").endswith("value not checked (no --simulator)")
    assert cases["pcs1.p_ac (IOA 16385)"].get("classname") == "dispatch.dispatch.pcs1"


def test_html_names_failing_points_in_their_device_tables(tmp_path: Path) -> None:
    """The HTML page has a table per device whose failing rows name point, IOA, both types and the verdict."""
    write_html(result(), tmp_path / "report.html")
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and "FAILED" in page
    pcs = page.split("<h2>pcs1</h2>")[1].split("<h2>")[0]
    assert '<tr class="fail"><td class="num">16385</td><td>M_ME_NC_1 (received M_ME_NB_1)</td><td>pcs1.p_ac</td>' in pcs
    bms = page.split("<h2>bms1</h2>")[1]
    assert "bms1.soc at IOA 16400 (M_ME_NA_1): value 0.75, simulator served 0.55 ±0.005" in bms
    assert '<tr class="skip">' in bms and "not checked" in bms


def test_html_is_self_contained_with_an_svg_histogram_and_escaped_text() -> None:
    """No scripts or external resources; the latency histogram is inline SVG; notes are escaped."""
    page = html_page(result())
    assert "<script" not in page and "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert page.count("<svg") == 1 and "spontaneous latency histogram" in page
    assert "&lt;strict&gt; masters" in page and "<strict>" not in page
    latency = page.split("<h2>Spontaneous latency</h2>")[1].split("<h2>")[0]
    assert "<td>pcs1.p_ac</td><td>constant</td>" in latency and "0.120" in latency


def test_histogram_svg_is_empty_without_measurements() -> None:
    """No measured latency, no chart."""
    assert histogram_svg([]) == ""
    assert histogram_svg([Probe("d.p", 1, "M_ME_NC_1", "none", 0, 1, None, F, "no answer")]) == ""


def test_summary_lists_outcome_counts_latency_and_every_failure() -> None:
    """The terminal summary says FAILED, counts, latency figures and one FAIL line per failed check."""
    text = summary_text(result(), ["junit.xml"])
    lines = text.splitlines()
    assert lines[0] == "dispatch-test group dispatch -> 127.0.0.1:2404 (common address 7): FAILED"
    assert lines[1] == "  4 passed, 2 failed, 2 not checked"
    assert "latency (2 points): min 0.120 s, p50 0.120 s, p95 0.310 s, max 0.310 s" in text
    assert [l for l in lines if l.startswith("  FAIL")] == [
        "  FAIL pcs1.p_ac at IOA 16385 (M_ME_NC_1): received type M_ME_NB_1, table says M_ME_NC_1",
        "  FAIL bms1.soc at IOA 16400 (M_ME_NA_1): value 0.75, simulator served 0.55 ±0.005"]
    assert lines[-1] == "  report: junit.xml"


def test_all_passed_run_says_passed() -> None:
    """A run without failures is PASSED in every report, even with checks not made."""
    run = result()
    run.checks = [c for c in run.checks if c.verdict is not F]
    assert run.passed
    assert "PASSED" in summary_text(run).splitlines()[0]
    assert junit_tree(run).getroot().get("failures") == "0"
    assert "<title>dispatch test dispatch: PASSED</title>" in html_page(run)
