"""ControlNet and SparseCtrl: vidldm equals diffusers' `AnimateDiffControlNetPipeline` / `AnimateDiffSparseControlNetPipeline`
on the same tiny random weights, latents, prompts and scheduler; original-layout SparseCtrl files load to the same
tensors; bad inputs end in one line (the CLI: exit 2, no file written)."""

import numpy as np
import pytest
import torch
from diffusers import ControlNetModel, SparseControlNetModel
from PIL import Image

from tests.test_ip_adapter import base_model, latents
from vidldm.errors import VidldmError
from vidldm.models.tiny import TINY_UNET_CONFIG, randomize_

FRAMES = 4
SETTINGS = dict(num_frames=FRAMES, height=32, width=32, num_inference_steps=2, guidance_scale=7.5, output_type="np")


def tiny_controlnet(unet, seed=1, **overrides) -> ControlNetModel:
    """A ControlNet for the tiny UNet (its conditioning embedding downsamples 2x, as the tiny VAE does), random
    everywhere: the zero convolutions a fresh one starts with would make every residual 0."""
    net = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(16, 32), **overrides)
    return randomize_(net, std=0.05, seed=seed).eval()


def tiny_sparsectrl(seed=2, rgb=False, **overrides) -> SparseControlNetModel:
    """A SparseCtrl for the tiny UNet: RGB (keyframes as VAE latents, `use_simplified_condition_embedding`) or scribble
    (keyframes as pixels through a conditioning embedding)."""
    c = TINY_UNET_CONFIG
    config = dict(block_out_channels=c["block_out_channels"], layers_per_block=c["layers_per_block"],
                  down_block_types=("CrossAttnDownBlockMotion", "DownBlockMotion"), cross_attention_dim=c["cross_attention_dim"],
                  attention_head_dim=c["attention_head_dim"], norm_num_groups=32,
                  motion_max_seq_length=32, use_simplified_condition_embedding=rgb, conditioning_channels=4 if rgb else 3,
                  conditioning_embedding_out_channels=(16, 32))
    torch.manual_seed(seed)
    return randomize_(SparseControlNetModel(**{**config, **overrides}), std=0.05, seed=seed).eval()


def clip(seed=0, frames=FRAMES, size=32):
    """Control frames as PIL images (what diffusers takes), at the clip's size so neither side resizes."""
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)) for _ in range(frames)]


def diffusers_twin(theirs, controlnet, sparse=False):
    from diffusers import AnimateDiffControlNetPipeline, AnimateDiffSparseControlNetPipeline

    kind = AnimateDiffSparseControlNetPipeline if sparse else AnimateDiffControlNetPipeline
    parts = {k: v for k, v in theirs.components.items() if k in ("vae", "text_encoder", "tokenizer", "unet", "motion_adapter",
                                                                  "scheduler")}
    twin = kind(**parts, controlnet=controlnet)
    twin.set_progress_bar_config(disable=True)
    return twin


@pytest.fixture(scope="module")
def models():
    pipe, theirs = base_model()
    return pipe, theirs, tiny_controlnet(pipe.unet), tiny_controlnet(pipe.unet, seed=5)


def max_diff(a, b):
    return float(np.abs(np.asarray(a) - np.asarray(b)).max())


# ----------------------------------------------------------------------------- ControlNet parity

@pytest.mark.parametrize("scale, start, end", [(1.0, 0.0, 1.0), (0.7, 0.0, 0.5)])
def test_controlnet_matches_diffusers(models, scale, start, end):
    pipe, theirs, net, _ = models
    control = dict(controlnet_conditioning_scale=scale, control_guidance_start=start, control_guidance_end=end)
    pipe.set_controlnet(net)
    try:
        ours = pipe("a red circle", latents=latents(), conditioning_frames=clip(), **control, **SETTINGS).frames
    finally:
        pipe.set_controlnet(None)
    ref = diffusers_twin(theirs, net)("a red circle", latents=latents(), conditioning_frames=clip(), **control, **SETTINGS).frames
    plain = pipe("a red circle", latents=latents(), **SETTINGS).frames
    print(f"ControlNet scale {scale} steps {start}-{end}: max abs diff vs diffusers {max_diff(ours, ref):.2e}")
    assert max_diff(ours, ref) <= 1e-4
    assert max_diff(ours, plain) > 1e-3  # the control acts


