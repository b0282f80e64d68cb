"""Folders diffusers writes (AnimateDiffPipeline, MotionAdapter, SD; plain and fp16 variants) load in vidldm with
the same tensors and the same UNet output as diffusers' own classes; `vidldm export` writes the reverse; broken
files end in one line and exit 2."""

import copy
import json
import os
import shutil

import numpy as np
import pytest
import torch
from diffusers import (
    AnimateDiffPipeline,
    DDIMScheduler,
    StableDiffusionPipeline,
    UNet2DConditionModel,
    UNetMotionModel,
)
from diffusers import MotionAdapter as DiffusersMotionAdapter
from safetensors.torch import save_file

from vidldm.cli import main
from vidldm.errors import CheckpointError
from vidldm.loading import load_pipeline, tiny_pipeline
from vidldm.models import VideoUNet, load_motion_adapter, to_diffusers
from vidldm.models.tiny import randomize_, tiny_motion_adapter
from vidldm.schedulers import ANIMATEDIFF_DDIM

FRAMES = 4


def diffusers_adapter(norm_groups: int = 32) -> DiffusersMotionAdapter:
    """A diffusers MotionAdapter for the tiny UNet, with random (not zero) output projections so it acts."""
    torch.manual_seed(0)
    adapter = DiffusersMotionAdapter(block_out_channels=(32, 64), motion_layers_per_block=2, motion_max_seq_length=16,
                                     motion_norm_num_groups=norm_groups)
    return randomize_(adapter).eval()


def in_dtype(module, dtype):
    """A copy of `module` in `dtype`: save_pretrained(variant="fp16") only names the files, the caller casts."""
    return copy.deepcopy(module).to(dtype)


def sd_pipeline(base, dtype=torch.float32) -> StableDiffusionPipeline:
    return StableDiffusionPipeline(vae=in_dtype(base.vae, dtype), text_encoder=in_dtype(base.text_encoder, dtype),
                                   tokenizer=base.tokenizer, unet=in_dtype(base.unet, dtype), scheduler=base.scheduler,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)


@pytest.fixture(scope="module")
def base():
    return tiny_pipeline()


@pytest.fixture(scope="module")
def folders(base, tmp_path_factory):
    """Every folder as diffusers' save_pretrained writes it: {name: path}."""
    root = tmp_path_factory.mktemp("diffusers")
    adapter = diffusers_adapter()
    out = {}
    for variant, dtype in ((None, torch.float32), ("fp16", torch.float16)):
        tag = variant or "plain"
        sd = sd_pipeline(base, dtype)
        animatediff = AnimateDiffPipeline(sd.vae, sd.text_encoder, sd.tokenizer, sd.unet, motion_adapter=in_dtype(adapter, dtype),
                                          scheduler=DDIMScheduler(**ANIMATEDIFF_DDIM))
        animatediff.save_pretrained(root / f"animatediff-{tag}", variant=variant)
        in_dtype(adapter, dtype).save_pretrained(root / f"adapter-{tag}", variant=variant)
        sd.save_pretrained(root / f"sd-{tag}", variant=variant)
        out.update({f"animatediff-{tag}": root / f"animatediff-{tag}", f"adapter-{tag}": root / f"adapter-{tag}",
                    f"sd-{tag}": root / f"sd-{tag}"})
    diffusers_adapter(norm_groups=16).save_pretrained(root / "adapter-16-groups")
    out["adapter-16-groups"] = root / "adapter-16-groups"
    return out


def inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, 4, FRAMES, 16, 16, generator=g), torch.randn(1, 7, 32, generator=g)


@torch.no_grad()
def assert_same_unet_output(pipe, motion_unet: UNetMotionModel):
    """One denoising step: vidldm's UNet + adapter against diffusers' UNetMotionModel on the same inputs."""
    x, ctx = inputs()
    ours = VideoUNet(pipe.unet, pipe.motion_adapter)(x, 321, ctx)
    theirs = motion_unet(x, 321, ctx.repeat_interleave(FRAMES, 0)).sample  # diffusers repeats the text per frame
    alone = VideoUNet(pipe.unet, tiny_motion_adapter(pipe.unet))(x, 321, ctx)
    assert (ours - alone).abs().max() > 1e-2  # the temporal layers act, so the comparison means something
    assert (ours - theirs).abs().max() <= 1e-4


def assert_same_tensors(pipe, motion_unet: UNetMotionModel):
    theirs = motion_unet.state_dict()
    ours = {**pipe.unet.state_dict(), **to_diffusers(pipe.motion_adapter).state_dict()}
    assert set(ours) == set(theirs)
    for key, value in ours.items():
        assert torch.equal(value, theirs[key]), key


