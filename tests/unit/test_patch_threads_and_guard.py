"""Current-ComfyUI behaviours of the attention patches (issue 10 item 3): the allocation guard from
transformer_options wraps the creation of cached tensors, and one patch is safe from two threads."""
import contextlib
import threading

import torch

from videograin.attention.patch import ALLOC_GUARD_KEY, STLayoutAttention
from videograin.attention.settings import STLayoutSettings
from videograin.masks.layout import RegionLayout
from videograin.sampling.schedule import editing_sigmas

HEADS, DIM, F, H, W = 2, 8, 3, 4, 4


def layout() -> RegionLayout:
    masks = torch.zeros(2, F, H, W, dtype=torch.bool)
    masks[0, :, :2] = True
    masks[1, :, 2:] = True
    bits = torch.zeros(77, dtype=torch.int64)
    bits[2], bits[4] = 1, 2
    return RegionLayout(names=["a", "b"], prompts=["x", "y"], kinds=["instance", "instance"], masks=masks,
                        token_bits=bits)


def options(step=2, **extra):
    sigmas = editing_sigmas(50)
    return {"n_heads": HEADS, "dim_head": DIM, "cond_or_uncond": [0, 1],
            "sigmas": sigmas[step].reshape(1).repeat(2 * F), "sample_sigmas": sigmas,
            "activations_shape": [2 * F, HEADS * DIM, H, W], **extra}


def qkv(seed=0):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(2 * F, H * W, HEADS * DIM, generator=g) for _ in range(3))


def test_cached_tensors_are_created_under_the_guard_and_only_once():
    entered, inside = [], []

    @contextlib.contextmanager
    def guard():
        entered.append(1)
        inside.append(True)
        yield
        inside.pop()

    patch = STLayoutAttention("self", layout(), STLayoutSettings(self_branch="both"))
    original = patch.layout.query_bits

    def spy(h, w):
        assert inside, "a cached tensor was made outside the allocation guard"
        return original(h, w)
    patch.layout.query_bits = spy
    out = patch(*qkv(), options(**{ALLOC_GUARD_KEY: guard}))
    patch(*qkv(1), options(**{ALLOC_GUARD_KEY: guard}))  # the cache is warm: no second creation
    assert entered == [1]
    unguarded = STLayoutAttention("self", layout(), STLayoutSettings(self_branch="both"))(*qkv(), options())
    assert torch.equal(out, unguarded)  # the guard changes where memory comes from, not the result


def test_one_patch_called_from_two_threads_gives_the_single_thread_result():
    settings = STLayoutSettings(self_branch="both", cross_strength=1.0)
    expected = {kind: STLayoutAttention(kind, layout(), settings)(*qkv(7), options()) for kind in ("self",)}
    patch = STLayoutAttention("self", layout(), settings)
    results, errors = [], []
    start = threading.Barrier(2)

    def worker():
        try:
            start.wait()
            for _ in range(5):
                results.append(patch(*qkv(7), options()))
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 10
    assert all(torch.equal(r, expected["self"]) for r in results)
    assert len(patch._cache) == 1  # one entry for the one size and device, not one per thread


def _model_patch():
    import pathlib
    import sys
    import types
    if "videograin.nodes" not in sys.modules:  # skip nodes/__init__.py (it registers every node: needs ComfyUI)
        pkg = types.ModuleType("videograin.nodes")
        pkg.__path__ = [str(pathlib.Path(__file__).resolve().parents[2] / "nodes")]
        sys.modules["videograin.nodes"] = pkg
    from videograin.nodes import model_patch
    return model_patch


def test_node_layer_takes_comfys_pause_malloc_graph_where_it_exists(monkeypatch):
    import sys
    import types
    model_patch = _model_patch()
    monkeypatch.setitem(sys.modules, "comfy.model_prefetch", None)  # 0.3.75: no such module
    monkeypatch.setitem(sys.modules, "comfy", types.ModuleType("comfy"))
    assert model_patch.malloc_guard() is None
    prefetch = types.ModuleType("comfy.model_prefetch")
    prefetch.pause_malloc_graph = contextlib.nullcontext
    sys.modules["comfy"].model_prefetch = prefetch
    monkeypatch.setitem(sys.modules, "comfy.model_prefetch", prefetch)
    assert model_patch.malloc_guard() is contextlib.nullcontext
