"""The one bridge between Twisted and asyncio libraries (pymodbus, asyncua, influxdb-client).

The reactor is Twisted's asyncio reactor, so both share one loop. Two traps decide the shape:
``ensureDeferred`` on an asyncio coroutine fails ("await wasn't used with future"), and an
asyncio task cannot await a bare Deferred ("Task got bad yield").
"""

import asyncio
from typing import Any, Coroutine, TypeVar

from twisted.internet.defer import Deferred

T = TypeVar("T")


def as_deferred(coro: Coroutine[Any, Any, T]) -> "Deferred[T]":
    """Run an asyncio coroutine on the shared loop; its result fires the returned Deferred."""
    return Deferred.fromFuture(asyncio.ensure_future(coro))


async def await_deferred(d: "Deferred[T]") -> T:
    """Await a Deferred from inside an asyncio coroutine."""
    return await d.asFuture(asyncio.get_running_loop())
