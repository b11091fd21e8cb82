"""The 104 outstation over TLS (IEC 62351-3): who is served, who is refused, and dispatch-test through the tunnel.

The masters here are Python ``ssl`` clients speaking raw 104 frames (c104 2.2.1's TLS client is
broken, research/stack-notes.md section 3.5); they block, so they run in worker threads while the
reactor serves the gateway. Every certificate and key is made in the test's temp dir.
"""

import argparse
import datetime
import socket
import ssl
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional

import pytest
import pytest_twisted
import yaml
from twisted.internet.threads import deferToThread

from gateway.certs import issue, make_ca, utcnow, write_pair
from gateway.commissioning import dispatchtest
from tests.integration.sites import Running, until
from tests.ports import next_port

pytestmark = pytest.mark.integration

CA = 7
STARTDT_ACT = bytes.fromhex("680407000000")
STARTDT_CON = bytes.fromhex("68040b000000")
GI_ACT = bytes.fromhex("680e00000000" "64010600") + CA.to_bytes(2, "little") + bytes.fromhex("00000014")
M_ME_NC_1, C_IC_NA_1 = 13, 100
COT_ACT_CON, COT_ACT_TERM, COT_GI = 7, 10, 20


@pytest.fixture
def pki(tmp_path: Path) -> Path:
    """A CA with a server and two client certificates, an expired client, and a rogue CA's client."""
    folder = tmp_path / "pki"
    folder.mkdir()
    ca = make_ca("site CA")
    write_pair(ca, folder / "ca.crt", folder / "ca.key")
    write_pair(issue(ca, "gateway", "server", ips=["127.0.0.1"], dns=["localhost"]), folder / "server.crt", folder / "server.key")
    for name in ("master1", "master2"):
        write_pair(issue(ca, name, "client"), folder / f"{name}.crt", folder / f"{name}.key")
    old = issue(ca, "retired", "client", days=1, not_before=utcnow() - datetime.timedelta(days=10))
    write_pair(old, folder / "expired.crt", folder / "expired.key")
    rogue = make_ca("rogue CA")
    write_pair(rogue, folder / "rogue-ca.crt", folder / "rogue-ca.key")
    write_pair(issue(rogue, "master1", "client"), folder / "rogue.crt", folder / "rogue.key")
    return folder


def tls_site(folder: Path, port: int, pinned: Optional[list[str]] = None) -> Path:
    """One simulated device, three measured points, a master group with TLS (paths relative to the site file)."""
    (folder / "dev.yaml").write_text(yaml.safe_dump({"model": "TLS", "kind": "other", "protocol": "modbus", "points": [
        {"id": f"r{i}", "address": i, "type": "uint16", "sim": {"kind": "constant", "value": 10 + i}} for i in range(3)]}))
    device_port = next_port()
    tls: dict[str, Any] = {"cert": "pki/server.crt", "key": "pki/server.key", "ca": "pki/ca.crt"}
    if pinned:
        tls["pinned_masters"] = [f"pki/{name}.crt" for name in pinned]
    site = {"site": "tls", "spool": {"path": str(folder / "spool.db")},
            "devices": [{"name": "d0", "profile": "dev", "poll_s": 0.2, "timeout_s": 0.2,
                         "connection": {"host": "127.0.0.1", "port": device_port}}],
            "master_groups": [{"name": "dispatch", "bind": "127.0.0.1", "port": port, "allowed_masters": ["127.0.0.1"],
                               "common_address": CA, "comm_status": {"d0": 100}, "tls": tls,
                               "points": [{"point": f"d0.r{i}", "ioa": 11 + i, "type": "M_ME_NC_1"} for i in range(3)]}]}
    path = folder / "site.yaml"
    path.write_text(yaml.safe_dump(site, sort_keys=False))
    return path


@pytest.fixture
def tls_outstation(tmp_path: Path, pki: Path) -> Iterator[Any]:
    """Factory: start the TLS site (optionally pinning masters); fires with (Running, port); stopped afterwards."""
    started: list[Running] = []

    def start(pinned: Optional[list[str]] = None) -> Any:
        port = next_port()
        run = Running(tls_site(tmp_path, port, pinned))
        started.append(run)
        return run.start().addCallback(lambda _: until(run.all_good)).addCallback(lambda _: (run, port))

    yield start
    for run in started:
        pytest_twisted.blockon(run.stop())


@dataclass
class Session:
    """What a raw 104 master saw: the bytes, the I-frames as (type, cot, ioas), and any error."""

    data: bytes = b""
    frames: list[tuple[int, int, list[int]]] = field(default_factory=list)
    error: Optional[str] = None
    tls_version: Optional[str] = None
    port: int = 0  # the master's source port

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def started(self) -> bool:
        return STARTDT_CON in self.data


