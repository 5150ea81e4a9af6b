"""Write the UI-format twin of an API-format workflow, using a running server's /object_info.

    .host/venv/bin/python .ci/api_to_ui.py workflows/api/NAME.json workflows/NAME.json [--url URL]

Without --url it starts the dev host's server for the conversion. Widget values follow each node's
input order from /object_info (an INT with control_after_generate gets the frontend's extra
"fixed" entry); linked widget inputs keep their default in widgets_values, as the frontend does.
Nodes are placed in columns by their depth in the graph. tests/server/test_workflows.py checks
that every shipped UI workflow still agrees with its API twin.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import comfy_server as cs  # noqa: E402
from run_workflow import get_json  # noqa: E402

WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")


def input_specs(info: dict) -> list[tuple[str, list]]:
    """(name, spec) of a node's inputs in the order the frontend lays them out."""
    spec = {**info["input"].get("required", {}), **info["input"].get("optional", {})}
    order = info["input_order"].get("required", []) + info["input_order"].get("optional", [])
    return [(name, spec[name]) for name in order]


def is_widget(spec: list) -> bool:
    options = spec[1] if len(spec) > 1 else {}
    return (isinstance(spec[0], list) or spec[0] in WIDGET_TYPES) and not options.get("forceInput")


def widget_values(name: str, spec: list, value, linked: bool) -> list:
    options = spec[1] if len(spec) > 1 else {}
    if linked:
        value = options.get("default", spec[0][0] if isinstance(spec[0], list) else None)
    values = [value]
    if options.get("control_after_generate"):
        values.append("fixed")
    return values


def depth(prompt: dict) -> dict[str, int]:
    memo: dict[str, int] = {}

    def of(node_id: str) -> int:
        if node_id not in memo:
            parents = [v[0] for v in prompt[node_id]["inputs"].values() if isinstance(v, list)]
            memo[node_id] = 1 + max((of(p) for p in parents), default=-1)
        return memo[node_id]

    return {node_id: of(node_id) for node_id in prompt}


def convert(prompt: dict, object_info: dict) -> dict:
    """UI-format (version 0.4) workflow equivalent to the API-format `prompt`."""
    levels = depth(prompt)
    rows: dict[int, int] = {}
    nodes, links = [], []
    outputs: dict[tuple[int, int], list[int]] = {}
    for order, node_id in enumerate(sorted(prompt, key=lambda n: (levels[n], int(n)))):
        entry, info = prompt[node_id], object_info[prompt[node_id]["class_type"]]
        inputs, widgets = [], []
        for name, spec in input_specs(info):
            value = entry["inputs"].get(name)
            linked = isinstance(value, list)
            if name not in entry["inputs"] and not is_widget(spec):
                continue  # an optional socket left unconnected
            socket = {"name": name, "type": "COMBO" if isinstance(spec[0], list) else spec[0], "link": None}
            if is_widget(spec):
                socket["widget"] = {"name": name}
                widgets += widget_values(name, spec, value, linked)
            if linked:
                link_id = len(links) + 1
                src = int(value[0])
                src_type = object_info[prompt[value[0]]["class_type"]]["output"][value[1]]
                links.append([link_id, src, value[1], int(node_id), len(inputs), src_type])
                outputs.setdefault((src, value[1]), []).append(link_id)
                socket["link"] = link_id
            if is_widget(spec) or linked:
                inputs.append(socket)
        column = levels[node_id]
        row = rows.get(column, 0)
        rows[column] = row + 1
        nodes.append({"id": int(node_id), "type": entry["class_type"], "pos": [40 + 380 * column, 40 + 330 * row],
                      "size": [340, 280], "flags": {}, "order": order, "mode": 0, "inputs": inputs,
                      "properties": {"cnr_id": "comfyui-videograin", "Node name for S&R": entry["class_type"]},
                      "widgets_values": widgets,
                      **({"title": entry["_meta"]["title"]} if "_meta" in entry else {})})
    for node in nodes:
        info = object_info[node["type"]]
        node["outputs"] = [{"name": name, "type": kind, "links": outputs.get((node["id"], slot), [])}
                           for slot, (name, kind) in enumerate(zip(info["output_name"], info["output"]))]
    # A node's `_meta.note` (free text, ignored by the server) goes to the UI file's extra.notes.
    notes = {node_id: entry["_meta"]["note"] for node_id, entry in prompt.items() if entry.get("_meta", {}).get("note")}
    return {"id": "00000000-0000-4000-8000-000000000000", "revision": 0,
            "last_node_id": max(n["id"] for n in nodes), "last_link_id": len(links), "nodes": nodes,
            "links": links, "groups": [], "config": {}, "extra": {"notes": notes} if notes else {}, "version": 0.4}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("api", type=Path)
    ap.add_argument("ui", type=Path)
    ap.add_argument("--url")
    args = ap.parse_args(argv)
    prompt = json.loads(args.api.read_text())
    if args.url:
        info = get_json(args.url, "/object_info")
    else:
        host = cs.host_paths()
        with cs.ComfyServer(host, output_dir=host.base_dir / "output") as server:
            info = get_json(server.url, "/object_info")
    args.ui.write_text(json.dumps(convert(prompt, info), indent=1) + "\n")
    print(f"wrote {args.ui}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
