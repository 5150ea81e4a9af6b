"""pytest: collect the pack's root folder as a plain directory, not as a Python package.

The root holds the pack's `__init__.py` (node registration for ComfyUI). pytest would import it
while collecting, which needs a running ComfyUI; the tests import the pack their own way
(`tests/conftest.py`), so the root is collected like any folder.
"""
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent


def pytest_collect_directory(path, parent):
    if Path(path).resolve() == ROOT:
        return pytest.Dir.from_parent(parent, path=Path(path))
    return None