# ----------------------------------------------------------------------------- diffusers -> vidldm

@pytest.mark.parametrize("variant", [None, "fp16"])
def test_animatediff_pipeline_folder_splits_into_unet_and_adapter(folders, variant):
    folder = folders[f"animatediff-{variant or 'plain'}"]
    pipe = load_pipeline(folder, device="cpu")  # the fp16 variant is found by itself: it is the only one there
    theirs = AnimateDiffPipeline.from_pretrained(folder, variant=variant, torch_dtype=torch.float32)
    assert isinstance(pipe.unet, UNet2DConditionModel) and pipe.motion_adapter.config.norm_mode == "per_clip"
    assert_same_tensors(pipe, theirs.unet)
    assert_same_unet_output(pipe, theirs.unet)
    if variant:
        assert_same_tensors(load_pipeline(folder, device="cpu", variant=variant), theirs.unet)


@pytest.mark.parametrize("variant", [None, "fp16"])
def test_motion_adapter_and_sd_folders_in_each_variant(folders, variant):
    tag = variant or "plain"
    pipe = load_pipeline(folders[f"sd-{tag}"], folders[f"adapter-{tag}"], device="cpu")
    adapter = DiffusersMotionAdapter.from_pretrained(folders[f"adapter-{tag}"], variant=variant, torch_dtype=torch.float32)
    unet = UNet2DConditionModel.from_pretrained(folders[f"sd-{tag}"], subfolder="unet", variant=variant, torch_dtype=torch.float32)
    motion_unet = UNetMotionModel.from_unet2d(unet, adapter).eval()
    assert_same_tensors(pipe, motion_unet)
    assert_same_unet_output(pipe, motion_unet)
    # transformers keeps an fp16 file's dtype, diffusers loads fp32: the pipeline holds one dtype all the same
    assert {m.dtype for m in (pipe.unet, pipe.vae, pipe.text_encoder, pipe.motion_adapter)} == {torch.float32}
    explicit = load_motion_adapter(folders[f"adapter-{tag}"], variant=variant)
    assert all(torch.equal(v, explicit.state_dict()[k]) for k, v in pipe.motion_adapter.state_dict().items())


def test_variant_asked_for_or_ambiguous(folders, base, tmp_path):
    with pytest.raises(CheckpointError, match="has no bf16 weights .*holds: fp16.*--variant"):
        load_motion_adapter(folders["adapter-fp16"], variant="bf16")
    both = tmp_path / "sd"
    shutil.copytree(folders["sd-fp16"], both)
    sd_pipeline(base, torch.bfloat16).save_pretrained(both, variant="bf16")
    with pytest.raises(CheckpointError, match=r"several variants \(bf16, fp16\).*--variant"):
        load_pipeline(both, folders["adapter-fp16"], device="cpu")
    pipe = load_pipeline(both, folders["adapter-fp16"], device="cpu", variant="bf16")
    assert torch.equal(pipe.unet.conv_in.weight, base.unet.conv_in.weight.to(torch.bfloat16).float())
    # an fp16 request falls back to plain weights for a component saved without the variant (diffusers does too)
    assert load_pipeline(folders["sd-plain"], folders["adapter-plain"], device="cpu", variant="fp16").unet.dtype == torch.float32


def test_vidldm_pipeline_folder_in_a_variant(tmp_path):
    pipe = tiny_pipeline().to(dtype=torch.float16)
    pipe.save_pretrained(tmp_path / "p", variant="fp16")
    again = load_pipeline(tmp_path / "p", device="cpu")
    for ours, theirs in ((again.unet, pipe.unet), (again.motion_adapter, pipe.motion_adapter)):
        for key, value in theirs.state_dict().items():
            assert torch.equal(ours.state_dict()[key].half(), value), key


def test_cli_reads_variants(folders, capsys):
    assert main(["info", str(folders["animatediff-fp16"])]) == 0
    assert main(["info", str(folders["sd-fp16"]), "--motion-adapter", str(folders["adapter-fp16"]), "--variant", "fp16"]) == 0
    assert main(["info", str(folders["adapter-fp16"]), "--variant", "fp16"]) == 0
    out = capsys.readouterr().out
    assert out.count("norm per_clip") == 3


# ----------------------------------------------------------------------------- vidldm -> diffusers

