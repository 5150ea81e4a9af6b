"""Run an API-format workflow through a real ComfyUI server and say where its outputs are.

    .host/venv/bin/python .ci/run_workflow.py [WORKFLOW.json] [--set NODE_ID.input=VALUE ...]
                                              [--url http://127.0.0.1:8188] [--timeout S]

Without --url it starts the dev host's server (see .ci/setup_host.sh) for the run and stops it
afterwards; outputs go to the host's output folder. --set overrides a node's input; VALUE is read
as JSON when it parses (numbers, true/false, ["4", 0] links), else as a string:

    --set 1.frame_load_cap=8 --set 4.filename_prefix=videograin/short --set 2.masks_path=my/masks
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

PACK_DIR = Path(__file__).resolve().parents[1]
DEFAULT_WORKFLOW = PACK_DIR / "workflows" / "api" / "videograin_mask_check.json"
VIDEO_SUFFIXES = {".mp4", ".webm", ".mov", ".mkv", ".gif", ".webp"}


def load_workflow(path: Path) -> dict:
    """The API-format prompt in `path` (UI-format files are refused with a hint)."""
    data = json.loads(path.read_text())
    if "nodes" in data and "links" in data:
        raise SystemExit(f"{path} is a UI-format workflow; use its API twin in workflows/api/ "
                         "(or export it from ComfyUI with 'Export (API)')")
    return data


def parse_value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def apply_overrides(prompt: dict, overrides: list[str]) -> dict:
    """Apply `NODE_ID.input=value` overrides in place; unknown nodes or inputs are errors."""
    for item in overrides:
        target, sep, value = item.partition("=")
        node_id, dot, name = target.partition(".")
        if not sep or not dot or not name:
            raise SystemExit(f"--set {item!r}: expected NODE_ID.input=value")
        if node_id not in prompt:
            raise SystemExit(f"--set {item!r}: no node {node_id!r} (nodes: {', '.join(prompt)})")
        inputs = prompt[node_id]["inputs"]
        if name not in inputs:
            raise SystemExit(f"--set {item!r}: node {node_id} ({prompt[node_id]['class_type']}) has no input "
                             f"{name!r} (inputs: {', '.join(inputs)})")
        inputs[name] = parse_value(value)
    return prompt


def real_checkpoints(url: str) -> list[str]:
    """Checkpoints CheckpointLoaderSimple offers besides the random test models (real weights). Every model
    the dev host or the tests write is named videograin_* (a test killed mid-run can leave one behind)."""
    info = get_json(url, "/object_info/CheckpointLoaderSimple")["CheckpointLoaderSimple"]
    spec = info["input"]["required"]["ckpt_name"]
    names = spec[0] if isinstance(spec[0], list) else spec[1].get("options", [])
    return [n for n in names if not Path(n).name.startswith("videograin_")]


def get_json(url: str, path: str, body: dict | None = None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url + path, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        raw = r.read()
    return json.loads(raw) if raw.strip() else None


def queue(url: str, prompt: dict, client_id: str) -> str:
    try:
        return get_json(url, "/prompt", {"prompt": prompt, "client_id": client_id})["prompt_id"]
    except urllib.error.HTTPError as e:
        if e.code != 400:
            raise
        body = json.loads(e.read() or b"{}")
        lines = [f"{body.get('error', {}).get('message')}: {body.get('error', {}).get('details', '')}"]
        for node_id, entry in body.get("node_errors", {}).items():
            for err in entry.get("errors", []):
                lines.append(f"  node {node_id} ({entry.get('class_type')}): {err.get('message')}: {err.get('details')}")
        raise SystemExit("the server refused the workflow:\n" + "\n".join(lines)) from None


def status_line(text: str, final: bool = False) -> None:
    """On a terminal: one line rewritten in place. In a log: a line per node and per finished bar."""
    if sys.stdout.isatty():
        print(f"\r\033[K{text}", end="\n" if final else "", flush=True)
    elif final:
        print(text, flush=True)


def follow(url: str, prompt: dict, prompt_id: str, ws, timeout: float) -> None:
    """Show progress until the prompt finishes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        raw = ws.recv()
        if not isinstance(raw, str):
            continue  # binary frames: previews
        msg = json.loads(raw)
        data = msg.get("data", {})
        if data.get("prompt_id") != prompt_id:
            continue
        kind = msg["type"]
        if kind == "executing" and data.get("node") is not None:
            node = data["node"]
            status_line(f"[videograin] node {node} {prompt.get(node, {}).get('class_type', '')}",
                        final=not sys.stdout.isatty())
        elif kind == "progress":
            node = data.get("node")
            status_line(f"[videograin] node {node} {prompt.get(node, {}).get('class_type', '')}: "
                        f"{data['value']}/{data['max']}", final=data["value"] == data["max"])
        elif kind in ("execution_success", "execution_error", "execution_interrupted") or kind == "executing":
            status_line("", final=False)
            return
    raise SystemExit(f"\nthe workflow did not finish within {timeout:.0f} s")