def _i_frames(data: bytes) -> list[tuple[int, int, list[int]]]:
    """(type id, cause, IOAs) of each I-format APDU (3-octet IOAs; SQ=0 or SQ=1)."""
    frames, at = [], 0
    while at + 2 <= len(data) and data[at] == 0x68:
        length = data[at + 1]
        apdu = data[at + 2:at + 2 + length]
        at += 2 + length
        if len(apdu) < 10 or apdu[0] & 1:
            continue  # S/U format, or cut short
        type_id, count, sequence, cot = apdu[4], apdu[5] & 0x7F, apdu[5] & 0x80, apdu[6] & 0x3F
        size = {M_ME_NC_1: 5, C_IC_NA_1: 1}.get(type_id, 0)
        first = int.from_bytes(apdu[10:13], "little")
        if sequence:  # SQ=1: one IOA, then consecutive elements
            ioas = list(range(first, first + count))
        else:
            ioas = [int.from_bytes(apdu[10 + k * (3 + size):13 + k * (3 + size)], "little") for k in range(count)] if size else [first]
        frames.append((type_id, cot, ioas))
    return frames


def raw_master(port: int, pki: Path, cert: Optional[str] = None, tls: bool = True, interrogate: bool = False,
               timeout_s: float = 3.0) -> Session:
    """Connect (TLS with ``cert``, or plain TCP), STARTDT; with ``interrogate`` also a station GI until ACT_TERM."""
    session = Session()
    raw = socket.create_connection(("127.0.0.1", port), timeout=timeout_s)
    session.port = raw.getsockname()[1]
    try:
        sock: Any = raw
        if tls:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            context.load_verify_locations(pki / "ca.crt")
            if cert:
                context.load_cert_chain(pki / f"{cert}.crt", pki / f"{cert}.key")
            sock = context.wrap_socket(raw, server_hostname="127.0.0.1")
            session.tls_version = sock.version()
        sock.sendall(STARTDT_ACT)
        deadline = time.monotonic() + timeout_s
        done = lambda: (session.started and not interrogate) or any(
            t == C_IC_NA_1 and c == COT_ACT_TERM for t, c, _ in _i_frames(session.data))
        asked = False
        while not done() and time.monotonic() < deadline:
            if interrogate and session.started and not asked:
                sock.sendall(GI_ACT)
                asked = True
            chunk = sock.recv(4096)
            if not chunk:
                break
            session.data += chunk
    except (OSError, ssl.SSLError) as exc:
        session.error = f"{type(exc).__name__}: {exc}"
    finally:
        raw.close()
    session.frames = _i_frames(session.data)
    return session


@pytest_twisted.inlineCallbacks
def test_master_with_a_certificate_of_the_ca_is_served(tls_outstation, pki: Path) -> Iterator[Any]:
    """A master presenting a certificate of the group's CA gets STARTDT con and the GI answer (values over TLS)."""
    run, port = yield tls_outstation()
    session = yield deferToThread(raw_master, port, pki, "master1", interrogate=True)
    assert session.error is None and session.started, session
    assert session.tls_version in ("TLSv1.2", "TLSv1.3")
    assert (C_IC_NA_1, COT_ACT_CON, [0]) in session.frames
    answered = {ioa for t, c, ioas in session.frames if t == M_ME_NC_1 and c == COT_GI for ioa in ioas}
    assert answered == {11, 12, 13}, session.frames
    assert (C_IC_NA_1, COT_ACT_TERM, [0]) in session.frames


@pytest.mark.parametrize("cert, tls, why, logged", [
    (None, True, "no client certificate", "sent no certificate"),
    ("rogue", True, "certificate of another CA", "not issued by this group's CA"),
    ("expired", True, "expired certificate of the right CA", "has expired"),
    (None, False, "plain TCP (no TLS) on the TLS port", "plain TCP (no TLS handshake)"),
])
@pytest_twisted.inlineCallbacks
def test_masters_without_a_valid_certificate_are_refused(tls_outstation, pki: Path, cert: Optional[str], tls: bool,
                                                         why: str, logged: str, caplog) -> Iterator[Any]:
    """No certificate, another CA's, an expired one, or no TLS at all: the link never starts (no STARTDT con), and
    the log says the handshake of which master (host:port) was refused and why."""
    from gateway.northbound.iec104.tls import REFUSALS
    REFUSALS.forget()  # earlier tests' refusals within the minute must not mute this one
    run, port = yield tls_outstation()
    session = yield deferToThread(raw_master, port, pki, cert, tls)
    assert not session.started, (why, session)
    assert not session.frames, why
    line = f"104 group dispatch: TLS handshake of master {session.address} refused: "
    assert [r for r in caplog.records if r.getMessage().startswith(line) and logged in r.getMessage()], caplog.text
    served = yield deferToThread(raw_master, port, pki, "master1")
    assert served.started, "the outstation still serves a valid master afterwards"