def test_multi_controlnet_matches_diffusers(models):
    pipe, theirs, a, b = models
    control = dict(controlnet_conditioning_scale=[1.0, 0.5], control_guidance_end=[1.0, 0.5])
    pipe.set_controlnet([a, b])
    try:
        ours = pipe("a red circle", latents=latents(), conditioning_frames=[clip(0), clip(1)], **control, **SETTINGS).frames
    finally:
        pipe.set_controlnet(None)
    from diffusers.models.controlnets.multicontrolnet import MultiControlNetModel

    twin = diffusers_twin(theirs, MultiControlNetModel([a, b]))
    ref = twin("a red circle", latents=latents(), conditioning_frames=[clip(0), clip(1)], **control, **SETTINGS).frames
    print(f"two ControlNets: max abs diff vs diffusers {max_diff(ours, ref):.2e}")
    assert max_diff(ours, ref) <= 1e-4


def test_guess_mode_matches_diffusers_without_guidance(models):
    """Guess mode's residual scales (0.1 to 1 from the first skip to the mid block) equal diffusers'. Under guidance
    diffusers' AnimateDiff pipelines cannot run guess mode (the conditional-only residuals meet a doubled batch); vidldm
    does what its `StableDiffusionControlNetPipeline` does: the unconditional half gets no control."""
    pipe, theirs, net, _ = models
    args = dict(SETTINGS, guidance_scale=1.0)
    pipe.set_controlnet(net)
    try:
        ours = pipe("a red circle", latents=latents(), conditioning_frames=clip(), guess_mode=True, **args).frames
        plain = pipe("a red circle", latents=latents(), conditioning_frames=clip(), **args).frames
        guided = pipe("a red circle", latents=latents(), conditioning_frames=clip(), guess_mode=True, **SETTINGS).frames
    finally:
        pipe.set_controlnet(None)
    twin = diffusers_twin(theirs, net)
    ref = twin("a red circle", latents=latents(), conditioning_frames=clip(), guess_mode=True, **args).frames
    assert max_diff(ours, ref) <= 1e-4 and max_diff(ours, plain) > 1e-4
    assert np.isfinite(guided).all()
    with pytest.raises(RuntimeError, match="must match"):  # diffusers 0.3x-0.4x: (B F) residuals, (2B F) samples
        twin("a red circle", latents=latents(), conditioning_frames=clip(), guess_mode=True, **SETTINGS)


def test_control_is_sliced_to_context_windows(models):
    """Windows of 4 frames over 6: each frame's control follows it into every window (temporal layers off, so each
    frame is made on its own and must equal the same frame made in one window)."""
    pipe, _, net, _ = models
    args = dict(SETTINGS, num_frames=6, temporal_end=0.0, latents=latents(6))
    pipe.set_controlnet(net)
    try:
        windowed = pipe("a red circle", conditioning_frames=clip(frames=6), context_frames=4, context_stride=2, **args).frames
        whole = pipe("a red circle", conditioning_frames=clip(frames=6), context_frames=6, **args).frames
    finally:
        pipe.set_controlnet(None)
    assert max_diff(windowed, whole) <= 1e-5


def test_control_inputs_are_checked(models):
    pipe, _, net, _ = models
    with pytest.raises(VidldmError, match="need a ControlNet"):
        pipe("a red circle", conditioning_frames=clip(), **SETTINGS)
    pipe.set_controlnet(net)
    try:
        for kwargs, message in (({}, "a ControlNet is set"), ({"conditioning_frames": clip(frames=3)}, "has 3 frames but the clip has 4"),
                                ({"conditioning_frames": clip(), "control_guidance_start": 0.6, "control_guidance_end": 0.4},
                                 "start before it ends"),
                                ({"conditioning_frames": clip(), "controlnet_conditioning_scale": [1.0, 2.0]}, "2 values for 1")):
            with pytest.raises(VidldmError, match=message) as err:
                pipe("a red circle", **kwargs, **SETTINGS)
            assert "\n" not in str(err.value)
    finally:
        pipe.set_controlnet(None)
    with pytest.raises(VidldmError, match="cross-attention dim 64, this model's is 32"):
        pipe.set_controlnet(tiny_controlnet(base_model()[0].unet.__class__(**{**TINY_UNET_CONFIG, "cross_attention_dim": 64})))