def outputs_of(url: str, prompt_id: str, output_dir: Path | None) -> list[tuple[str, str]]:
    """(file name, where it is: a local path, or a /view URL for a remote server) per output."""
    deadline = time.monotonic() + 60
    while (entry := get_json(url, f"/history/{prompt_id}").get(prompt_id)) is None:
        if time.monotonic() > deadline:  # the websocket says done a moment before history has it
            raise SystemExit(f"prompt {prompt_id} finished but never reached /history")
        time.sleep(0.1)
    status = entry.get("status", {})
    if status.get("status_str") != "success":
        for name, data in status.get("messages", []):
            if name == "execution_error":
                raise SystemExit(f"node {data.get('node_id')} ({data.get('node_type')}) failed: "
                                 f"{data.get('exception_message', '').strip()}")
        raise SystemExit(f"the workflow ended with status {status.get('status_str')!r}")
    files: list[tuple[str, str]] = []
    for item in output_items(entry):
        rel = Path(item.get("subfolder", "")) / item["filename"]
        where = (str(output_dir / rel) if output_dir else
                 f"{url}/view?filename={item['filename']}&subfolder={item.get('subfolder', '')}&type=output")
        files.append((item["filename"], where))
    return files


def output_items(entry: dict) -> list[dict]:
    """The files a finished prompt's /history entry lists in the output folder (not temp previews)."""
    return [item for ui in entry.get("outputs", {}).values() for items in ui.values()
            if isinstance(items, list) for item in items
            if isinstance(item, dict) and "filename" in item and item.get("type", "output") == "output"]


def run(url: str, prompt: dict, timeout: float, output_dir: Path | None) -> list[tuple[str, str]]:
    import websocket  # websocket-client, in the host venv

    client_id = uuid.uuid4().hex
    ws = websocket.create_connection(url.replace("http://", "ws://", 1) + f"/ws?clientId={client_id}",
                                     timeout=timeout)
    try:
        prompt_id = queue(url, prompt, client_id)
        follow(url, prompt, prompt_id, ws, timeout)
    finally:
        ws.close()
    return outputs_of(url, prompt_id, output_dir)


# The CPU-friendly demo settings used with the tiny random model (no real SD1.5 weights present).
TINY_DEMO = {"VideoGrainLoadVideo": {"width": 192, "height": 192}, "VideoGrainInvert": {"steps": 20},
             "VideoGrainSampler": {"steps": 20}}


def choose_checkpoint(prompt: dict, real: list[str], tiny: str) -> str:
    """Point every CheckpointLoaderSimple at real SD1.5 weights if there are any (full size and
    steps, as the workflow says), else at the tiny random model at a CPU-friendly size."""
    ckpt = real[0] if real else tiny
    for node in prompt.values():
        if node["class_type"] == "CheckpointLoaderSimple":
            node["inputs"]["ckpt_name"] = ckpt
        if not real:
            node["inputs"].update(TINY_DEMO.get(node["class_type"], {}))
    return ckpt


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("workflow", nargs="?", type=Path, default=DEFAULT_WORKFLOW, help="API-format workflow JSON")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="NODE_ID.input=VALUE")
    ap.add_argument("--url", help="use this running server instead of starting the dev host's")
    ap.add_argument("--auto-checkpoint", action="store_true",
                    help="use real SD1.5 weights from the models folder if present, else the tiny random model "
                         "at a CPU-friendly size (the demo); --set overrides still win")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds to wait for the run")
    args = ap.parse_args(argv)

    prompt = load_workflow(args.workflow)
    apply_overrides(json.loads(json.dumps(prompt)), args.overrides)  # fail fast on a bad --set
    t0 = time.monotonic()
    if args.url:
        apply_overrides(prompt, args.overrides)
        files = run(args.url.rstrip("/"), prompt, args.timeout, None)
    else:
        import comfy_server as cs  # this script's folder (.ci) is on sys.path

        host = cs.host_paths()
        server = cs.ComfyServer(host, output_dir=host.base_dir / "output", temp_dir=host.base_dir / "temp",
                                log_path=host.base_dir / "comfyui-demo.log")
        print(f"[videograin] starting ComfyUI (log: {server.log_path})", flush=True)
        with server:
            try:
                server.check_pack_loaded()
            except cs.ServerError as e:
                raise SystemExit(str(e)) from None
            real = real_checkpoints(server.url)
            if real:
                print(f"[videograin] checkpoints with real weights available: {', '.join(real)}")
            if args.auto_checkpoint:
                ckpt = choose_checkpoint(prompt, real, cs.TINY_MODEL)
                if real:
                    print(f"[videograin] using {ckpt} at the workflow's full size and steps", flush=True)
                else:
                    print("[videograin] no SD1.5 weights in the models folder: using the tiny RANDOM-weight model "
                          "at 192 px and 20 steps. Random weights give noise; this run only shows that the "
                          "pipeline works. Put an SD1.5 checkpoint in .host/base/models/checkpoints/ for a "
                          "real edit.", flush=True)
            apply_overrides(prompt, args.overrides)
            print(f"[videograin] running {args.workflow.name} on {server.url}", flush=True)
            files = run(server.url, prompt, args.timeout, server.output_dir)
    print(f"[videograin] finished in {time.monotonic() - t0:.0f} s")
    videos = [where for name, where in files if Path(name).suffix.lower() in VIDEO_SUFFIXES]
    for where in videos or [where for _, where in files]:
        print(f"[videograin] output: {where}")
    if not files:
        print("[videograin] the workflow wrote no output file")
    return 0


if __name__ == "__main__":
    sys.exit(main())
