"""Certificate tooling (``gateway.certs``, ``gridgate certs``) and the TLS checks of ``gridgate check``."""

import datetime
import logging
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from gateway.certs import (CertError, days_left, describe, ekus, expiry_text, issue, key_matches, load_cert, load_key,
                           make_ca, sans, utcnow, write_pair)
from gateway.northbound.iec104.section import MasterGroup, TlsSpec
from gateway.northbound.iec104.tls import log_expiry, summary, tls_problems

DAY = datetime.timedelta(days=1)


def _gridgate(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gateway", *args], cwd=cwd, capture_output=True, text=True, timeout=60)


def test_issued_certificates_chain_to_the_ca_with_the_right_usage() -> None:
    """A server certificate has serverAuth and the SANs, a client one clientAuth; both are signed by the CA."""
    ca = make_ca("site CA")
    server = issue(ca, "gateway", "server", ips=["127.0.0.1"], dns=["gw.example"])
    client = issue(ca, "master1", "client")
    for pair in (server, client):
        pair.cert.verify_directly_issued_by(ca.cert)
        assert key_matches(pair.cert, pair.key) and not key_matches(pair.cert, ca.key)
        assert isinstance(pair.key, ec.EllipticCurvePrivateKey)
    assert ekus(server.cert) == ["serverAuth"] and sans(server.cert) == ["DNS:gw.example", "IP:127.0.0.1"]
    assert ekus(client.cert) == ["clientAuth"] and sans(client.cert) == []
    assert ca.cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert not server.cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_rsa_on_request_and_never_valid_longer_than_the_ca() -> None:
    """``use_rsa`` gives RSA-2048; a certificate asked to outlive its CA ends when the CA ends."""
    ca = make_ca(days=10, use_rsa=True)
    pair = issue(ca, "m", "client", days=365, use_rsa=True)
    assert isinstance(pair.key, rsa.RSAPrivateKey) and pair.key.key_size == 2048
    assert pair.cert.not_valid_after_utc == ca.cert.not_valid_after_utc


def test_a_server_certificate_needs_a_name_to_be_checked_against() -> None:
    """No --ip and no --dns for a server certificate is refused, saying why; a bad IP too."""
    ca = make_ca()
    with pytest.raises(CertError, match="needs --ip or --dns"):
        issue(ca, "gateway", "server")
    with pytest.raises(CertError, match="1.2.3"):
        issue(ca, "gateway", "server", ips=["1.2.3"])


def test_expired_certificates_can_be_made_and_say_so() -> None:
    """``not_before`` in the past makes an expired certificate; days left are negative and the text says EXPIRED."""
    ca = make_ca()
    old = issue(ca, "retired", "client", days=1, not_before=utcnow() - 10 * DAY)
    assert days_left(old.cert) == -9
    assert expiry_text(old.cert).startswith("EXPIRED on ") and "(9 days ago)" in expiry_text(old.cert)
    fresh = issue(ca, "m", "client", days=30)
    assert days_left(fresh.cert) == 30 and expiry_text(fresh.cert).endswith("(30 days)")


def test_keys_are_private_and_never_overwritten_silently(tmp_path: Path) -> None:
    """Keys are written 0600 (certificates 0644); existing files are refused unless force."""
    ca = make_ca()
    write_pair(ca, tmp_path / "ca.crt", tmp_path / "ca.key")
    assert stat.S_IMODE((tmp_path / "ca.key").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "ca.crt").stat().st_mode) == 0o644
    before = (tmp_path / "ca.key").read_bytes()
    with pytest.raises(CertError, match="exists; not overwritten"):
        write_pair(make_ca(), tmp_path / "ca.crt", tmp_path / "ca.key")
    assert (tmp_path / "ca.key").read_bytes() == before
    write_pair(make_ca(), tmp_path / "ca.crt", tmp_path / "ca.key", force=True)
    assert (tmp_path / "ca.key").read_bytes() != before
    assert stat.S_IMODE((tmp_path / "ca.key").stat().st_mode) == 0o600
    assert key_matches(load_cert(tmp_path / "ca.crt"), load_key(tmp_path / "ca.key"))


def test_describe_lists_what_an_operator_checks() -> None:
    """subject, issuer, serial, SHA-256 fingerprint, validity with days left, SANs and EKU."""
    ca = make_ca("site CA")
    pair = issue(ca, "gateway", "server", ips=["10.0.0.5"])
    rows = dict(describe(pair.cert))
    assert rows["subject"] == "CN=gateway" and rows["issuer"] == "CN=site CA"
    assert len(rows["sha256"].split(":")) == 32 and rows["SANs"] == "IP:10.0.0.5" and rows["EKU"] == "serverAuth"
    assert rows["not after"].endswith(f"expires {pair.cert.not_valid_after_utc.date().isoformat()} (730 days)")


