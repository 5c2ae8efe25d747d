"""Pausing Python's cyclic garbage collector while many acyclic objects are built.

Reading a long history builds thousands of objects the collector tracks (lists, dicts
holding lists, pydantic models, msgspec structs), which start collections as they are
allocated: generation-0 and -1 passes over the young objects and, in a process holding
many objects, full passes over all of them. None of these objects is part of a reference
cycle, so those collections cannot free any of them (docs/performance.md, goal 1)."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["gc_paused"]


@contextmanager
def gc_paused() -> Iterator[None]:
    """The collector off for the block (if it was on), and on again after it, whatever
    the block raises. The pause is process-wide: other threads' collections wait too."""
    paused = gc.isenabled()
    if paused:
        gc.disable()
    try:
        yield
    finally:
        if paused:
            gc.enable()
