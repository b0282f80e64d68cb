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


def seeded(seed=0):
    return torch.Generator().manual_seed(seed)
