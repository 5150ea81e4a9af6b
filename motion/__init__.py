"""Motion: optical flow (OpenCV, no weights), trajectories per latent size, and the Warp-Err metric.

docs/design.md §10 and §10.1. Nothing here imports ComfyUI.
"""