# ----------------------------------------------------------------------------- SparseCtrl parity

@pytest.mark.parametrize("rgb", [False, True])
def test_sparsectrl_matches_diffusers(models, rgb, monkeypatch):
    """Keyframes at frames 0 and 3 (diffusers' `controlnet_frame_indices`). The RGB model takes the keyframes as VAE
    latents: diffusers draws them from the VAE's posterior (`retrieve_latents`' default, a random sample), vidldm takes
    its mean as for every conditioning frame; the test gives diffusers the mean so the two can be compared."""
    import diffusers.pipelines.animatediff.pipeline_animatediff_sparsectrl as theirs_module

    monkeypatch.setattr(theirs_module, "retrieve_latents", lambda out, generator=None, sample_mode="sample": out.latent_dist.mode())
    pipe, theirs, _, _ = models
    net = tiny_sparsectrl(rgb=rgb)
    keys = dict(conditioning_frames=clip(7, frames=2), controlnet_frame_indices=[0, 3], controlnet_conditioning_scale=0.8)
    pipe.set_controlnet(net)
    try:
        ours = pipe("a red circle", latents=latents(), **keys, **SETTINGS).frames
    finally:
        pipe.set_controlnet(None)
    ref = diffusers_twin(theirs, net, sparse=True)("a red circle", latents=latents(), **keys, **SETTINGS).frames
    plain = pipe("a red circle", latents=latents(), **SETTINGS).frames
    print(f"SparseCtrl {'RGB' if rgb else 'scribble'}: max abs diff vs diffusers {max_diff(ours, ref):.2e}")
    assert max_diff(ours, ref) <= 1e-4
    assert max_diff(ours, plain) > 1e-3


@torch.no_grad()
def test_sparsectrl_keyframes_skip_the_temporal_decoder(models):
    """A SparseCtrl keyframe is decoded by the image decoder alone, as a known frame is: a temporal decoder would pull
    it toward its neighbours, away from the keyframe the user gave (on the shapes model, both ends within 3 px in 84%
    of the eval's clips blended, 94% kept). The frames between still go through the temporal layers."""
    from vidldm.models import TemporalDecoder

    pipe, _, _, _ = models
    td = randomize_(TemporalDecoder.from_vae_config(pipe.vae.config), std=0.05)
    keys = dict(conditioning_frames=clip(7, frames=2), controlnet_frame_indices=[0, 2])
    pipe.set_controlnet(tiny_sparsectrl(rgb=True))
    pipe.temporal_decoder = td
    try:
        made = pipe("a red circle", latents=latents(), **keys, **SETTINGS).frames[0]
        alone = pipe("a red circle", latents=latents(), temporal_decoder=False, **keys, **SETTINGS).frames[0]
    finally:
        pipe.set_controlnet(None)
        pipe.temporal_decoder = None
    np.testing.assert_allclose(made[[0, 2]], alone[[0, 2]], atol=1e-5)
    assert np.abs(made[[1, 3]] - alone[[1, 3]]).max() > 1e-3


def test_keyframes_are_checked(models):
    pipe, _, _, _ = models
    pipe.set_controlnet(tiny_sparsectrl())
    try:
        for kwargs, message in (({"controlnet_frame_indices": [0, 4]}, r"frames in \[0, 3\], got 4"),
                                ({"controlnet_frame_indices": [1, 1]}, "two keyframes on frame 1"),
                                ({"controlnet_frame_indices": [0]}, "2 keyframe images for 1")):
            with pytest.raises(VidldmError, match=message):
                pipe("a red circle", conditioning_frames=clip(frames=2), **kwargs, **SETTINGS)
    finally:
        pipe.set_controlnet(None)


