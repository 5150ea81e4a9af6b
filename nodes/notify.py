"""Warnings the user sees: a line in the server log and a toast in the ComfyUI frontend.

`warn` sends a `videograin.warning` event to the client that queued the running prompt; the pack's
frontend extension (`web/videograin.js`) shows it as a warning toast. Warnings never stop a run.
"""
from __future__ import annotations

import logging

EVENT = "videograin.warning"
_log = logging.getLogger("videograin")


def warn(node: str, message: str) -> None:
    """Log `message` as a warning of `node` and show it in the frontend of whoever queued the prompt."""
    _log.warning("[VideoGrain] %s: %s", node, message)
    try:
        from server import PromptServer
    except ImportError:  # no server (unit tests, scripts): the log line is all there is
        return
    server = getattr(PromptServer, "instance", None)
    if server is None:
        return
    data = {"node": node, "message": message, "prompt_id": getattr(server, "last_prompt_id", None),
            "node_id": getattr(server, "last_node_id", None)}
    try:
        server.send_sync(EVENT, data, getattr(server, "client_id", None))
    except Exception:  # noqa: BLE001 - a failed toast must never fail the run; the log has it
        _log.debug("could not send the warning to the frontend", exc_info=True)
