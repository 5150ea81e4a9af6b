"""sampling: comfy-free core of the pack (plain PyTorch/NumPy)."""
