"""Drain the spool into InfluxDB: oldest first, original timestamps, delete only what was confirmed.

Delivery is at-least-once: a batch whose confirmation was lost (timeout, connection reset after
the server stored it) is sent again. InfluxDB overwrites a point with the same series and
timestamp, so such duplicates collapse there. VictoriaMetrics keeps both copies unless it runs
with ``-dedup.minScrapeInterval`` (``=1ms`` collapses exact duplicates); they do not change a
min/max/last, but they do skew counts and averages over raw samples.

The line format is chosen so that a real InfluxDB never refuses a sample for its type: a
field's type is fixed per measurement (per shard; InfluxDB 1.6 answers "field type conflict"),
and every point shares the measurement and the field names. So numbers of every kind (float, int, bool as 1/0) go into one float field
``value``, text into a string field ``text``, the 104 quality bits into an integer ``quality``.
The spool keeps the exact Python type; only what InfluxDB sees is normalised.
"""

import asyncio
import json
import logging
import urllib.parse
from collections import Counter
from io import BytesIO
from typing import Any, Callable, Protocol

import aiohttp
from influxdb_client import WritePrecision
from influxdb_client.client.exceptions import InfluxDBError
from influxdb_client.client.influxdb_client_async import InfluxDBClientAsync
from influxdb_client.rest import ApiException
from twisted.internet.defer import CancelledError, Deferred, TimeoutError as DeferredTimeout
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Protocol as TwistedProtocol
from twisted.internet.task import deferLater
from twisted.python.failure import Failure
from twisted.web.client import Agent, FileBodyProducer, HTTPConnectionPool
from twisted.web.http_headers import Headers

from gateway.aio import as_deferred
from gateway.config.site import InfluxSpec
from gateway.errors import GatewayError
from gateway.lineprotocol import to_line
from gateway.retry import Backoff
from gateway.spool import SpooledSample
from gateway.spoolthread import ThreadedSpool

log = logging.getLogger(__name__)

SeriesKey = Callable[[str], str]
"""Point id -> the escaped ``measurement,tag=value,...`` start of its lines."""

BACKOFF_FIRST_S = 1.0
BACKOFF_MAX_S = 30.0
REJECTED_STATUS = frozenset({400, 413, 422})  # the batch content is at fault: bisect it

# -- errors -----------------------------------------------------------------------------------


class InfluxUnavailable(GatewayError):
    """No confirmation: connection refused, timeout, 5xx, auth or unknown database. Retry later."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"{url}: {reason}")
        self.reason = reason


class InfluxRejected(GatewayError):
    """The server refused the content of the batch (HTTP 400/413/422): retrying cannot help."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"HTTP {status}: {detail}")
        self.status = status
        self.detail = detail


def _classify(url: str, status: int, detail: str) -> GatewayError:
    """Which of the two failures an HTTP error status is."""
    if status in REJECTED_STATUS:
        return InfluxRejected(status, detail)
    return InfluxUnavailable(url, f"HTTP {status}: {detail}")


# -- transports -------------------------------------------------------------------------------


class _Poster(Protocol):
    def post(self, lines: list[str]) -> "Deferred[None]": ...
    def close(self) -> "Deferred[None]": ...


class _BodyCollector(TwistedProtocol):
    """Collects a (small) response body; readBody warns on the bodiless 204 every write gets."""

    def __init__(self, finished: "Deferred[bytes]") -> None:
        self.finished = finished
        self.chunks: list[bytes] = []

    def dataReceived(self, data: bytes) -> None:
        self.chunks.append(data)

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self.finished.callback(b"".join(self.chunks))


class V1Poster:
    """POST line protocol to ``/write?db=`` (InfluxDB 1.x) with Twisted's Agent."""

    def __init__(self, spec: InfluxSpec, reactor: IReactorTime) -> None:
        query = urllib.parse.urlencode({"db": spec.v1_db, "precision": "ms"})
        self.url = spec.url.rstrip("/")
        self._write_url = f"{self.url}/write?{query}".encode()
        self._pool = HTTPConnectionPool(reactor, persistent=True)
        self._agent = Agent(reactor, connectTimeout=spec.timeout_s, pool=self._pool)

    def post(self, lines: list[str]) -> "Deferred[None]":
        """Fires when the server confirmed; fails with InfluxRejected or InfluxUnavailable."""
        return Deferred.fromCoroutine(self._post(lines))

    async def _post(self, lines: list[str]) -> None:
        body = FileBodyProducer(BytesIO("\n".join(lines).encode()))
        headers = Headers({b"Content-Type": [b"text/plain; charset=utf-8"]})
        try:
            response = await self._agent.request(b"POST", self._write_url, headers, body)
        except (CancelledError, DeferredTimeout):
            raise
        except Exception as error:  # connection refused/reset, DNS, ... all mean: try later
            raise InfluxUnavailable(self.url, _reason(error)) from error
        finished: Deferred[bytes] = Deferred()
        response.deliverBody(_BodyCollector(finished))
        text = (await finished).decode("utf-8", "replace")
        if response.code not in (200, 204):
            raise _classify(self.url, response.code, _v1_error(text))

    def close(self) -> "Deferred[None]":
        return self._pool.closeCachedConnections()


