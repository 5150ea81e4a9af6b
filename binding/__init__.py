"""Prompt binding: local prompts found in the global prompt, spliced, and the region bit sets."""
