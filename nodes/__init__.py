"""ComfyUI node registry: collects the mappings of every node module."""
from . import (attention_nodes, auto_region_nodes, inversion_nodes, layout_nodes, mask_nodes, mask_tools_nodes,
               metric_nodes, motion_nodes, pnp_nodes, vae_nodes, video_nodes)

NODE_CLASS_MAPPINGS: dict[str, type] = {}
NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {}
for _module in (video_nodes, vae_nodes, mask_nodes, mask_tools_nodes, auto_region_nodes, layout_nodes, inversion_nodes,
                attention_nodes, motion_nodes, metric_nodes, pnp_nodes):
    NODE_CLASS_MAPPINGS.update(_module.NODE_CLASS_MAPPINGS)
    NODE_DISPLAY_NAME_MAPPINGS.update(_module.NODE_DISPLAY_NAME_MAPPINGS)
