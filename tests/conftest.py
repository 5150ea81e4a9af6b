"""Makes the pack importable as the package `videograin` whatever its folder is called.

ComfyUI imports the pack by folder name (which may contain a hyphen); tests import it under one
stable name so that relative imports inside the pack work the same way. The pack's own
`__init__.py` (node registration, which imports ComfyUI) is not executed, so the comfy-free core
imports without a host: `from videograin.masks.geometry import plan_frames`. The scripts of `.ci/` are
importable by name (`import comfy_server`, `import synthetic_clip`).
"""
import pathlib
import sys
import types

PACK_DIR = pathlib.Path(__file__).resolve().parents[1]
# The dev tooling in .ci (server starter, model and clip generators) is imported by module name.
sys.path.insert(0, str(PACK_DIR / ".ci"))

if "videograin" not in sys.modules:
    _package = types.ModuleType("videograin")
    _package.__path__ = [str(PACK_DIR)]
    _package.__file__ = str(PACK_DIR / "__init__.py")
    sys.modules["videograin"] = _package