@pytest_twisted.inlineCallbacks
def test_a_master_refused_again_and_again_is_logged_once_per_minute(tls_outstation, pki: Path,
                                                                    caplog) -> Iterator[Any]:
    """Five refused handshakes from one host (a new source port each): one refusal line, naming the first
    master's address; the others are counted for the next line, not logged."""
    from gateway.northbound.iec104.tls import REFUSALS
    REFUSALS.forget()
    run, port = yield tls_outstation()
    sessions = []
    for _ in range(5):
        sessions.append((yield deferToThread(raw_master, port, pki, "rogue")))
    assert not any(s.started for s in sessions)
    lines = [r.getMessage() for r in caplog.records if "TLS handshake of master" in r.getMessage()]
    assert lines == [f"104 group dispatch: TLS handshake of master {sessions[0].address} refused: "
                     "the master's certificate is not issued by this group's CA"], lines


@pytest_twisted.inlineCallbacks
def test_pinning_refuses_a_valid_but_unpinned_certificate(tls_outstation, pki: Path, caplog) -> Iterator[Any]:
    """With pinned_masters, a certificate of the right CA that is not pinned is refused (the log names the master's
    address); the pinned one is served."""
    from gateway.northbound.iec104.tls import REFUSALS
    REFUSALS.forget()
    run, port = yield tls_outstation(pinned=["master2"])
    unpinned = yield deferToThread(raw_master, port, pki, "master1")
    assert not unpinned.started, unpinned
    yield until(lambda: run.gateway.northbound["iec104"][0].outstations[0].stats()["refused_masters"] == 1)
    assert f"104 group dispatch: master {unpinned.address} refused: its certificate is not in tls.pinned_masters" \
        in caplog.text, caplog.text
    pinned = yield deferToThread(raw_master, port, pki, "master2")
    assert pinned.started, pinned


def _dispatch_args(site_file: Path, port: int, tmp_path: Path, pki: Path, cert: Optional[str]) -> argparse.Namespace:
    tls = dict(tls_cert=str(pki / f"{cert}.crt"), tls_key=str(pki / f"{cert}.key"), tls_ca=str(pki / "ca.crt")
               ) if cert else {}
    return argparse.Namespace(site=str(site_file), group="dispatch", target=f"127.0.0.1:{port}", simulator=None,
                              junit=str(tmp_path / "junit.xml"), html=None, timeout=5.0, latency_points=5,
                              max_latency=3.0, time_tolerance=2.0, tls_server_name=None, **tls)


def _cases(path: Path) -> dict[str, ET.Element]:
    return {case.get("name"): case for case in ET.parse(path).getroot().iter("testcase")}


@pytest_twisted.inlineCallbacks
def test_dispatch_test_reaches_a_tls_outstation_through_the_tunnel(tls_outstation, pki: Path, tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture) -> Iterator[Any]:
    """dispatch-test with --tls-cert/--tls-key/--tls-ca connects, interrogates and passes every check over TLS."""
    run, port = yield tls_outstation()
    code = yield deferToThread(dispatchtest.main, run.site, _dispatch_args(run.site.file, port, tmp_path, pki, "master1"))
    out = capsys.readouterr().out
    assert code == 0, out
    cases = _cases(tmp_path / "junit.xml")
    for name in ("connect", "general interrogation", "clock synchronisation", "common address"):
        assert cases[name].find("failure") is None and cases[name].find("skipped") is None, (name, out)
    assert cases["d0.r0 (IOA 11)"].find("failure") is None
    link = next(s for s in ET.parse(tmp_path / "junit.xml").getroot().iter("testsuite") if s.get("name") == "link")
    assert "through a local TLS tunnel" in link.find("system-out").text


@pytest_twisted.inlineCallbacks
def test_dispatch_test_names_the_tls_failure(tls_outstation, pki: Path, tmp_path: Path) -> Iterator[Any]:
    """A master certificate the outstation refuses: the connect check fails naming the TLS error, not just a timeout."""
    run, port = yield tls_outstation()
    args = _dispatch_args(run.site.file, port, tmp_path, pki, "rogue")
    args.timeout = 2.0
    code = yield deferToThread(dispatchtest.main, run.site, args)
    assert code == 1
    message = _cases(tmp_path / "junit.xml")["connect"].find("failure").get("message")
    assert f"no connection to 127.0.0.1:{port}" in message and "TLS" in message, message


@pytest_twisted.inlineCallbacks
def test_dispatch_test_without_tls_options_says_the_group_needs_them(tls_outstation, pki: Path,
                                                                    tmp_path: Path) -> Iterator[Any]:
    """Plain dispatch-test against a TLS group fails to connect and says to give --tls-cert, --tls-key, --tls-ca."""
    run, port = yield tls_outstation()
    args = _dispatch_args(run.site.file, port, tmp_path, pki, None)
    args.timeout = 1.5
    code = yield deferToThread(dispatchtest.main, run.site, args)
    assert code == 1
    message = _cases(tmp_path / "junit.xml")["connect"].find("failure").get("message")
    assert "give --tls-cert, --tls-key and --tls-ca" in message, message
