"""Shared fixtures: tiny SD-shaped models built from configs in code (no downloads)."""

import pytest
import torch

from vidldm.models.tiny import tiny_motion_adapter, tiny_unet, tiny_vae

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def unet():
    return tiny_unet()


@pytest.fixture(scope="session")
def vae():
    return tiny_vae()


@pytest.fixture
def zero_adapter(unet):
    return tiny_motion_adapter(unet)


@pytest.fixture
def random_adapter(unet):
    return tiny_motion_adapter(unet, randomize=True)


def fold(x):
    """(B, C, F, H, W) -> ((B F), C, H, W): the frames of a clip as an image batch."""
    b, c, f, h, w = x.shape
    return x.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w)


@pytest.fixture(scope="session")
def pipe():
    """The tiny random pipeline; tests call it at 16x16 px with a few frames and steps."""
    from vidldm.loading import tiny_pipeline

    p = tiny_pipeline()
    p.set_progress_bar_config(disable=True)
    return p


def _fingerprint(p) -> dict:
    """What a test could leave changed on the shared pipeline: its attributes, each module's weights (which
    tensors, and whether they were written in place), processors and hooks, and the scheduler's config."""
    seen = {}
    for name, value in sorted(vars(p).items()):
        if isinstance(value, torch.nn.Module):
            # a tensor's version counter rises on every in-place write (load_state_dict, fuse_lora, optimizers)
            seen[name] = (type(value).__name__, tuple((k, t.dtype, t.device, t.shape, t.data_ptr(), t._version)
                                                       for k, t in value.state_dict(keep_vars=True).items()),
                          tuple(sorted(type(m.processor).__name__ for m in value.modules() if hasattr(m, "processor"))),
                          sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + hasattr(m, "_hf_hook")
                              for m in value.modules()))
        elif name in ("scheduler", "_internal_dict"):  # diffusers' save_pretrained adds "_"-keys (metadata)
            config = value.config if name == "scheduler" else value
            seen[name] = (type(value).__name__, repr({k: v for k, v in config.items() if not k.startswith("_")}))
        else:
            seen[name] = repr(value)[:2000]
    return seen


_RUN_STATE = {"_num_timesteps", "_video_unet"}  # the last call's step count; a cache built on the first call


def _changed(before: dict, after: dict) -> list[str]:
    """The attributes two fingerprints disagree on, beyond the last call's own state."""
    return sorted(k for k in (before.keys() | after.keys()) - _RUN_STATE if before.get(k, "None") != after.get(k))


@pytest.fixture(autouse=True)
def _pipe_left_as_found(request):
    """A test that changes the session's `pipe` and does not put it back fails here, naming what it changed: the
    later tests that share it would otherwise fail far from the cause, and only in the full suite's order."""
    if "pipe" not in request.fixturenames:
        yield
        return
    p = request.getfixturevalue("pipe")
    before = _fingerprint(p)
    yield
    after = _fingerprint(p)
    changed = _changed(before, after)
    if changed:
        pytest.fail(f"the test changed the shared `pipe` and left it so: {changed}; use pipe.with_parts() or undo it")


def seeded(seed=0):
    return torch.Generator().manual_seed(seed)
