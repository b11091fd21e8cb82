"""asyncio test bodies on the reactor's loop (pymodbus and asyncua cannot be awaited as Deferreds), and
waiting for a condition from inside one."""

import asyncio
import functools
from typing import Any, Awaitable, Callable

import pytest_twisted

from gateway.aio import as_deferred


def on_asyncio(test: Callable[..., Awaitable[Any]]) -> Callable[..., Any]:
    """Run an asyncio test body on the reactor's loop (asyncua cannot be awaited as a Deferred)."""
    @pytest_twisted.ensureDeferred
    @functools.wraps(test)
    async def run(*args: Any, **kwargs: Any) -> Any:
        return await as_deferred(test(*args, **kwargs))
    return run


async def until(condition: Callable[[], bool], timeout_s: float = 10.0, what: str = "condition") -> None:
    """Return once ``condition()`` holds; AssertionError naming ``what`` after ``timeout_s``."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, f"{what} not met within {timeout_s} s"
        await asyncio.sleep(0.05)
