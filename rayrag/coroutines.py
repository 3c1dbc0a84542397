"""Running async steps from synchronous code when nothing in them waits.

The answer pipeline and the retrieval plan are written once, async, because in the Serve
graph their steps are awaited deployment handles; in one process the same steps are plain
calls that never suspend, so the coroutine runs to its end on its first `send`, without an
event loop (usable from a CLI, a Tune trial, or code already inside a running loop).
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run_sync(coroutine: Coroutine[Any, Any, T]) -> T:
    """The result of a coroutine that never suspends (local stages), without an event loop."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value
    coroutine.close()
    raise RuntimeError(
        "a local answer stage suspended; run the pipeline's async methods in an event loop"
    )
