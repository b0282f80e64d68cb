"""Training: the temporal stage learns and freezes the rest, resume is exact, bad files and configs are handled."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

from vidldm.errors import VidldmError
from vidldm.io import write_video
from vidldm.loading import load_pipeline
from vidldm.train.config import load_config
from vidldm.train.trainer import Trainer

ENV = {**os.environ, "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "2"}


def moving_square(n_frames, size=16, seed=0):
    rng = np.random.default_rng(seed)
    colour = rng.integers(60, 255, 3)
    frames = np.zeros((n_frames, size, size, 3), np.uint8)
    for i in range(n_frames):
        x = (2 + i) % (size - 5)
        frames[i, 5:10, x:x + 5] = colour
    return frames


@pytest.fixture(scope="module")
def video_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    rows = []
    for i in range(4):
        write_video(moving_square(8, seed=i), root / f"clip{i}.mp4", fps=8)
        rows.append(f"clip{i}.mp4,a square moving right number {i}")
    (root / "broken.mp4").write_bytes(os.urandom(2048))
    write_video(moving_square(2), root / "short.mp4", fps=8)
    rows += ["broken.mp4,a broken file", "short.mp4,a too short clip"]
    (root / "captions.csv").write_text("path,caption\n" + "\n".join(rows) + "\n")
    return root


def recipe(tmp_path, root, **sections):
    config = {
        "stage": "temporal",
        "output_dir": str(tmp_path / "run"),
        "model": {"pretrained": "tiny"},
        "data": {"root": str(root), "num_frames": 4, "height": 16, "width": 16, "stride": 1},
        "train": {"batch_size": 2, "max_steps": 20, "learning_rate": 1e-3, "warmup_steps": 2,
                  "caption_dropout": 0.1, "frame_conditioning": 0.5, "max_known_frames": 2},
        "checkpoint": {"every": 10, "keep": 2},
        "log": {"every": 1, "tensorboard": False},
    }
    for key, value in sections.items():
        config[key] = {**config.get(key, {}), **value} if isinstance(value, dict) else value
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def fixed_loss(trainer, batch):
    """The stage loss on one batch with fixed noise/timesteps (several draws): comparable before and after."""
    trainer.stage.eval()
    with torch.no_grad():
        return float(np.mean([trainer.stage(batch, torch.Generator().manual_seed(s)).item() for s in range(8)]))


def snapshot(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_temporal_stage_learns_and_freezes_everything_else(tmp_path, video_folder):
    config = load_config(recipe(tmp_path, video_folder, train={"caption_dropout": 0.0, "learning_rate": 3e-3}))
    trainer = Trainer(config)
    pipe = trainer.pipe
    frozen = {name: snapshot(getattr(pipe, name)) for name in ("unet", "vae", "text_encoder")}
    adapter_before = snapshot(pipe.motion_adapter)
    batch = trainer.data.next()
    trainer.data.load_state({"epoch": 0, "batch": 0})
    before = fixed_loss(trainer, batch)
    trainer.stage.train()
    summary = trainer.train()
    after = fixed_loss(trainer, batch)
    losses = [json.loads(line)["loss"] for line in (Path(config.output_dir) / "log.jsonl").read_text().splitlines()]
    assert len(losses) == 20 and all(np.isfinite(losses))
    assert after < 0.75 * before, (before, after)
    for name, state in frozen.items():
        for key, value in getattr(pipe, name).state_dict().items():
            assert torch.equal(value, state[key]), f"{name}.{key} changed"
    assert any(not torch.equal(v, adapter_before[k]) for k, v in pipe.motion_adapter.state_dict().items())
    assert summary["clips_per_s"] > 0
    # bad files were skipped and counted, not fatal
    assert set(map(lambda p: Path(p).name, trainer.dataset.skipped)) == {"broken.mp4", "short.mp4"}

    # the final pipeline folder loads and generates; the adapter knows it was trained with frame conditioning
    from vidldm.loading import load_pipeline

    loaded = load_pipeline(Path(config.output_dir) / "pipeline", device="cpu")
    assert loaded.motion_adapter.config.frame_conditioning is True
    loaded.set_progress_bar_config(disable=True)
    frames = loaded("a square moving right", num_frames=4, height=16, width=16, num_inference_steps=2, output_type="np").frames
    assert frames.shape == (1, 4, 16, 16, 3)
    adapter = load_file(str(Path(config.output_dir) / "motion_adapter" / "diffusion_pytorch_model.safetensors"))
    for key, value in pipe.motion_adapter.state_dict().items():
        assert torch.equal(adapter[key], value)


def _train(recipe_path, *extra):
    proc = subprocess.run([sys.executable, "-m", "vidldm", "train", str(recipe_path), *extra],
                          capture_output=True, text=True, env=ENV, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_stop_and_resume_in_a_new_process_is_exact(tmp_path, video_folder):
    common = dict(train={"ema_decay": 0.9})
    (tmp_path / "a").mkdir()
    stopped = recipe(tmp_path / "a", video_folder, **common)
    _train(stopped, "--stop-after", "10")
    run = tmp_path / "a" / "run"
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["step-000010"]
    assert not (run / "pipeline").exists()
    # --export saves the stopped run's model (its EMA weights) elsewhere, without training
    checkpoint = run / "checkpoints" / "step-000010"
    _train(stopped, "--resume", str(checkpoint), "--export", "--set", f"output_dir={tmp_path / 'exported'}")
    from vidldm.models.motion import MotionAdapter

    exported = MotionAdapter.from_pretrained(str(tmp_path / "exported" / "motion_adapter"))
    ema = load_file(str(checkpoint / "ema.safetensors"))
    assert exported.config.frame_conditioning is True
    for i, p in enumerate(exported.parameters()):
        assert torch.equal(p.detach(), ema[f"shadow.{i}"]), i
    assert (tmp_path / "exported" / "pipeline" / "model_index.json").exists()
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-000010"]  # nothing trained or saved
    _train(stopped, "--resume", "latest")
    (tmp_path / "b").mkdir()
    whole = recipe(tmp_path / "b", video_folder, **common)
    _train(whole)
    resumed = load_file(str(run / "motion_adapter" / "diffusion_pytorch_model.safetensors"))
    straight = load_file(str(tmp_path / "b" / "run" / "motion_adapter" / "diffusion_pytorch_model.safetensors"))
    assert resumed.keys() == straight.keys()
    for key in resumed:
        assert torch.equal(resumed[key], straight[key]), key
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-000010", "step-000020"]


def test_two_processes_with_accelerate(tmp_path, video_folder):
    path = recipe(tmp_path, video_folder, train={"batch_size": 1, "max_steps": 2}, checkpoint={"every": 2})
    # accelerate's --cpu flag picks its single-process launcher; DDP on CPU (gloo) is --multi_gpu + ACCELERATE_USE_CPU.
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "vidldm", "train", str(path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**ENV, "ACCELERATE_USE_CPU": "1"}, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ckpt = tmp_path / "run" / "checkpoints" / "step-000002"
    assert sorted(p.name for p in ckpt.iterdir()) == [
        "optimizer.pt", "rng-0.safetensors", "rng-1.safetensors", "scheduler.pt", "state.json", "weights.safetensors"]
    assert json.loads((ckpt / "state.json").read_text())["processes"] == 2


@pytest.mark.parametrize("stage, part", [("image", "unet"), ("vae", "vae"), ("decoder", "temporal_decoder")])
def test_other_stages_train_only_their_part(tmp_path, video_folder, stage, part):
    config = load_config(recipe(tmp_path, video_folder, stage=stage, train={"max_steps": 2}, checkpoint={"every": 100}))
    trainer = Trainer(config)
    names = {n.split(".")[0] for n, p in trainer.stage.named_parameters() if p.requires_grad}
    assert names == {part}
    trainer.train()
    assert (Path(config.output_dir) / part / "config.json").exists()


def test_foreground_mask_finds_the_object_on_a_plain_background():
    from vidldm.train.stages import foreground_mask

    frames = torch.full((2, 3, 16, 16), -0.8)
    frames[0, :, 4:8, 9:13] = torch.tensor([0.9, -0.5, -0.5])[:, None, None]
    mask = foreground_mask(frames)
    assert mask.shape == (2, 1, 16, 16)
    assert mask[0, 0, 4:8, 9:13].all() and mask[0].sum() == 16
    assert mask[1].sum() == 0  # nothing but background


def test_latent_foreground_mask_covers_the_object_and_its_outline():
    from vidldm.train.stages import latent_foreground_mask

    latents = 0.1 * torch.randn(3, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    latents[0, 2, 5:8, 9:11] += 2.0  # an object, 3 x 2 cells
    latents[1] += 1.5  # a plain frame whose background sits off zero
    mask = latent_foreground_mask(latents)
    assert mask.shape == (3, 1, 16, 16)
    assert mask[0, 0, 4:9, 8:12].all() and mask[0].sum() == 20  # the object grown by one cell
    assert mask[1].sum() == 0 and mask[2].sum() == 0


@pytest.mark.parametrize("stage", ["temporal", "image"])
def test_foreground_weight_moves_latent_losses_toward_the_object(tmp_path, video_folder, stage):
    """Weights are normalised per frame: an error on the object alone counts more, one on the background less."""
    config = load_config(recipe(tmp_path, video_folder, stage=stage, train={"max_steps": 1, "foreground_weight": 4.0}))
    trainer = Trainer(config)
    latents = torch.zeros(2, 4, 16, 16)
    latents[:, :, 4:8, 4:8] = 3.0
    on_object, on_background = torch.zeros_like(latents), torch.zeros_like(latents)
    on_object[:, :, 5:7, 5:7] = 1.0
    on_background[:, :, 12:14, 12:14] = 1.0
    stage_ = trainer.stage
    plain_object, plain_background = on_object.mean(dim=(1, 2, 3)), on_background.mean(dim=(1, 2, 3))
    assert (stage_.weighted_mean(on_object, latents) > 2 * plain_object).all()
    assert (stage_.weighted_mean(on_background, latents) < plain_background).all()
    assert torch.allclose(stage_.weighted_mean(torch.ones_like(latents), latents), torch.ones(2))  # the scale is kept
    trainer.train()


def test_flicker_loss_sees_errors_that_change_between_frames(tmp_path, video_folder):
    """`train.flicker_weight`: an error the same in every frame costs nothing extra, one that alternates between
    frames does; frames known at t = 0 (left out of the loss) are left out of the pairs too; the stage trains."""
    config = load_config(recipe(tmp_path, video_folder, stage="temporal", train={"max_steps": 1, "flicker_weight": 2.0}))
    trainer = Trainer(config)
    stage = trainer.stage
    latents = torch.zeros(1, 4, 6, 8, 8)
    t = torch.tensor([500])
    everywhere = torch.ones(1, 6)
    steady = torch.ones_like(latents)
    alternating = steady * torch.tensor([1.0, -1.0] * 3).view(1, 1, 6, 1, 1)
    assert stage.flicker(steady, latents, everywhere, t) == 0
    assert stage.flicker(alternating, latents, everywhere, t) > 0
    # Same per-frame loss, so the plain loss cannot tell them apart.
    assert torch.allclose(stage.masked_mean(steady, latents, everywhere, t), stage.masked_mean(alternating, latents, everywhere, t))
    known_first = torch.tensor([[0.0, 1, 1, 1, 1, 1]])
    jump_at_known = steady.clone()
    jump_at_known[:, :, 0] = -5.0  # a known frame's (meaningless) error
    assert stage.flicker(jump_at_known, latents, known_first, t) == 0
    trainer.train()


def test_size_loss_sees_the_object_drifting_in_size_over_the_clip(tmp_path, video_folder):
    """`train.size_weight`: an error that adds more of the object's colour around it frame after frame (a slow
    drift, which the flicker term hardly sees) costs; the same error in every frame, an error off the object's
    colour, and frames known at t = 0 cost nothing; the stage trains."""
    config = load_config(recipe(tmp_path, video_folder, stage="temporal", train={"max_steps": 1, "size_weight": 5.0}))
    trainer = Trainer(config)
    stage = trainer.stage
    latents = torch.zeros(1, 4, 8, 8, 8)
    latents[:, 0, :, 3:5, 3:5] = 2.0  # the object: 2x2 cells, its colour along channel 0
    t, everywhere = torch.tensor([500]), torch.ones(1, 8)
    ring = torch.zeros_like(latents)
    ring[:, 0, :, 2:6, 2:6] = 1.0
    ring[:, 0, :, 3:5, 3:5] = 0.0  # growth: object colour in the cells around it
    drift = ring * torch.linspace(0, 0.7, 8).view(1, 1, 8, 1, 1)
    steady = ring * 0.5
    other_colour = drift.roll(1, dims=1)  # the same drift along a channel that is not the object's
    assert stage.size_drift(drift, latents, everywhere, t) > 0
    assert stage.size_drift(steady, latents, everywhere, t) == 0
    assert stage.size_drift(other_colour, latents, everywhere, t) == 0
    # The drift changes by 0.1 a frame: the flicker term, on frame-to-frame changes, sees a small part of it.
    assert stage.size_drift(drift, latents, everywhere, t) > 10 * stage.flicker(drift, latents, everywhere, t)
    known_ends = torch.tensor([[0.0, 1, 1, 1, 1, 1, 1, 0]])
    jump_at_known = steady.clone()
    jump_at_known[:, :, [0, 7]] *= 4  # known frames' (meaningless) errors
    assert stage.size_drift(jump_at_known, latents, known_ends, t) == 0
    trainer.train()


@pytest.mark.parametrize("stage_name", ["temporal", "image"])
def test_input_perturbation_moves_the_input_not_the_target(tmp_path, video_folder, stage_name):
    """`train.input_perturbation`: the model's input is noised with `noise + g * xi`, the target stays `noise`
    (Ning et al. 2023); 0 leaves the input exactly as `add_noise` makes it and draws nothing more; the stage trains."""
    config = load_config(recipe(tmp_path, video_folder, stage=stage_name, train={"max_steps": 1, "input_perturbation": 0.1}))
    trainer = Trainer(config)
    stage = trainer.stage
    noise = torch.randn(2, 4, 3, 8, 8)
    moved = stage.input_noise(noise, torch.Generator().manual_seed(0))
    assert 0.05 < (moved - noise).std() < 0.15  # g = 0.1 of unit noise
    stage.config.train.input_perturbation = 0.0
    generator = torch.Generator().manual_seed(0)
    assert stage.input_noise(noise, generator) is noise
    assert torch.equal(generator.get_state(), torch.Generator().manual_seed(0).get_state())
    stage.config.train.input_perturbation = 0.1
    if stage_name == "temporal":
        batch = {"latents": torch.randn(1, 4, 6, 8, 8), "caption": ["a red circle moving right on a black background"]}
        latents, _, noise, t, noisy, target, _ = stage.noised(batch, torch.Generator().manual_seed(1))
        assert torch.equal(target, stage.target(latents, noise, t))
        assert not torch.allclose(noisy, stage.noise_scheduler.add_noise(latents, noise, t))
    trainer.train()


def test_input_perturbation_refuses_the_snr_floor_on_epsilon_models(tmp_path, video_folder):
    """With epsilon prediction the floor weighs an error by 1/SNR at high noise, so the perturbation's unlearnable
    error would swamp the loss (recipe 3o measured a loss 6x 3j's from the first step): a one-line refusal."""
    config = load_config(recipe(tmp_path, video_folder, train={"input_perturbation": 0.1, "snr_floor": 1.0}))
    with pytest.raises(VidldmError, match="set train.snr_floor: null"):
        Trainer(config)
    Trainer(load_config(recipe(tmp_path, video_folder, train={"input_perturbation": 0.1, "snr_gamma": 5.0})))


def test_vae_stage_crops_are_centred_on_the_object_and_weighted(tmp_path, video_folder):
    from vidldm.train.stages import foreground_mask

    config = load_config(recipe(tmp_path, video_folder, stage="vae", checkpoint={"every": 100},
                                train={"max_steps": 2, "crop_size": 8, "foreground_weight": 10.0}))
    trainer = Trainer(config)
    stage = trainer.stage
    frames = torch.full((6, 3, 16, 16), -0.8)
    frames[:, :, 10:14, 1:5] = 0.7
    stage.centred_crops = 1.0
    crops, masks = stage.crop(frames, foreground_mask(frames), 8, torch.Generator().manual_seed(0))
    assert crops.shape == (6, 3, 8, 8) and masks.shape == (6, 1, 8, 8)
    assert (masks.sum(dim=(1, 2, 3)) > 0).all()  # every centred crop holds part of the object
    assert ((crops > 0).all(dim=1, keepdim=True) == (masks > 0)).all()
    trainer.train()  # and the stage trains end to end with them
    assert (Path(config.output_dir) / "vae" / "config.json").exists()


def test_vae_stage_with_frozen_encoder_keeps_the_latents(tmp_path, video_folder):
    config = load_config(recipe(tmp_path, video_folder, stage="vae", checkpoint={"every": 100},
                                train={"max_steps": 2, "learning_rate": 1e-2, "freeze_encoder": True}))
    trainer = Trainer(config)
    vae = trainer.pipe.vae
    encoder = {k: v.clone() for k, v in vae.encoder.state_dict().items()}
    decoder = {k: v.clone() for k, v in vae.decoder.state_dict().items()}
    factor = vae.config.scaling_factor
    trainer.train()
    assert all(torch.equal(v, vae.encoder.state_dict()[k]) for k, v in encoder.items())
    assert not all(torch.equal(v, vae.decoder.state_dict()[k]) for k, v in decoder.items())
    assert vae.config.scaling_factor == factor  # a latent cache made before stays valid


def test_decoder_stage_latent_noise_jitters_the_latents_frame_by_frame(tmp_path, video_folder, monkeypatch):
    """`train.latent_noise`: the decoder learns from latents with noise of their own in each frame (0: the encoded
    latents as they are); the stage trains with it; other stages refuse it."""
    from vidldm.models.video_vae import VideoVAE

    seen = []
    decode = VideoVAE.decode
    monkeypatch.setattr(VideoVAE, "decode", lambda self, latents: seen.append(latents.clone()) or decode(self, latents))
    decoded = {}
    for amount in (0.0, 0.8):
        (tmp_path / str(amount)).mkdir()
        config = load_config(recipe(tmp_path / str(amount), video_folder, stage="decoder", checkpoint={"every": 100},
                                    train={"max_steps": 2, "latent_noise": amount}))
        trainer = Trainer(config)
        batch = trainer.data.next()
        trainer.stage(batch, torch.Generator().manual_seed(1))
        decoded[amount] = seen[-1]
        trainer.train()
        assert (Path(config.output_dir) / "temporal_decoder" / "config.json").exists()
    added = decoded[0.8] - decoded[0.0]  # the same batch and draws: only the noise differs
    assert added.abs().max() > 0.01 and not torch.allclose(added[:, :, :1], added[:, :, 1:2])  # its own in each frame
    with pytest.raises(VidldmError, match="train.latent_noise is for the decoder stage, not temporal"):
        load_config(recipe(tmp_path, video_folder, train={"latent_noise": 0.1}))
    with pytest.raises(VidldmError, match="train.latent_noise must be a number from 0 to 1"):
        load_config(recipe(tmp_path, video_folder, stage="decoder", train={"latent_noise": -0.1}))


def test_latent_warp_scales_and_shifts_each_frame_on_its_own(tmp_path, video_folder):
    """`train.latent_warp` (`warp_frames`): each frame of a clip is scaled and shifted by its own draw, the background
    extended at the edges; a tiny amount leaves the latents as they are; only the decoder stage takes it."""
    from vidldm.train.stages import warp_frames

    latents = torch.zeros(2, 4, 6, 16, 16)
    latents[..., 6:10, 6:10] = 1.0  # a square object on a flat background
    latents += 0.5
    warped = warp_frames(latents, 0.5, torch.Generator().manual_seed(3))
    mass = (warped - 0.5).sum((1, 3, 4))  # (B, F): the object's size (its mass over the background), all channels
    assert (mass.std(dim=1) / mass.mean(dim=1)).max() > 0.03  # sizes differ from frame to frame (the amount is per clip)
    assert torch.allclose(warped[..., 0, 0], torch.full_like(warped[..., 0, 0], 0.5))  # edges stay background
    assert torch.allclose(warp_frames(latents, 1e-7, torch.Generator().manual_seed(3)), latents, atol=1e-4)
    with pytest.raises(VidldmError, match="train.latent_warp is for the decoder stage, not temporal"):
        load_config(recipe(tmp_path, video_folder, train={"latent_warp": 0.05}))
    with pytest.raises(VidldmError, match="train.latent_warp must be a number from 0 to 0.5"):
        load_config(recipe(tmp_path, video_folder, stage="decoder", train={"latent_warp": 0.9}))


@pytest.mark.parametrize("stage", ["vae", "decoder"])
def test_pixel_stages_refuse_a_latent_cache(tmp_path, video_folder, stage):
    """The VAE and decoder stages reconstruct pixels, which a latent cache does not hold: one line at load, not a
    KeyError at the first step."""
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "index.json").write_text("{}")
    path = recipe(tmp_path, video_folder, stage=stage, data={"latent_cache": str(tmp_path / "cache")})
    with pytest.raises(VidldmError, match=f"the {stage} stage learns from the videos' pixels"):
        load_config(path)