def original_layout(net: SparseControlNetModel) -> dict[str, torch.Tensor]:
    """A SparseCtrl state dict in the AnimateDiff repository's layout (v3_sd15_sparsectrl_*.ckpt), made by inverting
    diffusers' conversion: motion modules under `temporal_transformer`, `attention_blocks.{0,1}`, `norms.{0,1}`,
    `ff_norm`, and the position table in both attentions."""
    import re

    out = {}
    for key, value in net.state_dict().items():
        m = re.match(r"(.*\.motion_modules\.\d+)\.(.*)", key)
        if m is None:
            out[key] = value.clone()
            continue
        prefix, rest = m.groups()
        pe = re.match(r"(transformer_blocks\.\d+)\.pos_embed\.pe$", rest)
        if pe:
            for a in (0, 1):
                out[f"{prefix}.temporal_transformer.{pe[1]}.attention_blocks.{a}.pos_encoder.pe"] = value.clone()
            continue
        for theirs, ours in (("attn1.", "attention_blocks.0."), ("attn2.", "attention_blocks.1."), ("norm1.", "norms.0."),
                             ("norm2.", "norms.1."), ("norm3.", "ff_norm.")):
            rest = re.sub(rf"(transformer_blocks\.\d+\.){re.escape(theirs)}", rf"\g<1>{ours}", rest)
        out[f"{prefix}.temporal_transformer.{rest}"] = value.clone()
    return out


@pytest.mark.parametrize("rgb", [False, True])
def test_original_sparsectrl_files_load_to_the_same_tensors(tmp_path, models, rgb):
    from safetensors.torch import save_file

    from vidldm.control import load_control_model

    pipe = models[0]
    net = tiny_sparsectrl(rgb=rgb)
    sd = original_layout(net)
    assert any(".temporal_transformer." in k for k in sd) and not any(".attn1." in k and "motion" in k for k in sd)
    torch.save({"state_dict": sd}, tmp_path / "v3_sd15_sparsectrl.ckpt")
    save_file(net.state_dict(), str(tmp_path / "diffusers_layout.safetensors"))
    net.save_pretrained(tmp_path / "folder")
    for source in ("v3_sd15_sparsectrl.ckpt", "diffusers_layout.safetensors", "folder"):
        loaded = load_control_model(tmp_path / source, "sparsectrl", pipe.unet)
        assert isinstance(loaded, SparseControlNetModel) and loaded.config.use_simplified_condition_embedding == rgb
        theirs = loaded.state_dict()
        assert theirs.keys() == net.state_dict().keys()
        assert all(torch.equal(theirs[k], v) for k, v in net.state_dict().items()), source


# ----------------------------------------------------------------------------- canny

def test_canny_draws_one_pixel_outlines():
    from vidldm.canny import canny

    frames = np.zeros((2, 32, 32, 3), np.uint8)
    frames[:, 8:24, 8:24] = 255
    edges = canny(frames)[0, :, :, 0] > 0
    assert edges.shape == (32, 32) and canny(frames).dtype == np.uint8
    ring = np.zeros((32, 32), bool)
    ring[8, 8:24] = ring[23, 8:24] = ring[8:24, 8] = ring[8:24, 23] = True
    assert np.array_equal(edges, ring)  # the square's border, one pixel wide, nothing inside or outside
    assert not canny(np.full((1, 16, 16, 3), 90, np.uint8)).any()  # a flat frame has no edges


# ----------------------------------------------------------------------------- the CLI

FAST = ["--frames", "4", "--steps", "2", "--model", "tiny", "--height", "32", "--width", "32", "-q", "--seed", "5"]


def run_cli(*argv):
    from vidldm.cli import main

    return main([str(a) for a in argv])


