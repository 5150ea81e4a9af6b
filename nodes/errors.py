"""User-facing errors: every message names the node, the input and the fix."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


class VideoGrainInputError(ValueError):
    """A bad input to a VideoGrain node, worded for the person who wired the graph."""

    # ComfyUI shows an error's type as "<module>.<name>"; the pack's module path is a file-system path.
    __module__ = "videograin"

    def __init__(self, node: str, input_name: str, problem: str, fix: str):
        self.node, self.input_name, self.problem, self.fix = node, input_name, problem, fix
        super().__init__(f"{node} input '{input_name}': {problem}. Fix: {fix}")


class VideoGrainOutOfMemory(torch.OutOfMemoryError):
    """Out of memory, reworded for the user; still an OutOfMemoryError, so ComfyUI frees its models."""

    __module__ = "videograin"


@contextmanager
def out_of_memory_hint(node: str, input_name: str, fix: str) -> Iterator[None]:
    """Turn an out-of-memory inside the block into a message naming the node, the input and the fix."""
    try:
        yield
    except torch.OutOfMemoryError as error:
        detail = str(error).strip().splitlines()[0] if str(error).strip() else "out of memory"
        raise VideoGrainOutOfMemory(f"{node} input '{input_name}': ran out of memory ({detail}). Fix: {fix}") \
            from error
