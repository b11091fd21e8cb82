"""IEC 62351-3 TLS of a master group: checks at load time, expiry warnings, the server's TLS context.

Python's ``ssl`` (OpenSSL) does the TLS under hat-drivers' listener: mutual authentication with
the masters' certificates checked against the group's CA (chain and validity time), optionally
only pinned master certificates, TLS 1.2 or 1.3. What cannot be told before a master connects
(a missing file, a key that is not the certificate's, an expired certificate) is found here
when the site is loaded, so ``gridgate check`` fails on it and ``gridgate run`` never starts
with it. No CRL is checked yet.
"""

import asyncio.sslproto
import datetime
import logging
import ssl
import sys
import time
from pathlib import Path
from typing import Any, Callable

from cryptography.hazmat.primitives import serialization

from gateway.certs import (CertError, common_name, days_left, expiry_text, key_matches, load_cert, load_certs,
                           load_key, utcnow)
from gateway.config.source import Problem
from gateway.northbound.iec104.section import MasterGroup, TlsSpec
from gateway.ratelog import RateLimitedLog

log = logging.getLogger(__name__)


def with_absolute_paths(groups: list[MasterGroup], folder: Path) -> list[MasterGroup]:
    """The groups with every TLS path resolved against ``folder`` (the site file's folder)."""
    def absolute(name: str) -> str:
        return str((folder / name).resolve())

    return [g if g.tls is None else g.model_copy(update={"tls": g.tls.model_copy(update={
        "cert": absolute(g.tls.cert), "key": absolute(g.tls.key), "ca": absolute(g.tls.ca),
        "pinned_masters": [absolute(p) for p in g.tls.pinned_masters]})}) for g in groups]


def tls_problems(groups: list[MasterGroup], now: datetime.datetime | None = None) -> list[Problem]:
    """Unreadable files, a key that does not fit, an expired or not yet valid certificate or CA."""
    now = now or utcnow()
    problems: list[Problem] = []
    for g, group in enumerate(groups):
        if group.tls is None:
            continue
        loc, tls = ("master_groups", g, "tls"), group.tls
        served = _check_certs(tls.cert, "server certificate", loc + ("cert",), now, problems)
        _check_certs(tls.ca, "CA certificate", loc + ("ca",), now, problems, every=True)
        for i, pinned in enumerate(tls.pinned_masters):
            _check_certs(pinned, "pinned master certificate", loc + ("pinned_masters", i), None, problems)
        try:
            key = load_key(tls.key)
        except CertError as exc:
            problems.append((loc + ("key",), str(exc)))
            continue
        if served and not key_matches(served[0], key):
            problems.append((loc + ("key",), f"{tls.key} is not the private key of {tls.cert}"))
    return problems


def _check_certs(path: str, what: str, loc: tuple, now: datetime.datetime | None, problems: list[Problem],
                 every: bool = False) -> list[Any]:
    """The certificate at ``path`` (``every``: all in the file), after adding why any is unusable;
    ``now`` None skips the validity dates. Empty when the file cannot be read."""
    try:
        certs = load_certs(path) if every else [load_cert(path)]
    except CertError as exc:
        problems.append((loc, str(exc)))
        return []
    for cert in certs if now is not None else ():
        if cert.not_valid_after_utc <= now:
            problems.append((loc, f"{what} {common_name(cert.subject)} {expiry_text(cert, now)}: "
                                  + ("remove it from the file" if len(certs) > 1 else "masters will refuse it")))
        elif cert.not_valid_before_utc > now:
            problems.append((loc, f"{what} {common_name(cert.subject)} is not valid before "
                                  f"{cert.not_valid_before_utc.isoformat()} (check the clock)"))
    return certs


def summary(tls: TlsSpec, now: datetime.datetime | None = None) -> str:
    """One line for ``gridgate check``: certificate, CA, who may connect, TLS versions."""
    parts = []
    for what, path in (("server cert", tls.cert), ("CA", tls.ca)):
        try:
            certs = load_certs(path) if what == "CA" else [load_cert(path)]
        except CertError as exc:
            parts.append(f"{what}: {exc}")
            continue
        for cert in certs:
            soon = " WARNING: within warn_days" if 0 <= days_left(cert, now) < tls.warn_days else ""
            parts.append(f"{what} {common_name(cert.subject)}, {expiry_text(cert, now)}{soon}")
    masters = f"{len(tls.pinned_masters)} pinned master certificate(s)" if tls.pinned_masters else "any master certificate of the CA"
    return f"TLS: {'; '.join(parts)}; accepts {masters}, TLS >= {tls.min_version}"


def log_expiry(group: str, tls: TlsSpec, now: datetime.datetime | None = None) -> None:
    """WARNING for each certificate expiring within ``warn_days``, ERROR for each already expired."""
    now = now or utcnow()
    named = [("server certificate", tls.cert), ("CA certificate", tls.ca)]
    named += [("pinned master certificate", p) for p in tls.pinned_masters]
    for what, path in named:
        try:
            certs = load_certs(path)
        except CertError as exc:
            log.error("104 group %s: TLS %s: %s", group, what, exc)
            continue
        for cert in certs if what == "CA certificate" else certs[:1]:
            if cert.not_valid_after_utc <= now:
                log.error("104 group %s: TLS %s %s (%s) %s", group, what, common_name(cert.subject), path,
                          expiry_text(cert, now))
            elif days_left(cert, now) < tls.warn_days:
                log.warning("104 group %s: TLS %s %s (%s) %s: renew it (certs/README.md, Rotation)", group, what,
                            common_name(cert.subject), path, expiry_text(cert, now))