def _v1_error(body: str) -> str:
    """The ``error`` member of an InfluxDB 1.x error body, else the body itself."""
    try:
        return str(json.loads(body)["error"])
    except (ValueError, KeyError, TypeError):
        return body.strip()[:500]


def _reason(error: BaseException) -> str:
    """A one-line cause for the log; Twisted wraps connection errors in lists of Failures."""
    inner = getattr(error, "reasons", None)
    if inner:
        return "; ".join(str(f.value) or type(f.value).__name__ for f in inner)
    return str(error) or type(error).__name__


class V2Poster:
    """Write through influxdb-client's ``InfluxDBClientAsync`` (InfluxDB 2.x/3.x/1.8+, VictoriaMetrics)."""

    def __init__(self, spec: InfluxSpec, token: str | None) -> None:
        self.url = spec.url.rstrip("/")
        self._spec = spec
        self._token = token
        self._client: InfluxDBClientAsync | None = None

    def post(self, lines: list[str]) -> "Deferred[None]":
        return as_deferred(self._post(lines))

    async def _post(self, lines: list[str]) -> None:
        if self._client is None:  # aiohttp wants its session built inside the running loop
            self._client = InfluxDBClientAsync(url=self.url, token=self._token, org=self._spec.org,
                                               timeout=int(self._spec.timeout_s * 1000) + 1000)
        try:
            await self._client.write_api().write(bucket=self._spec.bucket, org=self._spec.org,
                                                 record="\n".join(lines), write_precision=WritePrecision.MS)
        except ApiException as error:
            raise _classify(self.url, int(error.status or 0), str(error.message)) from error
        except (aiohttp.ClientError, asyncio.TimeoutError, InfluxDBError, OSError) as error:
            raise InfluxUnavailable(self.url, _reason(error)) from error

    def close(self) -> "Deferred[None]":
        client, self._client = self._client, None
        return as_deferred(client.close()) if client is not None else Deferred.fromCoroutine(_nothing())


async def _nothing() -> None:
    return None


# -- the writer -------------------------------------------------------------------------------


class _Interrupted(Exception):
    """stop() arrived between the requests of a bisection; nothing is deleted."""


