"""Disk cache for DDIM inversions (docs/design.md §17): content keys (`key`), the safetensors file
format (`record`) and the folder with atomic writes and LRU eviction (`store`). Comfy-free."""
from .key import (CacheKeyError, describe, inversion_cache_key, patches_fingerprint, tensor_digest,
                  weights_fingerprint)
from .record import CachedInversion, CacheFileError
from .store import CacheEntry, CacheError, InversionCache

__all__ = ["CacheEntry", "CacheError", "CacheFileError", "CacheKeyError", "CachedInversion", "InversionCache",
           "describe", "inversion_cache_key", "patches_fingerprint", "tensor_digest", "weights_fingerprint"]
