"""VideoPipeline on the tiny random model: determinism, every mode, context windows, schedulers."""

import numpy as np
import pytest
import torch

from tests.conftest import seeded
from vidldm.errors import VidldmError
from vidldm.frames import tensor_to_frames
from vidldm.models import VideoVAE
from vidldm.models.tiny import tiny_motion_adapter
from vidldm.pipeline import VideoPipeline

SMALL = dict(height=16, width=16, num_inference_steps=3, output_type="np")


def run(pipe, prompt="a red circle moving right", **kw):
    return pipe(prompt, **{**SMALL, "num_frames": 4, "generator": seeded(), **kw}).frames


@torch.no_grad()
def round_trip(pipe, frames_uint8):
    """What the VAE makes of these frames: the best any latent-space method can return."""
    video = torch.from_numpy(frames_uint8).float().div(127.5).sub(1).permute(3, 0, 1, 2)[None]
    vvae = VideoVAE(pipe.vae)
    return ((vvae.decode(vvae.encode(video)) / 2 + 0.5).clamp(0, 1))[0].permute(1, 2, 3, 0).numpy()


def still(seed=3, size=16):
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def test_same_seed_same_frames_different_seed_different(pipe):
    a, b = run(pipe), run(pipe)
    assert np.array_equal(a, b)
    assert a.shape == (1, 4, 16, 16, 3) and a.dtype == np.float32
    assert not np.allclose(a, run(pipe, generator=seeded(1)))


def test_batch_equals_one_by_one(pipe):
    prompts = ["a red circle", "a blue square growing"]
    batch = run(pipe, prompts, generator=[seeded(1), seeded(2)])
    one = run(pipe, prompts[0], generator=seeded(1))
    two = run(pipe, prompts[1], generator=seeded(2))
    np.testing.assert_allclose(batch, np.concatenate([one, two]), atol=1e-5)


def test_output_types(pipe):
    pil = run(pipe, output_type="pil")
    assert len(pil) == 1 and len(pil[0]) == 4 and pil[0][0].size == (16, 16)
    pt = run(pipe, output_type="pt")
    assert pt.shape == (1, 4, 3, 16, 16)
    latents = run(pipe, output_type="latent")
    assert latents.shape == (1, 4, 4, 8, 8)


@torch.no_grad()
def test_temporal_decoder_is_the_models_unless_turned_off(pipe):
    """A model's temporal decoder decodes its clips (the whole clip at once); `temporal_decoder=False` decodes with
    the image VAE frame by frame (the eval's image-model floor); True on a model without one is refused."""
    from vidldm.models import TemporalDecoder
    from vidldm.models.tiny import randomize_

    latents = run(pipe, output_type="latent")
    plain = tensor_to_frames(VideoVAE(pipe.vae).decode(latents))
    np.testing.assert_allclose(run(pipe), plain, atol=1e-5)
    with pytest.raises(VidldmError, match="this model has no temporal decoder"):
        run(pipe, temporal_decoder=True)
    td = TemporalDecoder.from_vae_config(pipe.vae.config)
    randomize_(td, std=0.05)
    pipe.temporal_decoder = td
    try:
        temporal = tensor_to_frames(VideoVAE(pipe.vae, temporal_decoder=td).decode(latents))
        np.testing.assert_allclose(run(pipe), temporal, atol=1e-5)
        assert np.abs(run(pipe) - plain).max() > 1e-3  # the layers do something
        np.testing.assert_allclose(run(pipe, temporal_decoder=False), plain, atol=1e-5)
        # an animated still is a known frame: it comes back as the image decoder draws it, the rest through the layers
        frames = run(pipe, image=still(), image_conditioning="clean")
        alone = run(pipe, image=still(), image_conditioning="clean", temporal_decoder=False)
        np.testing.assert_allclose(frames[:, 0], alone[:, 0], atol=1e-5)
        assert np.abs(frames[:, 1:] - alone[:, 1:]).max() > 1e-3
    finally:
        pipe.temporal_decoder = None


