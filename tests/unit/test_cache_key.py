"""Content keys of the inversion cache: every input that changes an inversion changes the key, nothing
process-local enters it (the same key in a fresh process), and weight fingerprints are sampled."""
import logging
import pathlib
import subprocess
import sys

import pytest
import torch

from videograin.sampling.cache import key as cache_key
from videograin.sampling.cache.key import (CacheKeyError, inversion_cache_key, patches_fingerprint, tensor_digest,
                                           weights_fingerprint)

PACK_DIR = pathlib.Path(__file__).resolve().parents[2]


def _weights():
    return [(f"block{i}.weight", torch.arange(i * 1000, i * 1000 + 5000, dtype=torch.float32).reshape(50, 100) / 7)
            for i in range(3)] + [("bias", torch.linspace(-1, 1, 10, dtype=torch.float16))]


class Adapter:
    """Stands in for comfy.weight_adapter.LoRAAdapter: a name and a tuple of weights."""

    def __init__(self, weights, name="lora"):
        self.name, self.weights = name, weights


def _patches(scale=1.0, strength=1.0, fn=None):
    up = torch.arange(12, dtype=torch.float16).reshape(4, 3) * scale
    return {"block0.weight": [(strength, Adapter((up, torch.ones(3, 100), 0.5, None)), 1.0, None, fn)],
            "bias": [(1.0, ("diff", (torch.zeros(10),)), 1.0, None, None)]}


def _inputs():
    return dict(source_latent=torch.arange(2 * 4 * 8 * 8, dtype=torch.float32).reshape(2, 4, 8, 8) / 100,
                conditioning_description=[[torch.ones(1, 77, 8), {"pooled_output": torch.zeros(1, 8),
                                                                  "control": {"hint": torch.ones(1, 3, 8, 8),
                                                                              "strength": 0.8,
                                                                              "range": [0.0, 1.0]}}]],
                steps=50, weights_fp=weights_fingerprint(_weights()), patches_fp=patches_fingerprint(_patches()),
                options={"trajectory": False, "pnp": None, "schedule": "ddim_uniform"})


def test_tensor_digest_covers_dtype_shape_and_values():
    t = torch.zeros(4, 4, dtype=torch.float32)
    assert tensor_digest(t) == tensor_digest(torch.zeros(4, 4))
    assert tensor_digest(t) != tensor_digest(torch.zeros(4, 4, dtype=torch.int32))  # same bytes, other dtype
    assert tensor_digest(t) != tensor_digest(t.reshape(2, 8))
    changed = t.clone()
    changed[3, 3] = 1e-30
    assert tensor_digest(t) != tensor_digest(changed)
    base = torch.arange(16.0).reshape(4, 4)
    assert tensor_digest(base.t()) == tensor_digest(base.t().contiguous())  # values, not memory layout


def test_weights_fingerprint_is_content_based_and_order_free():
    fp = weights_fingerprint(_weights())
    assert fp == weights_fingerprint(reversed([(n, t.clone()) for n, t in _weights()]))
    for i, change in enumerate([
        lambda w: w[0][1].view(-1).__setitem__(0, 99.0),   # first element
        lambda w: w[0][1].view(-1).__setitem__(-1, 99.0),  # last element
        lambda w: w.__setitem__(1, ("renamed", w[1][1])),
        lambda w: w.__setitem__(1, (w[1][0], w[1][1].reshape(100, 50))),
        lambda w: w.__setitem__(3, (w[3][0], w[3][1].float())),
        lambda w: w.pop(),
    ]):
        w = _weights()
        change(w)
        assert weights_fingerprint(w) != fp, f"change {i} not seen"


def test_weights_fingerprint_samples_large_tensors(monkeypatch):
    # The documented trade-off: with 4 samples of 10 values (indices 0, 3, 6, 9), an edit of index 1
    # is not seen and an edit of index 3 is.
    monkeypatch.setattr(cache_key, "SAMPLE_ELEMENTS", 4)
    base = [("w", torch.arange(10.0))]
    fp = weights_fingerprint(base)
    unsampled, sampled = torch.arange(10.0), torch.arange(10.0)
    unsampled[1], sampled[3] = -1, -1
    assert weights_fingerprint([("w", unsampled)]) == fp
    assert weights_fingerprint([("w", sampled)]) != fp


def test_weights_without_values_are_refused():
    with pytest.raises(CacheKeyError, match="meta device"):
        weights_fingerprint([("w", torch.empty(4, 4, device="meta"))])
    with pytest.raises(CacheKeyError, match="not a tensor"):
        weights_fingerprint([("w", [1.0, 2.0])])


def _other_fn(w):
    return w


