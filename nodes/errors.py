"""User-facing errors: every message names the node, the input and the fix."""
from __future__ import annotations


class VideoGrainInputError(ValueError):
    """A bad input to a VideoGrain node, worded for the person who wired the graph."""

    def __init__(self, node: str, input_name: str, problem: str, fix: str):
        self.node, self.input_name, self.problem, self.fix = node, input_name, problem, fix
        super().__init__(f"{node} input '{input_name}': {problem}. Fix: {fix}")