class InfluxWriter:
    """Forwards the spool to one InfluxDB target, retrying with backoff, never blocking the queue."""

    def __init__(self, spool: ThreadedSpool, spec: InfluxSpec, token: str | None, series: SeriesKey,
                 reactor: IReactorTime) -> None:
        self._spool = spool
        self._spec = spec
        self._series = series
        self._reactor = reactor
        self._poster: _Poster = V1Poster(spec, reactor) if spec.v1_db else V2Poster(spec, token)
        self.url = spec.url.rstrip("/")
        self._loop: Deferred[None] | None = None
        self._sleep: Deferred[None] | None = None
        self._stopping = False
        self._connected: bool | None = None  # None: nothing tried yet
        self._down_since = 0.0
        self._backoff = Backoff(reactor, BACKOFF_FIRST_S, BACKOFF_MAX_S)  # 1 s doubling to 30 s, jittered down
        self._drain_waiters: list[Deferred[None]] = []
        self._counts = {"sent": 0, "batches": 0, "failures": 0, "rejected": 0, "unmapped": 0}
        self._last_error: str | None = None

    def start(self) -> None:
        """Start draining in the background."""
        if self._loop is None:
            self._loop = Deferred.fromCoroutine(self._run())

    def stop(self, grace_s: float = 0.0) -> "Deferred[None]":
        """Forward what is committed for up to ``grace_s`` (a clean exit leaves nothing behind while
        InfluxDB is up), let the in-flight batch finish (bounded by ``timeout_s``), then close."""
        if grace_s > 0 and self._loop is not None and self._spool.depth() > 0:
            drained = self.drained()
            drained.addTimeout(grace_s, self._reactor)
            if self._sleep is not None:
                self._sleep.cancel()  # send now, not after the flush interval
            return drained.addErrback(lambda _: None).addCallback(lambda _: self.stop())
        self._stopping = True
        if self._sleep is not None:
            self._sleep.cancel()
        if self._loop is None:
            return self._poster.close()
        loop, done = self._loop, Deferred()
        loop.addBoth(lambda _: done.callback(None))
        return done

    def drained(self) -> "Deferred[None]":
        """Fires once every committed sample has been confirmed (the spool is empty)."""
        waiter: Deferred[None] = Deferred()
        self._drain_waiters.append(waiter)
        self._notify_if_drained()
        return waiter

    def stats(self) -> dict[str, Any]:
        """Counters for status pages; ``connected`` is True once the last write succeeded."""
        return {**self._counts, "last_error": self._last_error, "backoff_s": self._backoff.current_s,
                "connected": self._connected is True}

    async def _run(self) -> None:
        try:
            while not self._stopping:
                try:
                    delay = await self._cycle()
                except Exception:  # a bug or a broken spool must not end forwarding for good
                    delay = self._backoff.failed()
                    log.exception("InfluxDB writer for %s failed; next attempt in %.1f s", self.url, delay)
                if delay > 0 and not self._stopping:
                    await self._pause(delay)
        finally:
            await self._poster.close()

    async def _pause(self, delay: float) -> None:
        self._sleep = deferLater(self._reactor, delay, lambda: None)
        try:
            await self._sleep
        except CancelledError:
            pass
        finally:
            self._sleep = None

    async def _cycle(self) -> float:
        """Send one batch; returns how long to wait before the next cycle (age expiry is the spool owner's)."""
        batch = await self._spool.peek(self._spec.batch_size)
        if not batch:
            self._notify_if_drained()
            return self._spec.flush_interval_s
        waiting = self._spool.depth()
        try:
            confirmed = await self._send_batch(batch)
        except InfluxUnavailable as error:
            return self._failed(error, waiting)
        except _Interrupted:
            return 0.0  # stopping mid-bisection: the batch stays spooled and is sent next run
        await self._spool.delete_through(batch[-1].id)
        self._succeeded(confirmed, waiting)
        self._notify_if_drained()
        return 0.0 if len(batch) >= self._spec.batch_size else self._spec.flush_interval_s

    async def _send_batch(self, batch: list[SpooledSample]) -> int:
        """Post the batch; returns how many the server took. Refused samples are isolated and logged."""
        samples, lines = self._lines(batch)
        dropped: list[tuple[SpooledSample, InfluxRejected]] = []
        if lines:
            await self._bisect(samples, lines, dropped)
        if dropped:
            self._counts["rejected"] += len(dropped)
            for point, count in Counter(s.point for s, _ in dropped).items():
                reason = next(e.detail for s, e in dropped if s.point == point)
                log.error("InfluxDB %s refused %d sample(s) of point %s, dropped: %s",
                          self.url, count, point, reason)
        return len(lines) - len(dropped)

    def _lines(self, batch: list[SpooledSample]) -> tuple[list[SpooledSample], list[str]]:
        """Line protocol for every sample whose point still has a series (the site may have changed)."""
        samples, lines, unmapped = [], [], Counter[str]()
        for s in batch:
            try:
                prefix = self._series(s.point)
            except Exception:  # noqa: BLE001 - the caller's lookup; an unknown point is the usual cause
                unmapped[s.point] += 1
                continue
            samples.append(s)
            lines.append(to_line(prefix, s))
        for point, count in unmapped.items():
            log.error("dropping %d spooled sample(s) of point %s: not in the site any more", count, point)
        self._counts["unmapped"] += sum(unmapped.values())
        return samples, lines

    async def _bisect(self, samples: list[SpooledSample], lines: list[str],
                      dropped: list[tuple[SpooledSample, InfluxRejected]]) -> None:
        """Post; on a content rejection split in halves until the bad lines stand alone."""
        if self._stopping:
            raise _Interrupted()
        try:
            await self._post(lines)
        except InfluxRejected as rejected:
            if len(lines) == 1:
                dropped.append((samples[0], rejected))
                return
            log.debug("InfluxDB %s refused a batch of %d (%s); bisecting", self.url, len(lines), rejected)
            mid = len(lines) // 2
            await self._bisect(samples[:mid], lines[:mid], dropped)
            await self._bisect(samples[mid:], lines[mid:], dropped)

    async def _post(self, lines: list[str]) -> None:
        d = self._poster.post(lines)
        d.addTimeout(self._spec.timeout_s, self._reactor)
        try:
            await d
        except (DeferredTimeout, CancelledError) as error:
            raise InfluxUnavailable(self.url, f"no answer within {self._spec.timeout_s:g} s") from error

    def _failed(self, error: InfluxUnavailable, waiting: int) -> float:
        """Count, log once per outage, and return the backoff delay."""
        self._counts["failures"] += 1
        self._last_error = str(error)
        delay = self._backoff.failed()
        if self._connected is not False:
            self._down_since = self._reactor.seconds()
            log.warning("InfluxDB %s unreachable: %s; %d samples waiting in the spool, retrying "
                        "with backoff up to %.0f s", self.url, error.reason, waiting, BACKOFF_MAX_S)
        else:
            log.debug("InfluxDB %s still unreachable: %s; retry in %.1f s", self.url, error.reason, delay)
        self._connected = False
        return delay

    def _succeeded(self, confirmed: int, waiting: int) -> None:
        if self._connected is False:
            log.info("InfluxDB %s reachable again after %.0f s; %d samples were waiting",
                     self.url, self._reactor.seconds() - self._down_since, waiting)
        self._connected = True
        self._backoff.succeeded()
        self._counts["sent"] += confirmed
        self._counts["batches"] += 1

    def _notify_if_drained(self) -> None:
        if self._drain_waiters and self._spool.depth() == 0:
            waiters, self._drain_waiters = self._drain_waiters, []
            for waiter in waiters:
                waiter.callback(None)