def frames_of(folder):
    return np.stack([np.asarray(Image.open(p)) for p in sorted(folder.glob("frame_*.png"))])


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A ControlNet folder and single file, an original-layout SparseCtrl, a control clip and keyframes on disk."""
    from safetensors.torch import save_file

    from vidldm.io import write_clip
    from vidldm.loading import tiny_pipeline

    folder = tmp_path_factory.mktemp("control")
    unet = tiny_pipeline().unet
    net = tiny_controlnet(unet)
    net.save_pretrained(folder / "controlnet")
    save_file(net.state_dict(), str(folder / "controlnet.safetensors"))
    sparse = tiny_sparsectrl(rgb=True)
    sparse.save_pretrained(folder / "sparsectrl_folder")
    torch.save({"state_dict": original_layout(sparse)}, folder / "v3_sd15_sparsectrl_rgb.ckpt")
    other = ControlNetModel.from_unet(unet.__class__(**{**TINY_UNET_CONFIG, "cross_attention_dim": 64}),
                                      conditioning_embedding_out_channels=(16, 32))
    save_file(other.state_dict(), str(folder / "sd2_controlnet.safetensors"))
    (folder / "corrupt.safetensors").write_bytes(b"\x00\x01 not a safetensors file")
    (folder / "corrupt_folder").mkdir()
    (folder / "corrupt_folder" / "config.json").write_text('{"_class_name": "SparseControlNetModel",')  # cut short
    square = np.zeros((4, 32, 32, 3), np.uint8)
    for i in range(4):
        square[i, 8:24, 4 + 2 * i : 20 + 2 * i] = 255
    write_clip(square.astype(np.float32) / 255, folder / "control.gif", 8.0)
    write_clip(square[:3].astype(np.float32) / 255, folder / "short.gif", 8.0)
    for i, still in enumerate(clip(7, frames=2)):
        still.save(folder / f"key{i}.png")
    return folder


def test_cli_controlnet_is_recorded_and_replayed(tmp_path, files):
    out = tmp_path / "clip/"
    assert run_cli("generate", "a red circle", *FAST, "--controlnet", f"{files / 'controlnet'}:0.8", "--control",
                   files / "control.gif", "--control-end", "0.5", "-o", out) == 0
    side = __import__("json").loads((tmp_path / "clip.json").read_text())
    assert side["controlnet"] == [f"{(files / 'controlnet').resolve()}:0.8"] and side["control_end"] == [0.5]
    assert run_cli("generate", "a red circle", *FAST, "-o", tmp_path / "plain/") == 0
    assert np.abs(frames_of(out).astype(int) - frames_of(tmp_path / "plain")).max() > 0  # the control acts
    assert run_cli("replay", tmp_path / "clip.json", "-o", tmp_path / "again/", "-q") == 0
    assert np.array_equal(frames_of(out), frames_of(tmp_path / "again"))
    # sidecars written before --control-end took one value per net hold a plain number: they replay the same
    (tmp_path / "old.json").write_text(__import__("json").dumps({**side, "control_end": 0.5}))
    assert run_cli("replay", tmp_path / "old.json", "-o", tmp_path / "legacy/", "-q") == 0
    assert np.array_equal(frames_of(out), frames_of(tmp_path / "legacy"))


def test_cli_control_windows_per_net(tmp_path, files):
    """`--control-end` once per net applies to each net in order: the same net twice with the ends swapped makes the
    same clip, which one end for both does not (with the first end applied to both nets, the swap would differ)."""
    net = ["--controlnet", f"{files / 'controlnet'}:0.8", "--control", files / "control.gif"]
    made = {}
    for name, ends in (("a", ["0.3", "1"]), ("b", ["1", "0.3"]), ("one", ["0.3"])):
        flags = [flag for end in ends for flag in ("--control-end", end)]
        assert run_cli("generate", "a red circle", *FAST, *net, *net, *flags, "-o", tmp_path / f"{name}/") == 0
        made[name] = frames_of(tmp_path / name)
    assert np.array_equal(made["a"], made["b"])
    assert np.abs(made["a"].astype(int) - made["one"]).max() > 0
    side = __import__("json").loads((tmp_path / "a.json").read_text())
    assert side["control_end"] == [0.3, 1.0]
    assert run_cli("replay", tmp_path / "a.json", "-o", tmp_path / "again/", "-q") == 0
    assert np.array_equal(made["a"], frames_of(tmp_path / "again"))


def test_cli_canny_single_file_restyle_and_sparsectrl(tmp_path, files):
    """A single-file ControlNet on canny edges of a plain clip, in restyle; an original-layout SparseCtrl with keyframes."""
    assert run_cli("restyle", files / "control.gif", "a red circle", *FAST[2:], "--controlnet", files / "controlnet.safetensors",
                   "--control", files / "control.gif", "--control-preprocess", "canny", "-o", tmp_path / "restyled.gif") == 0
    assert run_cli("generate", "a red circle", *FAST, "--sparsectrl", f"{files / 'v3_sd15_sparsectrl_rgb.ckpt'}:0.9",
                   "--keyframe", f"0:{files / 'key0.png'}", "--keyframe", f"3:{files / 'key1.png'}",
                   "-o", tmp_path / "sparse.gif") == 0


@pytest.mark.parametrize("command, inputs", [("animate", ["key0.png"]), ("extend", ["control.gif"]),
                                             ("inbetween", ["key0.png", "key1.png"])])
def test_cli_every_mode_takes_a_controlnet(tmp_path, files, command, inputs):
    """animate, extend and inbetween (and interpolate-frames) take the control flags as generate does."""
    given = [files / name for name in inputs]
    assert run_cli(command, *given, "a red circle", *FAST, "-o", tmp_path / "plain/") == 0
    assert run_cli(command, *given, "a red circle", *FAST, "--controlnet", files / "controlnet", "--control",
                   files / "control.gif", "-o", tmp_path / "controlled/") == 0
    assert np.abs(frames_of(tmp_path / "controlled").astype(int) - frames_of(tmp_path / "plain")).max() > 0


def test_cli_bad_control_inputs_exit_2_with_one_line_and_write_nothing(tmp_path, files, capsys):
    net, key = f"{files / 'controlnet'}", f"0:{files / 'key0.png'}"
    control = ["--controlnet", net, "--control", files / "control.gif"]
    cases = [
        (["--control", files / "control.gif"], "--control needs a ControlNet"),
        (["--controlnet", net], "1 --controlnet for 0 --control"),
        ([*control, "--control", files / "control.gif"], "1 --controlnet for 2 --control"),
        (["--keyframe", key], "--keyframe needs a SparseCtrl"),
        (["--sparsectrl", files / "sparsectrl_folder"], "--sparsectrl needs keyframes"),
        (["--sparsectrl", files / "sparsectrl_folder", "--keyframe", f"7:{files / 'key0.png'}"], r"frames in [0, 3], got 7"),
        (["--sparsectrl", files / "sparsectrl_folder", "--keyframe", key, "--keyframe", f"0:{files / 'key1.png'}"],
         "two --keyframe values on frame 0"),
        (["--sparsectrl", files / "sparsectrl_folder", "--keyframe", "first.png"], "--keyframe takes FRAME:IMAGE"),
        (["--controlnet", files / "corrupt.safetensors", "--control", files / "control.gif"], "not a valid safetensors file"),
        (["--sparsectrl", files / "corrupt_folder", "--keyframe", key], "config.json' is not valid JSON"),
        (["--controlnet", files / "sd2_controlnet.safetensors", "--control", files / "control.gif"],
         "cross-attention dim 64, this model's is 32"),
        (["--controlnet", files / "sparsectrl_folder", "--control", files / "control.gif"], "pass it with --sparsectrl"),
        (["--controlnet", net, "--control", files / "short.gif"], "has 3 frames but the clip has 4"),
        (["--controlnet", tmp_path / "missing", "--control", files / "control.gif"], "neither a file nor a diffusers folder"),
        ([*control, "--control-start", "0.8", "--control-end", "0.2"], "must be before --control-end"),
        (["--guess-mode"], "--guess-mode needs a ControlNet"),
        ([*control, "--control-start", "1.5"], "--control-start must be between 0 and 1"),
        ([*control, *control, "--control-end", "0.5", "--control-end", "0.6", "--control-end", "0.7"],
         "3 --control-end for 2 nets; give it once for every net, or once per net"),
        ([*control, *control, "--control-start", "0.2", "--control-start", "0.6", "--control-end", "0.5"],
         "--control-start (0.6) must be before --control-end (0.5) of net 2"),
    ]
    for i, (flags, message) in enumerate(cases):
        out = tmp_path / f"clip{i}.mp4"
        capsys.readouterr()
        assert run_cli("generate", "a red circle", *FAST, *flags, "-o", out) == 2, flags
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, (flags, err)
        assert not out.exists() and not out.with_suffix(".json").exists()


def test_a_sparsectrl_given_as_motion_adapter_points_at_the_flag(tmp_path):
    from safetensors.torch import save_file

    from vidldm.models.motion_formats import load_motion_adapter

    net = tiny_sparsectrl(rgb=True)
    torch.save({"state_dict": original_layout(net)}, tmp_path / "v3_sd15_sparsectrl_rgb.ckpt")
    save_file(net.state_dict(), str(tmp_path / "diffusers.safetensors"))
    for name in ("v3_sd15_sparsectrl_rgb.ckpt", "diffusers.safetensors"):
        with pytest.raises(VidldmError, match="it is a SparseCtrl model, not a motion adapter; pass it with --sparsectrl"):
            load_motion_adapter(tmp_path / name)


def sd_controlnet_layout(net: ControlNetModel, layers_per_block: int) -> dict[str, torch.Tensor]:
    """A ControlNet state dict in the original SD layout (`control_v11p_sd15_*.pth`: `control_model.input_blocks...`,
    `zero_convs`, `middle_block_out`, `input_hint_block`), made by inverting diffusers' single-file conversion."""
    import re

    fixed = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
             "conv_in": "input_blocks.0.0", "controlnet_cond_embedding.conv_in": "input_hint_block.0",
             "controlnet_cond_embedding.conv_out": "input_hint_block.14", "controlnet_mid_block": "middle_block_out.0",
             "mid_block.resnets.0": "middle_block.0", "mid_block.attentions.0": "middle_block.1",
             "mid_block.resnets.1": "middle_block.2"}
    resnet = (("norm1", "in_layers.0"), ("conv1", "in_layers.2"), ("norm2", "out_layers.0"), ("conv2", "out_layers.3"),
              ("time_emb_proj", "emb_layers.1"), ("conv_shortcut", "skip_connection"))
    out = {}
    for key, value in net.state_dict().items():
        new = key
        for ours, theirs in fixed.items():
            if key.startswith(ours + "."):
                new = theirs + key[len(ours):]
        if m := re.match(r"down_blocks\.(\d+)\.(resnets|attentions|downsamplers)\.(\d+)\.(.*)", key):
            b, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
            block = 1 + b * (layers_per_block + 1) + (layers_per_block if kind == "downsamplers" else j)
            new = {"resnets": f"input_blocks.{block}.0.{rest}", "attentions": f"input_blocks.{block}.1.{rest}",
                   "downsamplers": f"input_blocks.{block}.0.op.{rest.removeprefix('conv.')}"}[kind]
        elif m := re.match(r"controlnet_down_blocks\.(\d+)\.(.*)", key):
            new = f"zero_convs.{m[1]}.0.{m[2]}"
        elif m := re.match(r"controlnet_cond_embedding\.blocks\.(\d+)\.(.*)", key):
            new = f"input_hint_block.{2 * (int(m[1]) + 1)}.{m[2]}"
        if "resnets" in key or new.startswith("middle_block.0") or new.startswith("middle_block.2"):
            for ours, theirs in resnet:
                new = new.replace(f".{ours}.", f".{theirs}.")
        out["control_model." + new] = value.clone()
    return out


