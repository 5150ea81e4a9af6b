"""The node layer's inversion cache key (nodes/inversion_cache.py) on stand-in models: it reads content,
not identity, and changes with every input that changes an inversion."""
import collections
import pathlib
import sys
import types

import pytest
import torch

if "videograin.nodes" not in sys.modules:  # skip nodes/__init__.py: it registers every node (needs ComfyUI)
    _pkg = types.ModuleType("videograin.nodes")
    _pkg.__path__ = [str(pathlib.Path(__file__).resolve().parents[2] / "nodes")]
    sys.modules["videograin.nodes"] = _pkg

from videograin.attention.patch import SpaceTimeSelfAttention  # noqa: E402
from videograin.attention.windows import WINDOWS_KEY, TemporalWindows  # noqa: E402
from videograin.nodes import inversion_cache as ic  # noqa: E402
from videograin.sampling.cache import CacheKeyError  # noqa: E402

Backup = collections.namedtuple("Dimension", ["weight", "inplace_update"])


class Net(torch.nn.Module):
    def __init__(self, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.lin = torch.nn.Linear(8, 8)
        with torch.no_grad():
            self.lin.weight.copy_(torch.randn(8, 8, generator=g))
            self.lin.bias.copy_(torch.randn(8, generator=g))

    def get_dtype(self):
        return torch.float32


class FakeControlNet:
    def __init__(self, hint, strength=1.0, seed=1, previous=None):
        self.cond_hint_original, self.strength = hint, strength
        self.timestep_percent_range = (0.0, 1.0)
        self.control_model = Net(seed)
        self.previous_controlnet = previous


def model(seed=0, patches=None, options=None, backup=None):
    return types.SimpleNamespace(model=Net(seed), patches=patches or {}, backup=backup or {},
                                 object_patches={}, model_options={"transformer_options": dict(options or {})})


def cond(text_seed=0, **extra):
    return [[torch.randn(1, 77, 16, generator=torch.Generator().manual_seed(text_seed)), dict(extra)]]


LATENT = torch.arange(2 * 4 * 4 * 4, dtype=torch.float32).reshape(2, 4, 4, 4)
SIGMAS = torch.tensor([14.6, 1.0, 0.0])


def key(m=None, positive=None, latent=LATENT, steps=2, sigmas=SIGMAS):
    return ic.inversion_key(m or model(), positive or cond(), latent, steps, sigmas)[0]


def test_key_reads_content_not_identity():
    hint = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    a = key(model(), cond(control=FakeControlNet(hint.clone())))
    b = key(model(), cond(control=FakeControlNet(hint.clone())))  # new objects, equal content
    assert a == b and len(a) == 64


@pytest.mark.parametrize("change", ["latent", "steps", "sigmas", "prompt", "weights", "lora", "lora_strength",
                                    "windows", "foreign_patch", "cn_strength", "cn_hint", "cn_weights",
                                    "cn_range", "cn_previous"])
def test_key_changes_with_each_input(change):
    hint = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    lora = {"lin.weight": [(1.0, ("diff", (torch.ones(8, 8),)), 1.0, None, None)]}
    base = dict(m=model(patches=lora), positive=cond(control=FakeControlNet(hint)))
    variant = dict(base)
    if change == "latent":
        variant["latent"] = LATENT + 1e-3
    elif change == "steps":
        variant["steps"] = 3
    elif change == "sigmas":
        variant["sigmas"] = SIGMAS * 1.01
    elif change == "prompt":
        variant["positive"] = cond(1, control=FakeControlNet(hint))
    elif change == "weights":
        variant["m"] = model(seed=9, patches=lora)
    elif change == "lora":
        variant["m"] = model()
    elif change == "lora_strength":
        variant["m"] = model(patches={"lin.weight": [(0.5, ("diff", (torch.ones(8, 8),)), 1.0, None, None)]})
    elif change == "windows":
        variant["m"] = model(patches=lora, options={WINDOWS_KEY: TemporalWindows(window=8, overlap=2, anchors=1)})
    elif change == "foreign_patch":
        variant["m"] = model(patches=lora, options={"patches": {"attn1_patch": [torch.nn.functional.relu]}})
    else:
        cn = {"cn_strength": lambda: FakeControlNet(hint, strength=0.5),
              "cn_hint": lambda: FakeControlNet(hint + 0.01),
              "cn_weights": lambda: FakeControlNet(hint, seed=2),
              "cn_previous": lambda: FakeControlNet(hint, previous=FakeControlNet(hint, seed=3))}.get(change)
        if change == "cn_range":
            c = FakeControlNet(hint)
            c.timestep_percent_range = (0.0, 0.5)
        else:
            c = cn()
        variant["positive"] = cond(control=c)
    assert key(**base) != key(**variant)


def test_windows_of_different_settings_differ_and_equal_settings_agree():
    w = lambda **kw: model(options={WINDOWS_KEY: TemporalWindows(**kw)})  # noqa: E731
    assert key(w(window=8, overlap=2, anchors=1)) == key(w(window=8, overlap=2, anchors=1))
    assert key(w(window=8, overlap=2, anchors=1)) != key(w(window=8, overlap=4, anchors=1))


def test_weights_patched_in_place_are_read_through_the_backup():
    clean = model()
    patched = model()
    original = patched.model.lin.weight.detach().clone()
    with torch.no_grad():
        patched.model.lin.weight.add_(1.0)  # what ComfyUI does while a LoRA model is loaded
    patched.backup = {"lin.weight": Backup(original, False)}
    assert key(clean) == key(patched)


def test_pack_state_and_own_attention_patches_do_not_change_the_key():
    plain = model()
    patched = model(options={"patches_replace": {"attn1": {("input", 1): SpaceTimeSelfAttention()}},
                             "videograin_recorder": object(), "videograin": object()})
    assert key(plain) == key(patched)


def test_unreadable_weights_raise_cache_key_error():
    m = model()
    m.model = Net().to("meta")
    with pytest.raises(CacheKeyError):
        key(m)


def test_cache_folder_env_overrides(monkeypatch, tmp_path):
    monkeypatch.setenv(ic.CACHE_ENV, str(tmp_path / "c"))
    assert ic.cache_folder() == tmp_path / "c"


def test_trajectory_attention_is_part_of_the_key():
    """Trajectories change the inversion (docs/design.md §10.1), so their content keys the cache."""
    from videograin.attention.trajectory import TRAJECTORIES_KEY
    from videograin.motion.trajectories import build_trajectories

    def with_flow(shift: float):
        flow = torch.zeros(2, 64, 64, 2)
        flow[..., 0] = shift
        traj = build_trajectories(flow, (64, 64), [(8, 8)], seed=0)
        return model(options={TRAJECTORIES_KEY: traj})

    assert key(with_flow(0.0)) == key(with_flow(0.0))
    assert key(with_flow(0.0)) != key(with_flow(8.0)) != key(model())
