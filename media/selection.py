"""The one frame-selection rule: skip the first frames, keep every nth, stop at a cap.

The video loader, the mask loader and the nodes' expected frame counts all derive from
`FrameSelection`, so a clip and its masks always keep the same frames.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


class SelectionError(ValueError):
    """A negative skip or cap, or an nth below 1; `input_name` is the offending input."""

    def __init__(self, input_name: str, problem: str, fix: str):
        self.input_name, self.problem, self.fix = input_name, problem, fix
        super().__init__(f"input '{input_name}': {problem}. Fix: {fix}")


@dataclass(frozen=True)
class FrameSelection:
    """Skip the first `skip_first_frames`, then keep every `select_every_nth`, then stop after
    `frame_load_cap` kept frames (0 = no cap). Field names are the loaders' input names."""

    frame_load_cap: int = 0
    skip_first_frames: int = 0
    select_every_nth: int = 1

    def __post_init__(self) -> None:
        for name in ("frame_load_cap", "skip_first_frames"):
            if getattr(self, name) < 0:
                raise SelectionError(name, f"{name} is {getattr(self, name)}", "use 0 or more")
        if self.select_every_nth < 1:
            raise SelectionError("select_every_nth", f"select_every_nth is {self.select_every_nth}", "use 1 or more")

    def keeps(self, index: int) -> bool:
        """Whether source frame `index` passes skip and nth (the cap is applied while picking)."""
        return index >= self.skip_first_frames and (index - self.skip_first_frames) % self.select_every_nth == 0

    def pick(self, items: Iterable[T]) -> Iterator[tuple[int, T]]:
        """Yield `(source index, item)` for the selected items, pulling lazily: once the cap is met no
        further item is read, so a capped video is not decoded to its end."""
        kept = 0
        for i, item in enumerate(items):
            if self.frame_load_cap and kept >= self.frame_load_cap:
                return
            if self.keeps(i):
                kept += 1
                yield i, item
                if self.frame_load_cap and kept >= self.frame_load_cap:
                    return

    def indices(self, total: int) -> list[int]:
        """Selected indices among `total` source frames."""
        return [i for i, _ in self.pick(range(total))]

    def count(self, total: int) -> int:
        """How many of `total` source frames are kept."""
        kept = -(-max(0, total - self.skip_first_frames) // self.select_every_nth)
        return min(kept, self.frame_load_cap) if self.frame_load_cap else kept

    def describe(self) -> str:
        return (f"frame_load_cap={self.frame_load_cap}, skip_first_frames={self.skip_first_frames}, "
                f"select_every_nth={self.select_every_nth}")
