"""One request in flight per bus, commands before queued polls."""

import asyncio

import pytest_twisted

from drivers.modbus.link import PriorityGate
from gateway.aio import as_deferred


async def _order_of_service() -> list[str]:
    gate = PriorityGate()
    served: list[str] = []
    in_flight = 0

    async def request(name: str, priority: bool) -> None:
        nonlocal in_flight
        await gate.acquire(priority)
        in_flight += 1
        assert in_flight == 1, "two requests on the bus at once"
        served.append(name)
        await asyncio.sleep(0.001)
        in_flight -= 1
        gate.release()

    first = asyncio.ensure_future(request("poll-1", False))
    await asyncio.sleep(0)  # poll-1 holds the bus
    rest = [asyncio.ensure_future(request(name, name.startswith("cmd")))
            for name in ("poll-2", "poll-3", "cmd-1", "poll-4", "cmd-2")]
    await asyncio.gather(first, *rest)
    return served


@pytest_twisted.ensureDeferred
async def test_commands_overtake_queued_polls() -> None:
    """Commands queued behind a poll in flight go before every queued poll, each class in FIFO order."""
    served = await as_deferred(_order_of_service())
    assert served == ["poll-1", "cmd-1", "cmd-2", "poll-2", "poll-3", "poll-4"]


async def _cancelled_waiter_frees_nothing() -> bool:
    gate = PriorityGate()
    await gate.acquire(False)
    waiter = asyncio.ensure_future(gate.acquire(True))
    await asyncio.sleep(0)
    waiter.cancel()
    await asyncio.gather(waiter, return_exceptions=True)
    gate.release()
    third = asyncio.ensure_future(gate.acquire(False))
    await asyncio.sleep(0)
    return third.done() and gate.waiting == 0


@pytest_twisted.ensureDeferred
async def test_a_cancelled_waiter_does_not_block_the_bus() -> None:
    """A request cancelled while queued (its poll was stopped) leaves the bus usable."""
    assert await as_deferred(_cancelled_waiter_frees_nothing())