def test_sd_controlnet_single_files_load_to_the_same_tensors(tmp_path, models):
    """Original-layout (`control_model.*`) and diffusers-layout single files; SD's hint encoder (16, 32, 96, 256), whose
    layout diffusers' converter knows."""
    from safetensors.torch import save_file

    from vidldm.control import load_control_model

    unet = models[0].unet
    net = randomize_(ControlNetModel.from_unet(unet), std=0.05, seed=3)
    sd = sd_controlnet_layout(net, unet.config.layers_per_block)
    assert any(k.startswith("control_model.input_blocks.1.0.in_layers") for k in sd)
    save_file(sd, str(tmp_path / "control_sd15.safetensors"))
    torch.save(sd, tmp_path / "control_sd15.pth")
    save_file(net.state_dict(), str(tmp_path / "diffusers.safetensors"))
    for name in ("control_sd15.safetensors", "control_sd15.pth", "diffusers.safetensors"):
        loaded = load_control_model(tmp_path / name, "controlnet", unet).state_dict()
        assert loaded.keys() == net.state_dict().keys(), name
        assert all(torch.equal(loaded[k], v) for k, v in net.state_dict().items()), name


def test_controlnet_offloads_with_the_unet(models):
    """The ControlNet is a pipeline component: sequential offload hooks its layers too, the frames stay bitwise equal."""
    from vidldm.loading import tiny_pipeline

    base, _ = base_model()
    net = tiny_controlnet(base.unet)
    pipe = base.with_parts(controlnet=net)
    assert pipe.controlnet is net and "controlnet" in pipe.components
    want = pipe("a red circle", latents=latents(), conditioning_frames=clip(), **SETTINGS).frames
    later = tiny_controlnet(base.unet)
    pipe.enable_sequential_cpu_offload(device="cpu")
    assert {p.device.type for p in net.parameters()} == {"meta"}
    assert np.array_equal(pipe("a red circle", latents=latents(), conditioning_frames=clip(), **SETTINGS).frames, want)
    assert tiny_pipeline().controlnet is None
    with pytest.raises(VidldmError, match="set the ControlNet before enabling CPU offload"):
        pipe.set_controlnet(later)  # its layers would have no hooks: it would run off the device