def test_certs_command_line(tmp_path: Path) -> None:
    """``gridgate certs init/issue/show``: files made, a second issue refused (exit 1), show prints the fields."""
    pki = tmp_path / "pki"
    assert _gridgate("certs", "init", str(pki), "--cn", "Site CA", cwd=tmp_path).returncode == 0
    made = _gridgate("certs", "issue", str(pki), "--name", "gw", "--role", "server", "--ip", "127.0.0.1", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    assert "server CN=gw, IP:127.0.0.1, expires" in made.stdout
    again = _gridgate("certs", "issue", str(pki), "--name", "gw", "--role", "server", "--ip", "127.0.0.1", cwd=tmp_path)
    assert again.returncode == 1 and "exists; not overwritten (use --force" in again.stderr
    client = _gridgate("certs", "issue", str(pki), "--name", "master1", "--role", "client", "--rsa", cwd=tmp_path)
    assert client.returncode == 0, client.stderr
    assert sorted(p.name for p in pki.iterdir()) == ["ca.crt", "ca.key", "gw.crt", "gw.key", "master1.crt", "master1.key"]
    shown = _gridgate("certs", "show", str(pki / "gw.crt"), str(pki / "master1.crt"), cwd=tmp_path)
    assert shown.returncode == 0
    for words in ("subject     CN=gw", "issuer      CN=Site CA", "SANs        IP:127.0.0.1", "EKU         clientAuth",
                  "sha256      "):
        assert words in shown.stdout, shown.stdout
    missing = _gridgate("certs", "show", str(pki / "nope.crt"), cwd=tmp_path)
    assert missing.returncode == 1 and "cannot read" in missing.stderr


# -- TLS of a master group: load-time checks, summary, expiry log ------------------------------------

def _pki(folder: Path, server_days: int = 400, server_from: datetime.datetime | None = None) -> None:
    folder.mkdir(exist_ok=True)
    ca = make_ca("site CA")
    write_pair(ca, folder / "ca.crt", folder / "ca.key", force=True)
    write_pair(issue(ca, "gateway", "server", ips=["127.0.0.1"], days=server_days, not_before=server_from),
               folder / "server.crt", folder / "server.key", force=True)
    write_pair(issue(ca, "master1", "client"), folder / "master1.crt", folder / "master1.key", force=True)


def _site(folder: Path, **tls: Any) -> Path:
    spec = {"site": "tls", "devices": [{"name": "meter1", "profile": "meter/gridgate-meter-3p",
                                        "connection": {"host": "127.0.0.1", "port": 15022}}],
            "master_groups": [{"name": "dispatch", "bind": "127.0.0.1", "port": 19998, "allowed_masters": ["10.0.0.1"],
                               "common_address": 1,
                               "tls": {"cert": "pki/server.crt", "key": "pki/server.key", "ca": "pki/ca.crt", **tls}}]}
    path = folder / "site.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def _line_of(path: Path, text: str) -> int:
    return next(n for n, line in enumerate(path.read_text().splitlines(), 1) if text in line)


def test_check_prints_the_tls_line_of_each_group(tmp_path: Path) -> None:
    """A valid TLS group: check passes and prints the server certificate's CN, expiry date and days left."""
    _pki(tmp_path / "pki", server_days=400)
    site = _site(tmp_path, pinned_masters=["pki/master1.crt"], min_version=1.3)
    result = _gridgate("check", str(site), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    expires = load_cert(tmp_path / "pki" / "server.crt").not_valid_after_utc.date().isoformat()
    assert f"    TLS: server cert CN=gateway, expires {expires} (400 days); CA CN=site CA, expires" in result.stdout
    assert "accepts 1 pinned master certificate(s), TLS >= 1.3" in result.stdout


def test_check_fails_on_an_expired_certificate_and_missing_files(tmp_path: Path) -> None:
    """An expired server certificate, a missing CA and a missing pinned file: each a file:line problem, exit 1."""
    _pki(tmp_path / "pki", server_days=5, server_from=utcnow() - 30 * DAY)
    site = _site(tmp_path, ca="pki/nope.crt", pinned_masters=["pki/gone.crt"])
    result = _gridgate("check", str(site), cwd=tmp_path)
    assert result.returncode == 1
    problems = result.stderr.splitlines()
    assert any(p.startswith(f"{site}:{_line_of(site, 'cert: pki/server.crt')}: master_groups[0].tls.cert: "
                            "server certificate CN=gateway EXPIRED on") for p in problems), result.stderr
    assert any(p.startswith(f"{site}:{_line_of(site, 'ca: pki/nope.crt')}: master_groups[0].tls.ca: cannot read")
               and "nope.crt" in p for p in problems), result.stderr
    assert any(p.startswith(f"{site}:{_line_of(site, 'pki/gone.crt')}: master_groups[0].tls.pinned_masters[0]: ")
               for p in problems), result.stderr


def test_check_fails_when_the_key_is_not_the_certificates(tmp_path: Path) -> None:
    """A key of another certificate is found before any master connects."""
    _pki(tmp_path / "pki")
    result = _gridgate("check", str(_site(tmp_path, key="pki/master1.key")), cwd=tmp_path)
    assert result.returncode == 1
    assert "master_groups[0].tls.key: " in result.stderr and "is not the private key of" in result.stderr


def test_a_ca_file_may_hold_two_cas_during_a_change(tmp_path: Path) -> None:
    """A CA bundle: both CAs are summarised; an expired one in it is a problem (remove it), a valid pair is not."""
    _pki(tmp_path)
    spec = _spec(tmp_path)
    old_ca = make_ca("old CA", days=1, not_before=utcnow() - 5 * DAY)
    bundle = tmp_path / "ca.crt"
    write_pair(make_ca("next CA"), tmp_path / "next.crt", tmp_path / "next.key")
    bundle.write_bytes(bundle.read_bytes() + (tmp_path / "next.crt").read_bytes())
    group = MasterGroup(name="g", bind="127.0.0.1", allowed_masters=["10.0.0.1"], common_address=1, tls=spec)
    assert tls_problems([group]) == []
    assert "CA CN=site CA, expires" in summary(spec) and "CA CN=next CA, expires" in summary(spec)
    write_pair(old_ca, tmp_path / "old.crt", tmp_path / "old.key")
    bundle.write_bytes(bundle.read_bytes() + (tmp_path / "old.crt").read_bytes())
    [(loc, message)] = tls_problems([group])
    assert loc == ("master_groups", 0, "tls", "ca") and "CA certificate CN=old CA EXPIRED" in message
    assert "remove it from the file" in message


def test_tls_paths_are_relative_to_the_site_file(tmp_path: Path) -> None:
    """Relative paths resolve against the site file's folder, wherever the command runs."""
    _pki(tmp_path / "pki")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = _gridgate("check", str(_site(tmp_path)), cwd=elsewhere)
    assert result.returncode == 0, result.stderr


def _spec(folder: Path) -> TlsSpec:
    return TlsSpec(cert=str(folder / "server.crt"), key=str(folder / "server.key"), ca=str(folder / "ca.crt"),
                   warn_days=30)


def test_expiry_within_warn_days_is_a_warning_and_expired_an_error(tmp_path: Path,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    """At start: WARNING when a certificate expires within warn_days, ERROR once expired; nothing when far off."""
    def records() -> list[logging.LogRecord]:  # only log_expiry's: a stray asyncio warning of another test is not ours
        return [r for r in caplog.records if r.name == "gateway.northbound.iec104.tls"]

    _pki(tmp_path, server_days=400)
    caplog.set_level(logging.WARNING)
    log_expiry("dispatch", _spec(tmp_path))
    assert not records()
    _pki(tmp_path, server_days=10)
    log_expiry("dispatch", _spec(tmp_path))
    [warning] = records()
    assert warning.levelno == logging.WARNING and "server certificate CN=gateway" in warning.getMessage()
    assert "(10 days)" in warning.getMessage()
    caplog.clear()
    log_expiry("dispatch", _spec(tmp_path), now=utcnow() + 11 * DAY)
    assert [r.levelno for r in records()] == [logging.ERROR]
    assert "EXPIRED" in records()[0].getMessage()
    assert "WARNING: within warn_days" in summary(_spec(tmp_path))
    assert tls_problems([], now=utcnow()) == []


def test_min_version_accepts_yaml_numbers() -> None:
    """``min_version: 1.3`` unquoted (a YAML float) means "1.3"; other versions are refused."""
    assert TlsSpec(cert="a", key="b", ca="c", min_version=1.3).min_version == "1.3"
    with pytest.raises(ValueError):
        TlsSpec(cert="a", key="b", ca="c", min_version="1.1")


def test_refusals_are_logged_once_a_minute_per_cause_with_the_count_suppressed(caplog) -> None:
    """A master refused every second: one line per minute and cause, the next one counting what was suppressed."""
    import logging
    from gateway.northbound.iec104.tls import RefusalLog
    now = [0.0]
    refusals = RefusalLog(60.0, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING):
        for second in range(125):
            now[0] = float(second)
            refusals.report("dispatch", "master 10.0.0.9", "not in allowed_masters")
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["104 group dispatch: master 10.0.0.9 refused: not in allowed_masters",
                     "104 group dispatch: master 10.0.0.9 refused: not in allowed_masters (59 more since the last report)",
                     "104 group dispatch: master 10.0.0.9 refused: not in allowed_masters (59 more since the last report)"]


def test_an_opcua_certificate_is_rsa_with_the_application_uri_and_opc_ua_key_usages() -> None:
    """OPC UA servers check the client's ApplicationUri against the URI SAN, and its security
    policies need RSA with data and key encipherment and non-repudiation."""
    ca = make_ca("site CA")
    pair = issue(ca, "gw", "opcua", dns=["gw.site"], uri="urn:gridgate:site1")
    assert isinstance(pair.key, rsa.RSAPrivateKey)
    assert sans(pair.cert) == ["URI:urn:gridgate:site1", "DNS:gw.site"]
    usage = pair.cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert (usage.digital_signature, usage.content_commitment, usage.key_encipherment, usage.data_encipherment) == \
        (True, True, True, True)
    usages = list(pair.cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    assert usages == [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    with pytest.raises(CertError, match="needs --uri"):
        issue(ca, "gw", "opcua")
