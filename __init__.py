"""comfyui-videograin: VideoGrain (ICLR 2025) zero-shot multi-grained video editing for ComfyUI.

This file only registers nodes (V1 API) and the frontend folder; all logic lives in the sub-packages.
"""
from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

WEB_DIRECTORY = "./web"  # the toast that shows the pack's warnings

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