def test_patches_fingerprint_sees_values_strengths_and_functions():
    fp = patches_fingerprint(_patches())
    assert fp == patches_fingerprint(_patches())  # fresh, equal objects: same fingerprint
    assert fp != patches_fingerprint(_patches(scale=2.0))       # LoRA weights inside an adapter object
    assert fp != patches_fingerprint(_patches(strength=0.5))    # strength_patch
    assert fp != patches_fingerprint(_patches(fn=_other_fn))    # the patch's weight function
    assert fp != patches_fingerprint({})
    diff = _patches()
    diff["bias"][0][1][1][0][3] = 1.0  # the tensor inside ("diff", (tensor,))
    assert fp != patches_fingerprint(diff)
    # Adapters are keyed by type as well as weights.
    class OtherAdapter(Adapter):
        pass
    other = _patches()
    a = other["block0.weight"][0][1]
    other["block0.weight"][0] = (1.0, OtherAdapter(a.weights), 1.0, None, None)
    assert fp != patches_fingerprint(other)


def test_large_patch_tensors_are_sampled(monkeypatch):
    monkeypatch.setattr(cache_key, "FULL_DIGEST_BYTES", 16)
    big = torch.arange(1000.0)
    fp = patches_fingerprint({"w": [(1.0, big, 1.0, None, None)]})
    changed = big.clone()
    changed[-1] = 0
    assert patches_fingerprint({"w": [(1.0, changed, 1.0, None, None)]}) != fp  # last element is sampled
    assert cache_key.describe(big)[0] == cache_key._SAMPLED


def test_unknown_patch_objects_are_keyed_by_type_with_a_warning(caplog):
    class Opaque:
        pass
    with caplog.at_level(logging.WARNING):
        fp1 = patches_fingerprint({"w": [(1.0, Opaque(), 1.0, None, None)]})
    assert "Opaque" in caplog.text and "by type only" in caplog.text
    assert "0x" not in caplog.text  # no repr with an address
    assert patches_fingerprint({"w": [(1.0, Opaque(), 1.0, None, None)]}) == fp1  # not by id
    assert patches_fingerprint({"w": [(1.0, None, 1.0, None, None)]}) != fp1


def test_key_changes_with_every_input():
    base = _inputs()
    key = inversion_cache_key(**base)
    assert len(key) == 64 and int(key, 16) >= 0
    assert inversion_cache_key(**_inputs()) == key  # equal inputs built afresh

    def variant(**changes):
        args = _inputs()
        args.update(changes)
        return inversion_cache_key(**args)

    latent = base["source_latent"].clone()
    latent[1, 3, 7, 7] += 1e-6
    cond = _inputs()["conditioning_description"]
    cond[0][1]["control"]["strength"] = 0.81
    hint = _inputs()["conditioning_description"]
    hint[0][1]["control"]["hint"][0, 0, 0, 0] = 0.0
    prompt = _inputs()["conditioning_description"]
    prompt[0][0][0, 5, 2] = 2.0
    variants = {
        "latent value": variant(source_latent=latent),
        "latent size": variant(source_latent=base["source_latent"].reshape(2, 4, 4, 16)),
        "latent frames": variant(source_latent=base["source_latent"][:1]),
        "latent dtype": variant(source_latent=base["source_latent"].half()),
        "controlnet strength": variant(conditioning_description=cond),
        "controlnet hint": variant(conditioning_description=hint),
        "source prompt": variant(conditioning_description=prompt),
        "steps": variant(steps=49),
        "weights": variant(weights_fp=weights_fingerprint(_weights()[:-1])),
        "patches": variant(patches_fp=patches_fingerprint(_patches(strength=0.9))),
        "option value": variant(options={**base["options"], "trajectory": True}),
        "option added": variant(options={**base["options"], "pnp_steps": 40}),
        "option int vs float": variant(options={**base["options"], "pnp": 1.0}),
    }
    variants["option int"] = variant(options={**base["options"], "pnp": 1})
    assert key not in variants.values()
    assert len(set(variants.values())) == len(variants)


def test_key_refuses_inputs_it_cannot_hash():
    with pytest.raises(CacheKeyError, match="options"):
        inversion_cache_key(**{**_inputs(), "options": {"model": object()}})
    with pytest.raises(CacheKeyError, match="conditioning"):
        inversion_cache_key(**{**_inputs(), "conditioning_description": {1, 2}})
    with pytest.raises(CacheKeyError, match="steps"):
        inversion_cache_key(**{**_inputs(), "steps": 0})
    with pytest.raises(CacheKeyError, match="weights_fp"):
        inversion_cache_key(**{**_inputs(), "weights_fp": ""})
    assert issubclass(CacheKeyError, ValueError)


_IN_FRESH_PROCESS = """
import sys, types
package = types.ModuleType("videograin"); package.__path__ = [sys.argv[1]]; sys.modules["videograin"] = package
sys.path.insert(0, sys.argv[2])
import test_cache_key as t
from videograin.sampling.cache.key import inversion_cache_key, patches_fingerprint, weights_fingerprint
print(weights_fingerprint(t._weights()), patches_fingerprint(t._patches()), inversion_cache_key(**t._inputs()))
"""


def test_key_is_the_same_in_a_fresh_process():
    here = pathlib.Path(__file__).parent
    out = subprocess.run([sys.executable, "-c", _IN_FRESH_PROCESS, str(PACK_DIR), str(here)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    expected = [weights_fingerprint(_weights()), patches_fingerprint(_patches()), inversion_cache_key(**_inputs())]
    assert out.stdout.split() == expected