@pytest.fixture(scope="module")
def per_clip_model(base, tmp_path_factory):
    """A vidldm pipeline folder whose adapter diffusers can run exactly (per-clip normalisation, random outputs)."""
    pipe = base.with_parts(motion_adapter=tiny_motion_adapter(base.unet, randomize=True, norm_mode="per_clip"))
    folder = tmp_path_factory.mktemp("vidldm") / "model"
    pipe.save_pretrained(folder)
    return pipe, folder


@torch.no_grad()
def test_export_round_trips_through_diffusers(per_clip_model, tmp_path, capsys):
    pipe, folder = per_clip_model
    out = tmp_path / "exported"
    assert main(["export", str(folder), str(out), "--format", "diffusers"]) == 0
    assert "AnimateDiffPipeline" in capsys.readouterr().out
    theirs = AnimateDiffPipeline.from_pretrained(out)
    theirs.set_progress_bar_config(disable=True)
    assert_same_tensors(pipe, theirs.unet)
    assert_same_unet_output(pipe, theirs.unet)

    latents, _ = inputs(1)
    settings = dict(num_frames=FRAMES, height=32, width=32, num_inference_steps=2, guidance_scale=7.5, output_type="np")
    pipe.set_progress_bar_config(disable=True)
    ours = pipe("a red circle", latents=latents, **settings).frames
    frames = theirs("a red circle", latents=latents, **settings).frames
    assert ours.shape == frames.shape == (1, FRAMES, 32, 32, 3)
    assert np.abs(ours - frames).max() <= 1e-4

    back = load_pipeline(out, device="cpu")  # and the export loads in vidldm again, unchanged
    assert_same_tensors(back, theirs.unet)


def test_to_diffusers_keeps_the_scheduler_config(per_clip_model):
    pipe, _ = per_clip_model
    theirs = pipe.to_diffusers()
    assert isinstance(theirs, AnimateDiffPipeline) and isinstance(theirs.unet, UNetMotionModel)
    assert dict(theirs.scheduler.config) == dict(pipe.scheduler.config)


@torch.no_grad()
@pytest.mark.parametrize("name", ["dpm++", "dpmpp_2m_karras", "unipc", "euler"])
def test_multistep_and_karras_samplers_match_diffusers(per_clip_model, name):
    """The samplers a user picks for few steps run as diffusers' AnimateDiffPipeline runs them (their history of
    model outputs and sigmas): same weights, latents and scheduler, 10 steps, the same frames."""
    from vidldm.schedulers import make_scheduler

    pipe, _ = per_clip_model
    theirs = pipe.to_diffusers()
    theirs.scheduler = make_scheduler(name, pipe.scheduler.config)
    theirs.set_progress_bar_config(disable=True)
    pipe.set_progress_bar_config(disable=True)
    latents, _ = inputs(2)
    settings = dict(num_frames=FRAMES, height=32, width=32, num_inference_steps=10, guidance_scale=7.5, output_type="np")
    ours = pipe("a red circle", latents=latents, scheduler=name, **settings).frames
    frames = theirs("a red circle", latents=latents, **settings).frames
    assert np.abs(ours - frames).max() <= 1e-4