@pytest.mark.parametrize("mode", ["clean", "replace"])
def test_animated_frame0_is_the_image(pipe, mode):
    image = still()
    frames = run(pipe, image=image, image_conditioning=mode)[0]
    expected = round_trip(pipe, image[None])[0]
    np.testing.assert_allclose(frames[0], expected, atol=2e-3)
    assert np.abs(frames[1:] - expected).mean() > 0.01  # the rest is generated, not copies


def test_one_image_per_prompt_animates_each_prompt_from_its_own_still(pipe):
    prompts, images = ["a red circle", "a blue square"], [still(3), still(4)]
    batch = run(pipe, prompts, image=images, image_conditioning="clean", generator=[seeded(1), seeded(2)])
    for i in range(2):
        alone = run(pipe, prompts[i], image=images[i], image_conditioning="clean", generator=seeded(i + 1))
        np.testing.assert_allclose(batch[i], alone[0], atol=1e-5)
    with pytest.raises(VidldmError, match="3 images for 2 prompts"):
        run(pipe, prompts, image=[still(3)] * 3)


def test_clean_mode_uses_per_frame_timesteps(pipe, monkeypatch):
    seen = []
    original = pipe.video_unet.forward

    def spy(sample, timestep, *args, **kwargs):
        seen.append(torch.as_tensor(timestep).clone())
        return original(sample, timestep, *args, **kwargs)

    monkeypatch.setattr(pipe.video_unet, "forward", spy)
    run(pipe, image=still(), image_conditioning="clean")
    assert len(seen) == 3 and all(t.shape == (2, 4) and (t[:, 0] == 0).all() for t in seen)
    assert [int(t[0, 1]) for t in seen] == pipe.scheduler.timesteps.tolist()  # the others follow the schedule
    assert (seen[0][:, 1:] == 999).all()


def test_restyle_strength_zero_returns_input(pipe):
    clip = np.stack([still(s) for s in range(4)])
    out = run(pipe, video=clip, strength=0.0)[0]
    np.testing.assert_allclose(out, round_trip(pipe, clip), atol=2e-3)
    changed = run(pipe, video=clip, strength=0.8)[0]
    assert np.abs(changed - out).mean() > 0.01


def test_extend_keeps_known_frames(pipe):
    clip = np.stack([still(s) for s in range(6)])
    out = run(pipe, video=clip, extend=True, num_frames=6, num_known_frames=2, output_type="latent")
    assert out.shape[2] == 6  # the window: 2 known frames, 4 new
    frames = run(pipe, video=clip, extend=True, num_frames=6, num_known_frames=2)[0]
    assert frames.shape[0] == 6 + 6 - 2  # the input, then the new frames
    np.testing.assert_allclose(frames[:6], clip / 255, atol=1e-6)
    with torch.no_grad():
        decoded = VideoVAE(pipe.vae).decode(out[:, :, :2])
    np.testing.assert_allclose((decoded / 2 + 0.5).clamp(0, 1)[0].permute(1, 2, 3, 0).numpy(),
                               round_trip(pipe, clip[-2:]), atol=2e-3)  # the known frames stay what they were


def test_prompt_travel_uses_each_prompt():
    """With a fresh (identity) adapter frames are independent, so a travelling clip's first
    frame is exactly the first prompt's and its last frame exactly the second prompt's."""
    from vidldm.loading import tiny_pipeline

    base = tiny_pipeline()
    pipe = VideoPipeline(**{**base.components, "motion_adapter": tiny_motion_adapter(base.unet, max_seq_length=16)})
    pipe.set_progress_bar_config(disable=True)
    travel = run(pipe, {0: "a red circle", 3: "a blue square"})[0]
    first = run(pipe, "a red circle")[0]
    last = run(pipe, "a blue square")[0]
    np.testing.assert_allclose(travel[0], first[0], atol=1e-5)
    np.testing.assert_allclose(travel[3], last[3], atol=1e-5)
    assert np.abs(travel[1] - first[1]).mean() > 1e-4 and np.abs(travel[1] - last[1]).mean() > 1e-4


def test_long_clip_uses_context_windows(pipe, monkeypatch):
    frames_seen = []
    original = pipe.video_unet.forward

    def spy(sample, *args, **kwargs):
        frames_seen.append(sample.shape[2])
        return original(sample, *args, **kwargs)

    monkeypatch.setattr(pipe.video_unet, "forward", spy)
    out = pipe("a red circle", num_frames=48, height=8, width=8, num_inference_steps=1, generator=seeded(),
               output_type="latent").frames
    assert out.shape[2] == 48
    assert max(frames_seen) == 16 and len(frames_seen) > 3  # windows of 16, never the whole clip