@pytest.mark.parametrize("change, message", [
    ({"crop_size": 4}, "train.crop_size must be an integer between 8"),
    ({"crop_size": 32}, "train.crop_size must be an integer between 8"),
    ({"foreground_weight": -1}, "train.foreground_weight must be a number >= 0"),
    ({"flicker_weight": -0.5}, "train.flicker_weight must be a number >= 0"),
    ({"size_weight": "big"}, "train.size_weight must be a number, got .big."),
    ({"input_perturbation": -0.1}, "train.input_perturbation must be a number >= 0"),
    ({"trainable_modules": "text_attention"}, "train.trainable_modules must be a list"),
    ({"trainable_modules": []}, "train.trainable_modules must be a list"),
    ({"trainable_modules": ["to_q"], "lora_rank": 4}, "set one of them"),
    ({"snr_gamma": 0}, "train.snr_gamma must be a positive number"),
    ({"snr_gamma": 5.0, "snr_floor": 6.0}, "train.snr_floor must be a positive number no larger"),
    ({"timestep_bias_strategy": "middle"}, "train.timestep_bias_strategy must be none, later or earlier"),
    ({"timestep_bias_portion": 1.5}, "train.timestep_bias_portion between 0 and 1"),
])
def test_vae_stage_options_are_checked(tmp_path, video_folder, change, message):
    with pytest.raises(VidldmError, match=message):
        load_config(recipe(tmp_path, video_folder, stage="vae", train=change))


