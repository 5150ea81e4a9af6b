"""Media in and out, without ComfyUI: file listing, the frame-selection rule, decoding and encoding.

Both the video loader and the mask loader read through this package, so a clip and its label masks
are listed, selected, decoded and rotated by the same code.
"""