def server_context(group: str, tls: TlsSpec) -> ssl.SSLContext:
    """The group's server TLS context, after logging what it accepts and any certificate expiring soon.

    Mutual authentication: a master without a certificate issued by ``tls.ca`` (chain and
    validity time checked by OpenSSL) fails the handshake; pinning is checked once the
    connection is up (``pinned_certificates``)."""
    log_expiry(group, tls)
    log.info("104 group %s: TLS >= %s, masters need a certificate %s", group, tls.min_version,
             f"pinned in tls.pinned_masters ({len(tls.pinned_masters)})" if tls.pinned_masters else f"issued by {tls.ca}")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.sslobject_class = _logging_tls_object(group)
    context.minimum_version = ssl.TLSVersion.TLSv1_3 if tls.min_version == "1.3" else ssl.TLSVersion.TLSv1_2
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_cert_chain(tls.cert, tls.key)
    context.load_verify_locations(cafile=tls.ca)
    return context


PLAIN_TCP = "plain TCP (no TLS handshake): the master does not use TLS"


def refusal_cause(exc: ssl.SSLError) -> str:
    """What a commissioning engineer needs to hear about a failed handshake, from OpenSSL's reason."""
    detail = f"{getattr(exc, 'verify_message', '') or ''} {exc.reason or ''} {exc}".lower()
    for needle, cause in (("expired", "the master's certificate has expired"),
                          ("not yet valid", "the master's certificate is not valid yet"),
                          ("unable to get local issuer", "the master's certificate is not issued by this group's CA"),
                          ("self-signed", "the master's certificate is self-signed and not this group's CA"),
                          ("peer did not return a certificate", "the master sent no certificate"),
                          ("wrong version number", PLAIN_TCP),
                          ("http request", PLAIN_TCP),
                          ("unknown protocol", PLAIN_TCP),
                          ("unsupported protocol", "the master offers a TLS version below tls.min_version")):
        if needle in detail:
            return cause
    return f"TLS error: {exc.reason or exc}"


def _logging_tls_object(group: str) -> type[ssl.SSLObject]:
    """An ``SSLObject`` class that logs a refused handshake with the master's address and the cause
    (rate-limited per host): asyncio drops handshake errors silently (they are ``OSError``s, logged
    only in debug mode)."""
    class LoggingSSLObject(ssl.SSLObject):
        def do_handshake(self) -> None:
            try:
                super().do_handshake()
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                raise
            except ssl.SSLError as exc:
                peer = _handshake_peer()
                who = f"master {peer[0]}:{peer[1]}" if peer else "a master (address unknown)"
                REFUSALS.report(group, f"TLS handshake of {who}", refusal_cause(exc), host=peer[0] if peer else "")
                raise
    return LoggingSSLObject


def _handshake_peer() -> tuple[str, int] | None:
    """(host, port) of the master whose TLS handshake is running. An ``SSLObject`` does not know its
    socket; asyncio's ``SSLProtocol``, whose ``_do_handshake`` calls ``do_handshake``, holds the socket
    transport. Found through the calling frames (CPython 3.11 asyncio internals; test_outstation_tls
    pins that the refusal line names the address); None where they are not as expected."""
    frame = sys._getframe(2)
    for _ in range(4):
        if frame is None:
            return None
        owner = frame.f_locals.get("self")
        if isinstance(owner, asyncio.sslproto.SSLProtocol):
            transport = getattr(owner, "_transport", None)
            peer = transport.get_extra_info("peername") if transport is not None else None
            return (str(peer[0]), int(peer[1])) if isinstance(peer, tuple) and len(peer) >= 2 else None
        frame = frame.f_back
    return None


class RefusalLog:
    """Refusals logged once per group, host and cause per minute, with the count suppressed meanwhile:
    a master retrying every second must not flood the log (``RateLimitedLog`` keyed by the refused host,
    so that the new source port of each retry does not make it a new kind)."""

    def __init__(self, every_s: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._log = RateLimitedLog(log, every_s, clock)

    def forget(self) -> None:
        """Start afresh: the next refusal of every kind is logged."""
        self._log.forget()

    def report(self, group: str, what: str, cause: str, host: str | None = None) -> None:
        """Log ``what`` refused for ``cause`` unless the same refusal (of ``host``, when given, else of
        ``what``) was logged less than ``every_s`` ago."""
        self._log.warning((group, what if host is None else host, cause), "104 group %s: %s refused: %s", group,
                          what, cause)


REFUSALS = RefusalLog()


def pinned_certificates(tls: TlsSpec) -> set[bytes]:
    """The DER of every pinned master certificate (empty: any certificate the CA issued)."""
    return {load_cert(path).public_bytes(serialization.Encoding.DER) for path in tls.pinned_masters}