def test_trainable_modules_train_only_the_named_parameters(tmp_path, video_folder):
    """`train.trainable_modules` (AnimateDiff's): only the adapter's parameters whose names contain one of the parts
    change; the rest of the adapter stays exactly as loaded, and a part that names nothing is refused in one line."""
    config = load_config(recipe(tmp_path, video_folder, train={"max_steps": 3, "trainable_modules": ["to_q", "proj_out"]},
                                checkpoint={"every": 100}))
    trainer = Trainer(config)
    before = {n: p.detach().clone() for n, p in trainer.stage.motion_adapter.named_parameters()}
    trained = {n for n, p in trainer.stage.motion_adapter.named_parameters() if p.requires_grad}
    assert trained and trained == {n for n in before if "to_q" in n or "proj_out" in n}
    trainer.train()
    after = dict(trainer.stage.motion_adapter.named_parameters())
    assert all(torch.equal(after[n], before[n]) for n in before if n not in trained)
    assert any(not torch.equal(after[n], before[n]) for n in trained)
    config = load_config(recipe(tmp_path, video_folder, train={"trainable_modules": ["text_atention"]}))
    with pytest.raises(VidldmError, match="'text_atention' is in no parameter name of the motion_adapter"):
        Trainer(config)


def test_motion_lora_trains_only_lora_weights(tmp_path, video_folder):
    config = load_config(recipe(tmp_path, video_folder, train={"max_steps": 2, "lora_rank": 4}, checkpoint={"every": 100}))
    trainer = Trainer(config)
    trainable = [n for n, p in trainer.stage.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    trainer.train()
    lora = load_file(str(Path(config.output_dir) / "motion_lora.safetensors"))
    assert lora and all("lora" in k for k in lora)
    merged = load_file(str(Path(config.output_dir) / "motion_adapter" / "diffusion_pytorch_model.safetensors"))
    assert not any("lora" in k for k in merged)  # merged back into plain adapter weights


def test_latent_cache_training(tmp_path, video_folder):
    from vidldm.cli import main

    path = recipe(tmp_path, video_folder, train={"max_steps": 2}, checkpoint={"every": 100})
    assert main(["cache", str(path), str(tmp_path / "cache"), "--device", "cpu"]) == 0
    config = load_config(path, [f"data.latent_cache={tmp_path / 'cache'}"])
    summary = Trainer(config).train()
    assert summary["steps"] == 2


@pytest.mark.parametrize(
    "change, message",
    [
        ({"train": {"learning_rat": 1e-4}}, "unknown key 'train.learning_rat'"),
        ({"data": {"root": "/no/such/folder"}}, "data folder '/no/such/folder' does not exist"),
        ({"data": {"num_frames": 24}}, "position encoding covers 16 frames"),
        ({"stage": "everything"}, "unknown stage"),
        ({"model": {"spatiotemporal_levels": "coarse"}}, "model.spatiotemporal_levels must be a list of UNet levels"),
        ({"model": {"noise_schedule": {"betas": 1}}}, "unknown key 'model.noise_schedule.betas'"),
        ({"model": {"noise_schedule": {"prediction_type": "sample"}}}, "prediction_type must be one of epsilon, v_prediction"),
        ({"model": {"noise_schedule": {"rescale_betas_zero_snr": 1}}}, "rescale_betas_zero_snr must be one of true, false, got 1"),
        ({"model": {"noise_schedule": {"rescale_betas_zero_snr": True}}}, "a zero-terminal-SNR schedule needs model.noise_schedule.prediction_type: v_prediction"),
        ({"sampling": {"steps": 20}}, "sampling: unknown sampling setting 'steps'"),
        ({"sampling": {"temporal_end": 1.5}}, "sampling: temporal_end must be between 0 and 1, got 1.5"),
    ],
)
def test_bad_config_fails_before_loading_a_model(tmp_path, video_folder, monkeypatch, capsys, change, message):
    import vidldm.loading

    def no_models(*args, **kwargs):
        raise AssertionError("a model was loaded before the config was checked")

    monkeypatch.setattr(vidldm.loading, "load_pipeline", no_models)
    path = recipe(tmp_path, video_folder, **change)
    with pytest.raises(VidldmError, match=message):
        load_config(path)
    from vidldm.cli import main

    assert main(["train", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_numbers_in_e_notation_read_as_numbers(tmp_path, video_folder):
    """PyYAML alone reads `1e-4` (no dot) as a string: in a recipe, its `sampling:` or `--set`, vidldm reads the number,
    and a word in a float setting is a one-line error, not a failure inside the optimizer."""
    path = recipe(tmp_path, video_folder)
    path.write_text(path.read_text().replace("learning_rate: 0.001", "learning_rate: 1e-3"))
    assert "learning_rate: 1e-3" in path.read_text()
    config = load_config(path, ["train.snr_gamma=5e0", "train.weight_decay=1e-2", "sampling.temporal_end=5e-1"])
    assert (config.train.learning_rate, config.train.snr_gamma, config.train.weight_decay) == (1e-3, 5.0, 1e-2)
    assert config.sampling["temporal_end"] == 0.5
    steps = load_config(path, ["train.max_steps=2e1"]).train.max_steps
    assert steps == 20 and isinstance(steps, int)  # a count written as a float is the count
    with pytest.raises(VidldmError, match="max_steps must be a positive integer, got 2.5"):
        load_config(path, ["train.max_steps=2.5"])
    assert load_config(path, ["train.learning_rate='2e-4'"]).train.learning_rate == 2e-4  # quoted, still the number
    with pytest.raises(VidldmError, match="recipe.yaml: train.max_steps must be a number, got True"):
        load_config(path, ["train.max_steps=yes"])  # YAML's yes is a switch, not 1 step
    with pytest.raises(VidldmError, match="recipe.yaml: train.learning_rate must be a number, got 'fast'"):
        load_config(path, ["train.learning_rate=fast"])


def test_recipe_base_lays_its_keys_over_another_recipe(tmp_path, video_folder):
    base = recipe(tmp_path, video_folder, train={"learning_rate": 5e-4, "seed": 3}, model={"max_seq_length": 8})
    child = tmp_path / "more.yaml"
    child.write_text(yaml.safe_dump({"base": base.name, "output_dir": str(tmp_path / "more"),
                                     "train": {"learning_rate": 2e-4}, "model": {"motion_adapter": None}}))
    config = load_config(child, ["train.seed=7"])
    assert config.output_dir == str(tmp_path / "more")
    assert config.train.learning_rate == 2e-4 and config.train.seed == 7   # this file, then --set
    assert config.train.batch_size == 2 and config.train.max_known_frames == 2  # the rest from the base
    assert config.model.pretrained == "tiny" and config.model.max_seq_length == 8  # mappings merge key by key
    assert config.data.root == str(video_folder)


@pytest.mark.parametrize(
    "child, message",
    [
        ({"base": "recipe.yaml"}, "must set its own output_dir"),
        ({"base": "nowhere.yaml", "output_dir": "x"}, "base recipe 'nowhere.yaml' does not exist"),
        ({"base": ["recipe.yaml"], "output_dir": "x"}, "'base' must be the path of another recipe"),
        ({"base": "loop.yaml", "output_dir": "x"}, "leads back to itself"),
    ],
)
def test_bad_recipe_base_is_one_line(tmp_path, video_folder, capsys, child, message):
    recipe(tmp_path, video_folder)
    path = tmp_path / "loop.yaml"
    path.write_text(yaml.safe_dump(child))
    from vidldm.cli import main

    assert main(["train", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_shipped_recipes_read_as_complete_stages():
    """configs/shapes: every recipe, with its base chain, names a stage, its own output and only known keys."""
    from vidldm.train.config import Config, _build, read_recipe

    folder = Path(__file__).parents[1] / "configs" / "shapes"
    recipes = sorted(folder.glob("*.yaml"))
    assert recipes
    outputs = set()
    for path in recipes:
        config = _build(Config, read_recipe(path), "", path.name)
        assert config.output_dir not in outputs, path.name
        outputs.add(config.output_dir)
    polish = _build(Config, read_recipe(folder / "temporal_polish.yaml"), "", "temporal_polish.yaml")
    assert (polish.stage, polish.train.learning_rate, polish.train.max_known_frames) == ("temporal", 1.5e-4, 1)
    assert polish.train.timestep_bias_strategy == "later" and polish.data.latent_cache == "runs/shapes/cache"


def test_min_snr_weights_cap_the_easy_timesteps(tmp_path, video_folder):
    config = load_config(recipe(tmp_path, video_folder, stage="image", train={"max_steps": 2, "snr_gamma": 5.0},
                                checkpoint={"every": 100}))
    trainer = Trainer(config)
    t = torch.tensor([0, 200, 500, 999])
    w = trainer.stage.loss_weights(t)
    alphas = trainer.stage.noise_scheduler.alphas_cumprod[t]
    snr = alphas / (1 - alphas)
    assert torch.allclose(w, torch.clamp(snr, max=5.0) / snr)
    assert w[0] < 0.01 and w[-1] == 1.0 and torch.all(w[:-1] <= w[1:])  # low noise weighs less, high noise 1
    config.train.snr_floor = 1.0  # truncated SNR: x0 errors weigh at least 1, as a v-prediction loss implies
    floored = trainer.stage.loss_weights(t)
    assert torch.allclose(floored, torch.clamp(snr, min=1.0, max=5.0) / snr)
    assert torch.allclose(floored[:2], w[:2]) and floored[-1] > 100  # SNR(999) ~ 0.005
    config.train.snr_gamma = config.train.snr_floor = None
    assert torch.equal(trainer.stage.loss_weights(t), torch.ones(4))
    assert trainer.train()["steps"] == 2


def test_timestep_bias_draws_the_later_timesteps_more_often(tmp_path, video_folder):
    config = load_config(recipe(tmp_path, video_folder, train={"max_steps": 2, "timestep_bias_strategy": "later",
                                                               "timestep_bias_multiplier": 3.0,
                                                               "timestep_bias_portion": 0.5}))
    stage = Trainer(config).stage
    latents = torch.zeros(4000, 1)
    _, t = stage.noise_and_timesteps(latents, torch.Generator().manual_seed(0))
    assert t.min() >= 0 and t.max() <= 999
    assert abs(float((t >= 500).float().mean()) - 0.75) < 0.03  # 3 x 0.5 / (3 x 0.5 + 0.5)
    config.train.timestep_bias_strategy = "none"
    _, t = stage.noise_and_timesteps(latents, torch.Generator().manual_seed(0))
    assert abs(float((t >= 500).float().mean()) - 0.5) < 0.03


def test_pure_noise_samples_are_what_the_first_sampling_step_sees(tmp_path, video_folder):
    config = load_config(recipe(tmp_path, video_folder, train={"max_steps": 2, "pure_noise_fraction": 0.5}))
    trainer = Trainer(config)
    stage = trainer.stage
    latents, noise = torch.randn(4, 4, 3, 2, 2), torch.randn(4, 4, 3, 2, 2)
    t = torch.tensor([10, 500, 700, 999])
    noisy = stage.noise_scheduler.add_noise(latents, noise, t)
    pure = torch.tensor([True, False, True, False])
    t2, noisy2, target2 = stage.pure_noise(latents, noise, t, noisy, noise, pure)
    assert t2.tolist() == [999, 500, 999, 999]
    assert torch.equal(noisy2[0], noise[0]) and torch.equal(noisy2[1], noisy[1])  # no clip signal left in the input
    assert torch.equal(target2[1], noise[1]) and torch.equal(target2[3], noise[3])  # the others are untouched
    # the sampler's x0 from that input and target is the clean clip
    a = stage.noise_scheduler.alphas_cumprod[999]
    x0 = (noisy2[pure] - (1 - a).sqrt() * target2[pure]) / a.sqrt()
    assert torch.allclose(x0, latents[pure], atol=1e-4)
    assert trainer.train()["steps"] == 2
    with pytest.raises(VidldmError, match="train.pure_noise_fraction must be between 0 and 1"):
        load_config(recipe(tmp_path, video_folder, train={"pure_noise_fraction": 2}))


def test_training_can_add_spatiotemporal_layers_to_an_adapter(tmp_path, video_folder):
    config = load_config(recipe(tmp_path, video_folder, model={"spatiotemporal_levels": [1]},
                                train={"max_steps": 2}, checkpoint={"every": 100}))
    trainer = Trainer(config)
    trained = [n for n, p in trainer.stage.named_parameters() if p.requires_grad]
    assert any(".spatiotemporal." in n for n in trained) and any(".temporal_transformer." in n for n in trained)
    trainer.train()
    from vidldm.loading import load_pipeline

    loaded = load_pipeline(Path(config.output_dir) / "pipeline", device="cpu")
    assert loaded.motion_adapter.config.spatiotemporal_levels == [1]
    config.model.spatiotemporal_levels = [5]  # the tiny UNet has levels 0 and 1
    with pytest.raises(VidldmError, match=r"model.spatiotemporal_levels must be UNet levels 0..1, got \[5\]"):
        Trainer(config)


def test_a_v_prediction_zero_terminal_snr_schedule_trains_and_is_saved_with_the_model(tmp_path, video_folder):
    schedule = {"prediction_type": "v_prediction", "rescale_betas_zero_snr": True, "timestep_spacing": "trailing"}
    config = load_config(recipe(tmp_path, video_folder, stage="image", model={"noise_schedule": schedule},
                                train={"max_steps": 2}, checkpoint={"every": 100}))
    trainer = Trainer(config)
    sched = trainer.stage.noise_scheduler
    assert sched.config.prediction_type == "v_prediction" and float(sched.alphas_cumprod[-1]) == 0.0
    t = torch.tensor([0, sched.config.num_train_timesteps - 1])
    assert torch.isfinite(trainer.stage.loss_weights(t)).all()  # SNR 0 at the last step: no division by it
    trainer.train()
    saved = load_pipeline(str(tmp_path / "run" / "pipeline")).scheduler.config
    assert (saved.prediction_type, saved.rescale_betas_zero_snr, saved.timestep_spacing) == ("v_prediction", True, "trailing")


def test_a_trained_model_carries_its_recipes_sampling_defaults_and_its_bases(tmp_path, video_folder):
    """`sampling:` is saved with the trained pipeline; a run from that pipeline keeps what its own recipe leaves out."""
    short = dict(train={"max_steps": 1}, checkpoint={"every": 100})
    Trainer(load_config(recipe(tmp_path, video_folder, **short, sampling={"num_inference_steps": 7, "temporal_end": 0.5}))).train()
    first = tmp_path / "run" / "pipeline"
    assert load_pipeline(str(first)).generation_defaults == {"num_inference_steps": 7, "temporal_end": 0.5}
    Trainer(load_config(recipe(tmp_path, video_folder, **short, output_dir=str(tmp_path / "run2"),
                               model={"pretrained": str(first)}, sampling={"guidance_scale": 3.0}))).train()
    second = load_pipeline(str(tmp_path / "run2" / "pipeline")).generation_defaults
    assert second == {"num_inference_steps": 7, "temporal_end": 0.5, "guidance_scale": 3.0}


def test_tensorboard_logs_go_through_accelerate_trackers(tmp_path, video_folder):
    path = recipe(tmp_path, video_folder, train={"max_steps": 2}, checkpoint={"every": 100}, log={"every": 1, "tensorboard": True})
    Trainer(load_config(path)).train()
    events = list((tmp_path / "run" / "logs").rglob("events.out.tfevents.*"))
    assert events, "no TensorBoard event file under output_dir/logs"
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    scalars = EventAccumulator(str(events[0].parent)).Reload().Scalars("train/loss")
    assert [s.step for s in scalars] == [1, 2]