def test_long_clip_is_blended_across_windows(pipe):
    out = pipe("a red circle", num_frames=24, height=8, width=8, num_inference_steps=2, generator=seeded(),
               output_type="latent", context_overlap=8).frames
    assert torch.isfinite(out).all() and out.shape[2] == 24


@pytest.mark.parametrize("name", ["ddim", "euler", "euler_a", "dpm++", "unipc", "lcm"])  # every name: test_schedulers.py
def test_every_scheduler_runs(pipe, name):
    before = pipe.scheduler
    frames = run(pipe, scheduler=name, num_frames=2)
    assert frames.shape == (1, 2, 16, 16, 3) and np.isfinite(frames).all()
    assert pipe.scheduler is before  # a scheduler named in the call is for that call only


def test_callback_can_replace_latents(pipe):
    calls = []

    def callback(p, i, t, tensors):
        calls.append(i)
        return {"latents": torch.zeros_like(tensors["latents"])}

    run(pipe, callback_on_step_end=callback)
    assert calls == [0, 1, 2]


def test_save_and_load_pipeline_folder(pipe, tmp_path):
    pipe.save_pretrained(tmp_path / "p")
    again = VideoPipeline.from_pretrained(tmp_path / "p")
    again.set_progress_bar_config(disable=True)
    assert np.array_equal(run(pipe), run(again))


def test_a_model_samples_with_its_own_defaults_unless_a_call_says_otherwise(pipe, tmp_path):
    """`generation_defaults` fill the settings a call leaves out, travel with the folder and with `with_parts`."""
    tuned = pipe.with_parts()
    tuned.set_progress_bar_config(disable=True)
    tuned.set_generation_defaults(num_inference_steps=2, guidance_scale=3.0, temporal_end=0.5)
    steps = []

    def count(p, i, t, tensors):
        steps.append(i)

    kept = {k: v for k, v in SMALL.items() if k != "num_inference_steps"}
    left_out = tuned("a red circle", **kept, num_frames=4, generator=seeded(), callback_on_step_end=count).frames
    assert steps == [0, 1]
    spelled_out = run(tuned, "a red circle", num_inference_steps=2, guidance_scale=3.0, temporal_end=0.5)
    assert np.array_equal(left_out, spelled_out)
    assert not np.array_equal(run(tuned, "a red circle", num_inference_steps=2, guidance_scale=7.5), spelled_out)  # the call wins
    assert pipe.generation_defaults == {} and pipe.sampling_defaults()["num_inference_steps"] == 25  # diffusers' own

    tuned.save_pretrained(tmp_path / "p")
    again = VideoPipeline.from_pretrained(tmp_path / "p")
    assert again.generation_defaults == {"num_inference_steps": 2, "guidance_scale": 3.0, "temporal_end": 0.5}
    other = again.with_parts(motion_adapter=tiny_motion_adapter(again.unet))
    assert other.generation_defaults == again.generation_defaults and other.motion_adapter is not again.motion_adapter


@pytest.mark.parametrize(
    "settings, match",
    [
        (dict(steps=20), "unknown sampling setting"),
        (dict(num_inference_steps=2.5), "num_inference_steps must be a whole number"),
        (dict(guidance_scale=-1), "guidance_scale must be at least 0"),
        (dict(temporal_end=1.5), "temporal_end must be between 0 and 1"),
        (dict(guidance_rescale="high"), "must be a number"),
    ],
)
def test_bad_generation_defaults_are_one_line(pipe, settings, match):
    with pytest.raises(VidldmError, match=match):
        pipe.with_parts().set_generation_defaults(**settings)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(height=15), "multiple of 2"),
        (dict(num_frames=0), "at least 1"),
        (dict(num_inference_steps=0), "at least 1"),
        (dict(strength=1.5, video=np.zeros((4, 16, 16, 3), np.uint8)), "strength"),
        (dict(scheduler="bogus"), "unknown scheduler"),
        (dict(output_type="gif"), "output_type"),
        (dict(context_frames=64), "context_frames"),
        (dict(temporal_end=1.5), "temporal_end"),
        (dict(image="/does/not/exist.png"), "does not exist"),
    ],
)
def test_bad_inputs(pipe, kwargs, match):
    with pytest.raises(VidldmError, match=match):
        run(pipe, **kwargs)


