"""Import the pack as the package `videograin` from a benchmark script, as the tests do (the folder's
own name may hold a hyphen, and its __init__ registers ComfyUI nodes, which the kernels need not)."""
from __future__ import annotations

import sys
import types
from pathlib import Path

PACK_DIR = Path(__file__).resolve().parents[1]


def import_videograin() -> None:
    """Make `import videograin.<sub>` work without running the pack's __init__."""
    if "videograin" not in sys.modules:
        package = types.ModuleType("videograin")
        package.__path__ = [str(PACK_DIR)]
        sys.modules["videograin"] = package
