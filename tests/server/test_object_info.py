"""Every node of the pack shows in the real server's /object_info, fully documented.

EXPECTED_NODES is the public list of node ids. A node whose id no module in nodes/ registers yet
is skipped (visibly) as "not built yet"; every registered one is checked in full. A node the server
lists but this list lacks fails the suite, so the list cannot go stale.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACK_MODULE = "custom_nodes.comfyui-videograin"
NODES_DIR = Path(__file__).resolve().parents[2] / "nodes"
CATEGORIES = {"VideoGrain/io", "VideoGrain/masks", "VideoGrain/edit", "VideoGrain/motion"}

EXPECTED_NODES = [
    # io
    "VideoGrainLoadVideo",
    "VideoGrainSaveVideo",
    "VideoGrainVAEEncode",
    "VideoGrainVAEDecode",
    # masks
    "VideoGrainLoadMasks",
    "VideoGrainSelectMask",
    "VideoGrainMaskOverlay",
    "VideoGrainAlignMask",
    "VideoGrainBoxesToMasks",
    "VideoGrainMaskOps",
    "VideoGrainMaskCheck",
    "VideoGrainAutoRegions",
    # edit
    "VideoGrainRegion",
    "VideoGrainLayout",
    "VideoGrainInvert",
    "VideoGrainApplySTLayout",
    "VideoGrainSampler",
    "VideoGrainClearInversionCache",
    "VideoGrainTemporalWindows",
    "VideoGrainAttentionMaps",
    "VideoGrainPnP",
    # motion
    "VideoGrainOpticalFlow",
    "VideoGrainTrajectoryAttention",
    "VideoGrainWarpError",
    "VideoGrainCLIPText",
    "VideoGrainCLIPFrames",
]


def registered_in_source() -> tuple[dict[str, str], list[str]]:
    """Node ids that nodes/*.py put in NODE_CLASS_MAPPINGS (id -> module file), read with `ast`
    so this needs no ComfyUI; plus the modules whose mapping is not a dict literal (unknowable)."""
    found: dict[str, str] = {}
    opaque: list[str] = []
    for path in sorted(NODES_DIR.glob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        strings: dict[str, str] = {}
        for stmt in tree.body:
            target, value = None, None
            if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
                target, value = stmt.targets[0].id, stmt.value
            elif isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
                target, value = stmt.target.id, stmt.value
            if target is None:
                continue
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                strings[target] = value.value
            elif target == "NODE_CLASS_MAPPINGS" and path.name != "__init__.py":
                if not isinstance(value, ast.Dict):
                    opaque.append(path.name)
                    continue
                for key in value.keys:
                    if isinstance(key, ast.Constant) and isinstance(key.value, str):
                        found[key.value] = path.name
                    elif isinstance(key, ast.Name) and key.id in strings:
                        found[strings[key.id]] = path.name
                    else:
                        opaque.append(path.name)
    return found, opaque


@pytest.fixture(scope="module")
def object_info(comfy):
    return comfy.object_info()


@pytest.fixture(scope="module")
def pack_nodes(object_info):
    return {k: v for k, v in object_info.items() if v.get("python_module") == PACK_MODULE}


def test_source_scan_finds_the_built_nodes():
    """Guards the skip logic below: the scan must see the node modules that exist."""
    found, _ = registered_in_source()
    assert "VideoGrainLoadVideo" in found and found["VideoGrainLoadVideo"] == "video_nodes.py"


def test_no_unexpected_pack_nodes(pack_nodes):
    unexpected = sorted(set(pack_nodes) - set(EXPECTED_NODES))
    assert not unexpected, f"nodes served but not in EXPECTED_NODES (add them): {unexpected}"


def test_every_registered_node_is_served(pack_nodes):
    """A node registered in nodes/ but absent from /object_info failed to load or to describe
    itself (the server drops nodes whose INPUT_TYPES raises)."""
    found, _ = registered_in_source()
    missing = sorted(set(found) - set(pack_nodes))
    assert not missing, f"registered in nodes/ but not in /object_info: {missing}"


@pytest.mark.parametrize("node_id", EXPECTED_NODES)
def test_node_schema(node_id, pack_nodes):
    if node_id not in pack_nodes:
        found, opaque = registered_in_source()
        if node_id in found:
            pytest.fail(f"{node_id} is registered in nodes/{found[node_id]} but not served")
        if opaque:
            pytest.fail(f"{node_id} is not served, and NODE_CLASS_MAPPINGS in {sorted(set(opaque))} "
                        "cannot be read statically to tell whether it should be")
        pytest.skip(f"{node_id}: not built yet (no module in nodes/ registers it)")

    info = pack_nodes[node_id]
    assert info["name"] == node_id
    assert info["display_name"] and info["display_name"] != node_id, "needs a display name"
    assert isinstance(info["description"], str) and len(info["description"]) >= 20, "needs a DESCRIPTION"
    assert info["category"] in CATEGORIES, f"category {info['category']!r} not one of {sorted(CATEGORIES)}"

    # Inputs: every required and optional input has options with a non-empty tooltip.
    inputs = {**info["input"].get("required", {}), **info["input"].get("optional", {})}
    assert inputs, "a node without inputs"
    for name, spec in inputs.items():
        assert isinstance(spec, list) and len(spec) >= 2 and isinstance(spec[1], dict), \
            f"input {name!r}: spec {spec!r} has no options dict"
        tooltip = spec[1].get("tooltip")
        assert isinstance(tooltip, str) and tooltip.strip(), f"input {name!r} has no tooltip"
    for group, names in info["input_order"].items():
        assert names == list(info["input"][group]), f"input_order of {group!r} disagrees with input"

    # Outputs: names and tooltips line up with the types; a node without outputs must be an
    # output node, or the executor would never run it.
    outputs = list(info["output"])
    assert len(info["output_name"]) == len(outputs)
    assert len(info["output_is_list"]) == len(outputs)
    tooltips = info.get("output_tooltips")
    assert tooltips is not None and len(tooltips) == len(outputs), "OUTPUT_TOOLTIPS must match RETURN_TYPES"
    assert all(isinstance(t, str) and t.strip() for t in tooltips), "an output without tooltip"
    assert outputs or info["output_node"], "no outputs and not an OUTPUT_NODE"
