"""load_pipeline: built-ins, vidldm folders, SD folders + AnimateDiff files; clear errors, no network."""

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline

from tests.conftest import seeded
from vidldm.errors import VidldmError
from vidldm.loading import load_pipeline, tiny_pipeline
from vidldm.models import save_animatediff
from vidldm.models.tiny import tiny_motion_adapter

SMALL = dict(num_frames=3, height=16, width=16, num_inference_steps=2, output_type="np")


@pytest.fixture(scope="module")
def sd_folder(tmp_path_factory):
    """A tiny Stable Diffusion folder as diffusers writes it (what users have on disk)."""
    base = tiny_pipeline()
    folder = tmp_path_factory.mktemp("models") / "tiny-sd"
    StableDiffusionPipeline(
        vae=base.vae, text_encoder=base.text_encoder, tokenizer=base.tokenizer, unet=base.unet,
        scheduler=base.scheduler, safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    ).save_pretrained(folder)
    return folder, base


def test_sd_folder_with_animatediff_checkpoint(sd_folder, tmp_path):
    folder, base = sd_folder
    adapter = tiny_motion_adapter(base.unet, randomize=True, max_seq_length=16)
    save_animatediff(adapter, tmp_path / "mm.ckpt")
    pipe = load_pipeline(folder, motion_adapter=tmp_path / "mm.ckpt", device="cpu")
    pipe.set_progress_bar_config(disable=True)
    for key, value in adapter.state_dict().items():
        assert torch.equal(pipe.motion_adapter.state_dict()[key], value)
    for key, value in base.unet.state_dict().items():  # SD weights load untouched
        assert torch.equal(pipe.unet.state_dict()[key], value)
    frames = pipe("a red circle", generator=seeded(), **SMALL).frames
    assert frames.shape == (1, 3, 16, 16, 3)


def test_sd_folder_needs_an_adapter(sd_folder):
    with pytest.raises(VidldmError, match="--motion-adapter"):
        load_pipeline(sd_folder[0], device="cpu")


def test_vidldm_folder_round_trip(tmp_path):
    pipe = tiny_pipeline()
    pipe.save_pretrained(tmp_path / "p")
    again = load_pipeline(tmp_path / "p", device="cpu")
    for a, b in zip(pipe.motion_adapter.state_dict().values(), again.motion_adapter.state_dict().values()):
        assert torch.equal(a, b)
    pipe.set_progress_bar_config(disable=True)
    again.set_progress_bar_config(disable=True)
    assert np.array_equal(pipe("x", generator=seeded(), **SMALL).frames, again("x", generator=seeded(), **SMALL).frames)


def test_dtype_is_applied():
    assert load_pipeline("tiny", device="cpu", dtype="bf16").unet.dtype == torch.bfloat16


def test_unknown_models_and_files(tmp_path):
    with pytest.raises(VidldmError, match="unknown model"):
        load_pipeline("no-such-model")
    (tmp_path / "empty").mkdir()
    with pytest.raises(VidldmError, match="model_index.json"):
        load_pipeline(tmp_path / "empty")
    (tmp_path / "weights.safetensors").write_bytes(b"x")
    with pytest.raises(VidldmError, match="config="):
        load_pipeline(tmp_path / "weights.safetensors")
    with pytest.raises(VidldmError, match="dtype"):
        load_pipeline("tiny", dtype="fp8")


def test_hub_id_offline_is_one_clear_error(monkeypatch):
    import huggingface_hub

    def offline(*args, **kwargs):
        raise ConnectionError("no network")

    monkeypatch.setattr(huggingface_hub, "model_info", offline)  # never touch the network in tests
    with pytest.raises(VidldmError, match="could not fetch 'someone/some-model' from the Hugging Face Hub"):
        load_pipeline("someone/some-model")


def test_sd_folder_keeps_a_zero_terminal_snr_schedule(sd_folder, tmp_path):
    """An SD 2.x finetune trained with zero terminal SNR must sample with it: v-prediction, rescaled
    betas, trailing spacing; everything else stays AnimateDiff's DDIM (linear betas)."""
    import shutil

    from diffusers import DDIMScheduler

    folder, base = sd_folder
    zsnr = tmp_path / "zsnr-sd"
    shutil.copytree(folder, zsnr)
    DDIMScheduler(prediction_type="v_prediction", rescale_betas_zero_snr=True, timestep_spacing="trailing",
                  beta_schedule="scaled_linear").save_pretrained(zsnr / "scheduler")
    adapter = tiny_motion_adapter(base.unet, max_seq_length=16)
    config = load_pipeline(zsnr, motion_adapter=adapter, device="cpu").scheduler.config
    assert (config.prediction_type, config.rescale_betas_zero_snr, config.timestep_spacing) == ("v_prediction", True, "trailing")
    assert config.beta_schedule == "linear"
    plain = load_pipeline(folder, motion_adapter=adapter, device="cpu").scheduler.config
    assert (plain.prediction_type, plain.rescale_betas_zero_snr, plain.timestep_spacing) == ("epsilon", False, "linspace")


def test_motion_adapter_hub_id_offline_is_one_line_and_writes_nothing(tmp_path):
    """Only a named hub id reaches for the hub; offline (HF_HUB_OFFLINE=1, as the tests run) that is one line, exit 2."""
    import os
    import subprocess
    import sys

    out = tmp_path / "clip.gif"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "vidldm", "generate", "x", "--model", "tiny", "--motion-adapter",
                           "someone/some-adapter", "--frames", "2", "--steps", "1", "-o", str(out), "-q"],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    err = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(err) == 1, done.stderr
    assert "could not fetch motion adapter 'someone/some-adapter' from the Hugging Face Hub" in err[0]
    assert not out.exists()


def test_a_local_adapter_path_that_looks_like_a_hub_id_is_read_as_a_path(tmp_path, monkeypatch, unet):
    import huggingface_hub

    def no_hub(*args, **kwargs):
        raise AssertionError("the hub was asked for a local path")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_hub)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", no_hub)
    adapter = tiny_motion_adapter(unet, randomize=True)
    adapter.save_pretrained(tmp_path / "owner" / "adapter")
    monkeypatch.chdir(tmp_path)
    pipe = load_pipeline("tiny", motion_adapter="owner/adapter", device="cpu")
    theirs = pipe.motion_adapter.state_dict()
    assert all(torch.equal(v, theirs[k]) for k, v in adapter.state_dict().items())
    with pytest.raises(VidldmError, match="does not exist"):  # a file name is never a hub id
        load_pipeline("tiny", motion_adapter="owner/missing.ckpt", device="cpu")
