"""`temporal_smoothing`: a symmetric low-pass over time on the sampled latents, frames the user gave kept."""

import pytest
import torch

from vidldm.errors import VidldmError
from vidldm.sampling_settings import BY_NAME
from vidldm.temporal_smoothing import smooth_over_time


def test_zero_is_the_identity_and_a_constant_rate_passes_unchanged():
    x = torch.randn(2, 4, 8, 3, 3)
    assert smooth_over_time(x, 0.0) is x
    ramp = torch.arange(8.0).view(1, 1, 8, 1, 1).expand(1, 4, 8, 3, 3) * 0.7 + 2
    out = smooth_over_time(ramp, 0.2)
    assert torch.allclose(out[:, :, 1:-1], ramp[:, :, 1:-1])  # inside the clip: linear in time is kept
    assert torch.allclose(out[:, :, 0], 0.8 * ramp[:, :, 0] + 0.2 * ramp[:, :, 1])  # the ends repeat beyond the clip


def test_a_one_frame_jump_is_spread_over_its_neighbours():
    x = torch.zeros(1, 1, 7, 1, 1)
    x[0, 0, 3] = 1.0
    out = smooth_over_time(x, 0.25).flatten()
    assert out.tolist() == pytest.approx([0, 0, 0.25, 0.5, 0.25, 0, 0])
    assert out.sum().item() == pytest.approx(1.0)


def test_frames_the_user_gave_are_kept_and_still_count_as_neighbours():
    x = torch.randn(1, 4, 6, 2, 2)
    out = smooth_over_time(x, 0.3, keep=[0, 5, 5])
    assert torch.equal(out[:, :, 0], x[:, :, 0]) and torch.equal(out[:, :, 5], x[:, :, 5])
    assert torch.allclose(out[:, :, 1], 0.3 * x[:, :, 0] + 0.4 * x[:, :, 1] + 0.3 * x[:, :, 2])


def test_a_weight_out_of_range_is_refused_and_the_public_check_has_the_same_bound():
    with pytest.raises(ValueError, match="from 0 to 1/3"):
        smooth_over_time(torch.zeros(1, 1, 3, 1, 1), 0.34)
    setting = BY_NAME["temporal_smoothing"]
    setting.check(1 / 3, "--temporal-smoothing")  # the CLI, sidecars and the call accept what the function takes
    smooth_over_time(torch.zeros(1, 1, 3, 1, 1), 1 / 3)
    with pytest.raises(VidldmError, match="--temporal-smoothing must be between 0 and 0.333"):
        setting.check(0.34, "--temporal-smoothing")


def _latents(pipe, **kwargs):
    return pipe("a square", num_frames=5, height=16, width=16, num_inference_steps=2, output_type="latent",
                generator=torch.Generator().manual_seed(0), **kwargs).frames


def test_the_pipeline_smooths_what_it_made_from_the_call_or_the_models_default():
    from vidldm.builtins import tiny_pipeline

    pipe = tiny_pipeline()
    pipe.set_progress_bar_config(disable=True)
    raw = _latents(pipe)  # the fallback is 0: diffusers' behaviour, nothing smoothed
    assert torch.allclose(_latents(pipe, temporal_smoothing=0.2), smooth_over_time(raw, 0.2), atol=1e-6)
    pipe.set_generation_defaults(temporal_smoothing=0.2)  # as a model's sampling.json may
    assert torch.allclose(_latents(pipe), smooth_over_time(raw, 0.2), atol=1e-6)
    assert torch.allclose(_latents(pipe, temporal_smoothing=0.0), raw, atol=1e-6)
    still = torch.full((16, 16, 3), 200, dtype=torch.uint8).numpy()
    plain = _latents(pipe, image=still, temporal_smoothing=0.0)
    assert torch.allclose(_latents(pipe, image=still), smooth_over_time(plain, 0.2, keep=[0]), atol=1e-6)
    with pytest.raises(VidldmError, match="temporal_smoothing"):
        _latents(pipe, temporal_smoothing=0.5)
