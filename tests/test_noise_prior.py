"""Noise priors across frames (PYoCo): the statistics, the pipeline's and the model's use, the training switch."""

import math

import pytest
import torch
import yaml

from tests.conftest import seeded
from vidldm import noise_prior, sampling_settings
from vidldm.errors import VidldmError
from vidldm.noise_prior import correlate
from vidldm.train.config import load_config


def frame_stats(prior, strength):
    z = torch.randn(40000, 1, 8, 1, 1, generator=seeded(3))
    e = correlate(z, prior, strength).reshape(40000, 8)
    return e.var(dim=0), torch.corrcoef(e.T)


def test_independent_is_the_draw_itself():
    z = torch.randn(1, 4, 6, 2, 2)
    assert correlate(z) is z
    assert correlate(z, "mixed", 0.0) is z


@pytest.mark.parametrize("strength", [0.5, 1.0, 2.0])
def test_mixed_keeps_unit_variance_and_shares_alpha_squared_over_one_plus_alpha_squared(strength):
    var, corr = frame_stats("mixed", strength)
    rho = strength**2 / (1 + strength**2)
    assert torch.allclose(var, torch.ones(8), atol=0.03)
    off = corr[~torch.eye(8, dtype=torch.bool)]
    assert torch.allclose(off, torch.full_like(off, rho), atol=0.02)


def test_progressive_correlation_decays_with_frame_distance():
    var, corr = frame_stats("progressive", 1.0)
    keep = 1 / math.sqrt(2)
    assert torch.allclose(var, torch.ones(8), atol=0.03)
    for k in (1, 2, 4):
        assert corr[0, k].item() == pytest.approx(keep**k, abs=0.02)


def test_the_settings_table_names_the_same_priors():
    assert sampling_settings.NOISE_PRIORS == noise_prior.NOISE_PRIORS


def test_unknown_prior_is_refused():
    with pytest.raises(ValueError, match="noise prior"):
        correlate(torch.randn(1, 1, 2, 1, 1), "pink")


def clip(pipe, **kwargs):
    return pipe("a red circle", num_frames=4, height=16, width=16, num_inference_steps=2, output_type="pt",
                generator=seeded(0), **kwargs).frames


def test_pipeline_prior_default_is_unchanged_and_a_prior_changes_the_start(pipe):
    plain = clip(pipe)
    assert torch.equal(plain, clip(pipe, noise_prior="independent"))
    mixed = clip(pipe, noise_prior="mixed", noise_prior_strength=2.0)
    assert not torch.equal(plain, mixed)


def test_a_model_samples_with_its_own_prior(pipe):
    own = pipe.with_parts()
    own.set_generation_defaults(noise_prior="progressive", noise_prior_strength=1.5)
    assert torch.equal(clip(own), clip(pipe, noise_prior="progressive", noise_prior_strength=1.5))
    assert torch.equal(clip(own, noise_prior="independent"), clip(pipe))


def test_given_latents_are_used_as_they_are(pipe):
    latents = torch.randn(1, 4, 4, 2, 2, generator=seeded(1))
    assert torch.equal(clip(pipe, latents=latents), clip(pipe, latents=latents, noise_prior="mixed"))


def test_free_init_restarts_draw_their_new_noise_with_the_prior():
    """FreeInit's restarts replace the high frequencies with new noise: a model trained on a prior gets it there too
    (with every frequency replaced, the restart is the new noise alone, so its frames correlate as the prior says)."""
    from diffusers import DDIMScheduler

    from vidldm.free_init import FreeInit

    every = FreeInit(num_iters=2, spatial_stop_frequency=0.0)  # low pass all zero: nothing of the last run is kept
    shape, scheduler = (3000, 1, 6, 1, 1), DDIMScheduler()
    latents, noise = torch.zeros(shape), torch.zeros(shape)
    fresh = every.restart(latents, noise, scheduler, seeded(5), ("mixed", 1.0)).reshape(3000, 6)
    off_diagonal = torch.corrcoef(fresh.T)[~torch.eye(6, dtype=torch.bool)]
    assert off_diagonal.mean() == pytest.approx(0.5, abs=0.05)  # a^2 / (1 + a^2) at a = 1
    plain = every.restart(latents, noise, scheduler, seeded(5))
    assert torch.equal(plain, every.restart(latents, noise, scheduler, seeded(5), ("independent", 0.0)))
    assert torch.corrcoef(plain.reshape(3000, 6).T)[0, 1].abs() < 0.1


def test_pipeline_refuses_a_bad_prior_by_its_python_name(pipe):
    with pytest.raises(VidldmError, match="noise_prior"):
        clip(pipe, noise_prior="pink")
    with pytest.raises(VidldmError, match="noise_prior_strength"):
        clip(pipe, noise_prior="mixed", noise_prior_strength=-1.0)


def write_recipe(tmp_path, stage="temporal", **train):
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump({
        "stage": stage, "output_dir": str(tmp_path / "run"), "model": {"pretrained": "tiny"},
        "data": {"root": str(tmp_path), "num_frames": 4, "height": 16, "width": 16},
        "train": {"max_steps": 1, **train}}))
    return path


def test_a_recipe_trained_on_a_prior_saves_it_as_the_models_sampling_default(tmp_path):
    config = load_config(write_recipe(tmp_path, noise_prior="mixed", noise_prior_strength=0.5))
    assert config.sampling["noise_prior"] == "mixed" and config.sampling["noise_prior_strength"] == 0.5
    assert "noise_prior" not in load_config(write_recipe(tmp_path)).sampling


@pytest.mark.parametrize("train, stage, message", [
    ({"noise_prior": "pink"}, "temporal", "noise_prior must be one of"),
    ({"noise_prior": "mixed", "noise_prior_strength": -1}, "temporal", "noise_prior_strength"),
    ({"noise_prior": "mixed"}, "image", "temporal stage"),
])
def test_bad_training_priors_are_refused(tmp_path, train, stage, message):
    with pytest.raises(VidldmError, match=message):
        load_config(write_recipe(tmp_path, stage=stage, **train))


def test_temporal_stage_trains_on_the_prior(tmp_path):
    from vidldm.train.stages import TemporalStage

    config = load_config(write_recipe(tmp_path, noise_prior="mixed", noise_prior_strength=3.0))
    stage = TemporalStage.__new__(TemporalStage)  # only the noise: no models needed
    stage.config = config
    z = torch.randn(2000, 1, 4, 1, 1, generator=seeded(0))
    e = stage.correlate(z).reshape(2000, 4)
    assert torch.corrcoef(e.T)[0, 3].item() == pytest.approx(0.9, abs=0.03)
