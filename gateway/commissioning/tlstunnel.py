"""A local TLS tunnel, so a plain c104 master can reach an outstation that speaks 104 over TLS.

c104 2.2.1's TLS client cannot complete a handshake (mbedTLS 3.6.3+ refuses to verify without a
host name, and 2.2.1 has no way to set one: research/stack-notes.md section 3.5). The tunnel
listens on 127.0.0.1 (a free port) and forwards each accepted connection over mutual TLS
(Python ``ssl``: client certificate, server certificate checked against the CA and its name,
TLS >= 1.2) to the outstation. ``gridgate dispatch-test`` is synchronous, so the tunnel runs its
own asyncio loop in one background thread; nothing polls.
"""

import asyncio
import ssl
import threading
from dataclasses import dataclass
from typing import Optional

CONNECT_TIMEOUT_S = 10.0
CHUNK = 65536


@dataclass(frozen=True)
class TlsClientFiles:
    """The master's side of mutual TLS: its certificate and key, the CA the outstation's must chain to."""

    cert: str
    key: str
    ca: str
    server_name: Optional[str] = None  # the name checked against the outstation's SANs (default: the target host)


def client_context(files: TlsClientFiles) -> ssl.SSLContext:
    """TLS >= 1.2 client context presenting ``files.cert``, trusting only ``files.ca``, checking the name."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verify_mode CERT_REQUIRED, check_hostname on
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_verify_locations(cafile=files.ca)
    context.load_cert_chain(files.cert, files.key)
    return context


class TlsTunnel:
    """127.0.0.1:<free port> -> TLS -> ``target``, one TLS connection per accepted connection."""

    def __init__(self, target: tuple[str, int], context: ssl.SSLContext, server_name: Optional[str] = None,
                 connect_timeout_s: float = CONNECT_TIMEOUT_S) -> None:
        self.target = target
        self._context = context
        self._server_name = server_name or target[0]
        self._timeout_s = connect_timeout_s
        self._lock = threading.Lock()
        self._errors: list[str] = []
        self.sessions: list[str] = []  # "TLSv1.3 TLS_AES_256_GCM_SHA384" per opened TLS connection
        self._ready = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._server: Optional[asyncio.AbstractServer] = None
        self._tasks: set[asyncio.Task] = set()
        self._startup_error: Optional[BaseException] = None
        self.local: tuple[str, int] = ("127.0.0.1", 0)

    def start(self) -> tuple[str, int]:
        """Listen and forward in a background thread; the local address a plain master connects to."""
        self._thread = threading.Thread(target=self._run, name=f"tls-tunnel-{self.target[0]}:{self.target[1]}",
                                        daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._startup_error is not None:
            raise self._startup_error
        return self.local

    def stop(self) -> None:
        """Close the listener and every tunnelled connection; returns when the thread has ended."""
        if self._loop is not None and self._thread is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()

    def __enter__(self) -> "TlsTunnel":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def errors(self) -> list[str]:
        """What went wrong on the TLS side so far (connect, handshake, alerts), oldest first."""
        with self._lock:
            return list(self._errors)

    @property
    def last_error(self) -> Optional[str]:
        """The latest TLS-side failure, or None."""
        with self._lock:
            return self._errors[-1] if self._errors else None

    # -- the tunnel's thread ------------------------------------------------------------------

    def _run(self) -> None:
        loop = self._loop = asyncio.new_event_loop()
        try:
            self._server = loop.run_until_complete(asyncio.start_server(self._accepted, "127.0.0.1", 0))
            self.local = self._server.sockets[0].getsockname()[:2]
        except OSError as exc:
            self._startup_error = exc
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(self._close())
            loop.close()

    async def _close(self) -> None:
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    def _failed(self, text: str) -> None:
        with self._lock:
            self._errors.append(text)

    async def _accepted(self, local_reader: asyncio.StreamReader, local_writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._tasks.add(task)
        try:
            await self._forward(local_reader, local_writer)
        finally:
            self._tasks.discard(task)

    async def _forward(self, local_reader: asyncio.StreamReader, local_writer: asyncio.StreamWriter) -> None:
        host, port = self.target
        try:
            remote_reader, remote_writer = await asyncio.wait_for(asyncio.open_connection(
                host, port, ssl=self._context, server_hostname=self._server_name,
                ssl_handshake_timeout=self._timeout_s), self._timeout_s)
        except (OSError, asyncio.TimeoutError) as exc:  # ssl.SSLError is an OSError
            self._failed(f"TLS connection to {host}:{port} failed: {_reason(exc)}")
            local_writer.close()
            return
        tls = remote_writer.get_extra_info("ssl_object")
        with self._lock:
            self.sessions.append(f"{tls.version()} {tls.cipher()[0]}" if tls else "?")
        pumps = [asyncio.ensure_future(self._pump(local_reader, remote_writer, "to")),
                 asyncio.ensure_future(self._pump(remote_reader, local_writer, "from"))]
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pump in pumps:
                pump.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
            for writer in (local_writer, remote_writer):
                writer.close()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, direction: str) -> None:
        moved = 0
        hint = " before any 104 data (did the outstation refuse this master's certificate?)"
        try:
            while chunk := await reader.read(CHUNK):
                moved += len(chunk)
                writer.write(chunk)
                await writer.drain()
        except OSError as exc:
            if direction == "from":
                # TLS 1.3: the client's handshake is done before the server checks the client certificate,
                # so a refused certificate shows up as an alert on the first read, or as a plain close
                self._failed(f"TLS session with {self.target[0]}:{self.target[1]} ended: {_reason(exc)}"
                             f"{hint if not moved else ''}")
            return
        if direction == "from" and not moved:
            self._failed(f"TLS session with {self.target[0]}:{self.target[1]} closed by the outstation{hint}")


def _reason(exc: BaseException) -> str:
    if isinstance(exc, asyncio.TimeoutError):
        return "timed out"
    if isinstance(exc, ssl.SSLError):
        return exc.reason or str(exc)
    return str(exc) or type(exc).__name__