@pytest.mark.parametrize(
    "adapter, message",
    [
        (dict(norm_mode="per_frame"), "normalises each frame on its own"),
        (dict(norm_mode="per_clip", frame_conditioning=True), "frame conditioning"),
        (dict(norm_mode="per_clip", spatiotemporal_levels=[1]), "no spatio-temporal attention"),
        (dict(norm_mode="per_clip", cross_attention_dim=32), "no text cross-attention"),
        (dict(norm_mode="per_clip", temporal_conv=True), "no temporal convolutions"),
        (dict(norm_mode="per_clip", norm_num_groups=16), "normalises in 16 groups but the UNet in 32"),
    ],
)
def test_export_refuses_what_diffusers_cannot_represent(base, tmp_path, capsys, adapter, message):
    tiny_motion_adapter(base.unet, **adapter).save_pretrained(tmp_path / "adapter")
    out = tmp_path / "exported"
    assert main(["export", "tiny", str(out), "--motion-adapter", str(tmp_path / "adapter")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("vidldm: error: ") and message in err[0]
    assert not out.exists() and not list(tmp_path.glob(".exported*"))  # nothing half-written


def test_lossy_export_of_an_animatediff_style_adapter(tmp_path):
    """Per-frame normalisation (AnimateDiff's checkpoints) exports with --lossy, as diffusers' own conversions do."""
    assert main(["export", "tiny", str(tmp_path / "out"), "--lossy"]) == 0
    assert json.loads((tmp_path / "out" / "model_index.json").read_text())["_class_name"] == "AnimateDiffPipeline"
    assert main(["export", "tiny", str(tmp_path / "out"), "--lossy"]) == 2  # never over an existing folder


# ----------------------------------------------------------------------------- broken files: one line, exit 2

def truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def broken(folders, base, tmp_path, case):
    """(argv, text the error line must hold) for one broken input, built in tmp_path."""
    model = tmp_path / "model"
    if case == "truncated unet":
        shutil.copytree(folders["animatediff-plain"], model)
        truncate(model / "unet" / "diffusion_pytorch_model.safetensors")
        return ["info", model], "unet/diffusion_pytorch_model.safetensors"
    if case == "truncated text encoder":
        shutil.copytree(folders["sd-fp16"], model)
        truncate(model / "text_encoder" / "model.fp16.safetensors")
        return ["info", model, "--motion-adapter", folders["adapter-plain"]], "text_encoder"
    if case == "truncated adapter":
        shutil.copytree(folders["adapter-fp16"], model)
        truncate(model / "diffusion_pytorch_model.fp16.safetensors")
        return ["info", model], "diffusion_pytorch_model.fp16.safetensors"
    if case == "unet config not json":
        shutil.copytree(folders["animatediff-plain"], model)
        (model / "unet" / "config.json").write_text("{not json")
        return ["info", model], "unet/config.json"
    if case == "adapter config not json":
        shutil.copytree(folders["adapter-plain"], model)
        (model / "config.json").write_text("{not json")
        return ["info", folders["sd-plain"], "--motion-adapter", model], "config.json' is not valid JSON"
    if case == "model_index not json":
        shutil.copytree(folders["animatediff-plain"], model)
        (model / "model_index.json").write_text("[1, 2")
        return ["info", model], "model_index.json' is not valid JSON"
    if case == "unet and vae only single file":
        weights = {**base.unet.state_dict(), **base.vae.state_dict()}  # no text encoder keys
        save_file({k: v.contiguous() for k, v in weights.items()}, tmp_path / "unet_vae.safetensors")
        return (["generate", "x", "--model", tmp_path / "unet_vae.safetensors", "--config", folders["sd-plain"],
                 "--motion-adapter", folders["adapter-plain"], "-q", "-o", tmp_path / "clip.mp4"],
                "unet_vae.safetensors' as a Stable Diffusion checkpoint")
    if case == "mismatched norm groups":
        return (["info", folders["sd-plain"], "--motion-adapter", folders["adapter-16-groups"]],
                "motion_norm_num_groups 16 but the UNet's norm_num_groups is 32")
    if case == "empty folder":
        model.mkdir()
        return ["generate", "x", "--model", model, "-q", "-o", tmp_path / "clip.mp4"], "has no model_index.json"
    if case == "sdxl motion module":  # SDXL folders load now (tests/test_sdxl.py); a module of the other family does not
        from vidldm.models import MotionAdapter, save_animatediff

        save_animatediff(MotionAdapter(block_out_channels=(32, 64, 64), use_mid_block=False), tmp_path / "mm_sdxl.ckpt")
        return ["info", folders["sd-plain"], "--motion-adapter", tmp_path / "mm_sdxl.ckpt"], "made for a SDXL (3-level) UNet"
    raise AssertionError(case)


@pytest.mark.parametrize("case", [
    "truncated unet", "truncated text encoder", "truncated adapter", "unet config not json", "adapter config not json",
    "model_index not json", "unet and vae only single file", "mismatched norm groups", "empty folder", "sdxl motion module",
])
def test_broken_input_is_one_line_and_exit_2(folders, base, tmp_path, capsys, case):
    argv, message = broken(folders, base, tmp_path, case)
    before = set(tmp_path.iterdir())
    assert main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("vidldm: error: ") and message in err[0] and "Traceback" not in err[0]
    assert set(tmp_path.iterdir()) == before  # no clip, no sidecar


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_single_file_model_that_would_run_code_runs_nothing(folders, tmp_path, capsys):
    """diffusers reads .ckpt single files with weights_only=True: the pickle is refused before it runs."""
    marker = tmp_path / "code-ran"
    torch.save({"state_dict": {"model.diffusion_model.x": _RunsCode(marker)}}, tmp_path / "evil.ckpt")
    argv = ["generate", "x", "--model", tmp_path / "evil.ckpt", "--config", folders["sd-plain"],
            "--motion-adapter", folders["adapter-plain"], "-q", "-o", tmp_path / "clip.mp4"]
    assert main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "evil.ckpt" in err[0], err
    assert not marker.exists() and not (tmp_path / "clip.mp4").exists()