def test_controlnet_and_sparsectrl_together(models):
    """A ControlNet and a SparseCtrl at once (diffusers has no such pipeline): their residuals add up, so the result is
    neither one's alone."""
    pipe, _, net, _ = models
    sparse = tiny_sparsectrl()
    keys = dict(controlnet_frame_indices=[0, 3])
    made = {}
    for name, nets, frames in (("both", [net, sparse], [clip(), clip(7, frames=2)]), ("control", net, clip()),
                               ("sparse", sparse, clip(7, frames=2))):
        pipe.set_controlnet(nets)
        try:
            made[name] = pipe("a red circle", latents=latents(), conditioning_frames=frames, **keys, **SETTINGS).frames
        finally:
            pipe.set_controlnet(None)
    assert max_diff(made["both"], made["control"]) > 1e-3 and max_diff(made["both"], made["sparse"]) > 1e-3


def test_sdxl_controlnets_are_refused():
    from tests.test_sdxl import sdxl_unet
    from vidldm.control import check_fits

    unet = sdxl_unet()
    with pytest.raises(VidldmError, match="SDXL ControlNets are not supported yet"):
        check_fits(ControlNetModel.from_unet(unet), unet, "the ControlNet")


def test_guess_mode_under_guidance_leaves_the_unconditional_half_alone(models):
    """What diffusers' StableDiffusionControlNetPipeline does in guess mode: the net runs on the conditional half only
    (its text, its latents) and the unconditional half gets zero residuals."""
    from vidldm.control import ControlResiduals, ControlUnit, pixels

    pipe, _, net, _ = models
    cond = pixels(np.stack([np.asarray(im) for im in clip()]), 32, 32)
    x, t = torch.randn(2, 4, FRAMES, 16, 16), torch.full((2, FRAMES), 500)
    text = torch.randn(2, 7, 32)
    control = ControlResiduals([ControlUnit(net, cond, 1.0, 0.0, 1.0)], guess_mode=True, num_steps=2)
    out = control(x, t, text, slice(0, FRAMES), 0, guided=True)
    alone = control(x[1:], t[1:], text[1:], slice(0, FRAMES), 0, guided=False)
    for both, one in zip([*out["down_block_additional_residuals"], out["mid_block_additional_residual"]],
                         [*alone["down_block_additional_residuals"], alone["mid_block_additional_residual"]]):
        uncond, conditional = both.chunk(2)
        assert not uncond.any() and torch.equal(conditional, one) and one.abs().max() > 0


def test_set_controlnet_after_offload_is_refused(models):
    base, _ = base_model()
    base.model_offload = object()  # what enable_model_cpu_offload sets (it needs a GPU or a device to be called)
    with pytest.raises(VidldmError, match="before enabling CPU offload"):
        base.set_controlnet(models[2])