def test_precomputed_prompt_embeds_equal_the_prompt(pipe):
    cond, uncond = pipe.encode_text(["a red circle moving right"]), pipe.encode_text([""])
    by_text = run(pipe, output_type="latent")
    by_embeds = run(pipe, None, prompt_embeds=cond, negative_prompt_embeds=uncond, output_type="latent")
    torch.testing.assert_close(by_embeds, by_text, atol=0, rtol=0)
    no_negative = run(pipe, None, prompt_embeds=cond, output_type="latent")  # "" is encoded, as with a prompt
    torch.testing.assert_close(no_negative, by_text, atol=0, rtol=0)


def test_prompt_embeds_are_checked(pipe):
    cond = pipe.encode_text(["a red circle"])
    with pytest.raises(VidldmError, match="either prompt or prompt_embeds"):
        run(pipe, "a red circle", prompt_embeds=cond)
    with pytest.raises(VidldmError, match="prompt_embeds must be a tensor"):
        run(pipe, None, prompt_embeds=cond[..., :8])
    with pytest.raises(VidldmError, match="negative_prompt_embeds must be"):
        run(pipe, None, prompt_embeds=cond, negative_prompt_embeds=cond[:, :3])
    with pytest.raises(VidldmError, match="needs prompt_embeds"):
        run(pipe, "a red circle", negative_prompt_embeds=cond)


def test_guidance_rescale_matches_the_conditional_spread_and_zero_changes_nothing(pipe):
    from vidldm.denoisers import rescale_guidance

    torch.manual_seed(0)
    cond, guided = torch.randn(2, 4, 3, 8, 8), 5 * torch.randn(2, 4, 3, 8, 8)
    full = rescale_guidance(guided, cond, 1.0)
    assert torch.allclose(full.flatten(1).std(dim=1), cond.flatten(1).std(dim=1), rtol=1e-4)
    assert torch.allclose(rescale_guidance(guided, cond, 0.5), (full + guided) / 2)
    np.testing.assert_array_equal(run(pipe, guidance_rescale=0.0), run(pipe))
    assert not np.allclose(run(pipe, guidance_rescale=0.7), run(pipe))
    with pytest.raises(VidldmError, match="guidance_rescale must be between 0 and 1"):
        run(pipe, guidance_rescale=1.5)


def test_temporal_end_runs_temporal_layers_for_the_first_steps_only(pipe, monkeypatch):
    seen = []
    original = pipe.video_unet.forward

    def spy(*args, temporal=True, **kwargs):
        seen.append(temporal)
        return original(*args, temporal=temporal, **kwargs)

    monkeypatch.setattr(pipe.video_unet, "forward", spy)
    for end, expected in ((1.0, [True] * 4), (0.5, [True, True, False, False]), (0.3, [True, False, False, False]),
                          (0.0, [False] * 4)):
        seen.clear()
        run(pipe, num_inference_steps=4, temporal_end=end)
        assert seen == expected, end
    seen.clear()  # known frames sit at t = 0: the switch follows the noisy frames' step
    run(pipe, num_inference_steps=4, temporal_end=0.5, image=still(), image_conditioning="clean")
    assert seen == [True, True, False, False]


def test_temporal_end_zero_is_the_image_model_and_one_changes_nothing(pipe):
    image_model = VideoPipeline(**{**pipe.components, "motion_adapter": tiny_motion_adapter(pipe.unet)})
    image_model.set_progress_bar_config(disable=True)
    torch.testing.assert_close(run(pipe, temporal_end=0.0, output_type="latent"), run(image_model, output_type="latent"),
                               atol=1e-5, rtol=0)
    assert np.array_equal(run(pipe, temporal_end=1.0), run(pipe))
    assert not np.allclose(run(pipe, temporal_end=0.5), run(pipe))
