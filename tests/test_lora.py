"""LoRAs (image, motion, several with weights, fused) give the same output in vidldm as in diffusers'
`AnimateDiffPipeline` on the same base weights and the same file; bad LoRAs end in one line, exit 2, no file."""

import copy

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline
from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model
from safetensors.torch import load_file, save_file

from vidldm.errors import VidldmError
from vidldm.loading import tiny_pipeline
from vidldm.models import motion_lora
from vidldm.models.temporal import SelfAttention
from vidldm.models.tiny import tiny_motion_adapter

FRAMES = 4
SETTINGS = dict(num_frames=FRAMES, height=32, width=32, num_inference_steps=2, guidance_scale=7.5, output_type="np")


def base_model():
    """A tiny pipeline whose adapter diffusers runs exactly (per-clip normalisation), and its diffusers twin
    (`to_diffusers` copies the UNet and the adapter; the text encoder is copied too, as LoRAs change it)."""
    base = tiny_pipeline()
    pipe = base.with_parts(motion_adapter=tiny_motion_adapter(base.unet, randomize=True, norm_mode="per_clip"))
    pipe.set_progress_bar_config(disable=True)
    theirs = pipe.to_diffusers()
    theirs.register_modules(text_encoder=copy.deepcopy(pipe.text_encoder))
    theirs.set_progress_bar_config(disable=True)
    return pipe, theirs


def random_lora(model, targets, rank=4, seed=1, std=0.05):
    """peft's LoRA layers on a copy of `model` with random A and B: their state dict (peft key names)."""
    torch.manual_seed(seed)
    model = inject_adapter_in_model(LoraConfig(r=rank, lora_alpha=rank, target_modules=targets, init_lora_weights=False),
                                    copy.deepcopy(model))
    return {k: torch.randn_like(v) * std for k, v in get_peft_model_state_dict(model).items()}


def image_lora_file(pipe, path, seed=1, text=True):
    """An image LoRA (UNet + text encoder) written by diffusers' own `save_lora_weights`."""
    unet = random_lora(pipe.unet, ["to_q", "to_k", "to_v", "to_out.0"], seed=seed)
    te = random_lora(pipe.text_encoder, ["q_proj", "k_proj", "v_proj", "out_proj"], seed=seed + 100) if text else None
    StableDiffusionPipeline.save_lora_weights(path.parent, unet_lora_layers=unet, text_encoder_lora_layers=te,
                                              weight_name=path.name)
    return path


def animatediff_motion_lora(pipe, rank=4, seed=2, std=0.05) -> dict[str, torch.Tensor]:
    """A motion LoRA in AnimateDiff's original layout (as guoyww's v2_lora_*.ckpt): `processor.to_q_lora.down`."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for name, module in pipe.motion_adapter.named_modules():
        if isinstance(module, SelfAttention):
            for proj, layer in (("to_q", module.to_q), ("to_k", module.to_k), ("to_v", module.to_v), ("to_out", module.to_out[0])):
                sd[f"{name}.processor.{proj}_lora.down.weight"] = torch.randn(rank, layer.in_features, generator=g) * std
                sd[f"{name}.processor.{proj}_lora.up.weight"] = torch.randn(layer.out_features, rank, generator=g) * std
    return sd


def diffusers_converted(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """What diffusers' scripts/convert_animatediff_motion_lora_to_diffusers.py writes for an AnimateDiff motion LoRA
    (its `convert_motion_module` renames, then the `unet.` prefix)."""
    out = {}
    for k, v in sd.items():
        new = (k.replace(".norms.0", ".norm1").replace(".norms.1", ".norm2").replace(".ff_norm", ".norm3")
               .replace(".attention_blocks.0", ".attn1").replace(".attention_blocks.1", ".attn2")
               .replace(".temporal_transformer", ""))
        out[f"unet.{new}"] = v
    return out


def unet_inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, 4, FRAMES, 4, 4, generator=g), torch.randn(1, 8, 32, generator=g)


@torch.no_grad()
def unet_diff(pipe, theirs) -> float:
    x, ctx = unet_inputs()
    ours = pipe.video_unet(x, 321, ctx)
    ref = theirs.unet(x, 321, ctx.repeat_interleave(FRAMES, 0)).sample  # diffusers repeats the text per frame
    return (ours - ref).abs().max().item()


def pipeline_diff(pipe, theirs) -> tuple[float, np.ndarray]:
    latents = torch.randn(1, 4, FRAMES, 4, 4, generator=torch.Generator().manual_seed(3))
    ours = pipe("a red circle", latents=latents, **SETTINGS).frames
    ref = theirs("a red circle", latents=latents, **SETTINGS).frames
    return float(np.abs(ours - ref).max()), ours


@pytest.fixture(scope="module")
def plain_frames():
    pipe, theirs = base_model()
    diff, frames = pipeline_diff(pipe, theirs)
    assert diff <= 1e-4
    return frames


# ----------------------------------------------------------------------------- parity with diffusers

def test_image_lora_unet_and_text_encoder_match_diffusers(tmp_path, plain_frames):
    pipe, theirs = base_model()
    path = image_lora_file(pipe, tmp_path / "style.safetensors")
    pipe.load_lora_weights(str(path), adapter_name="style")
    theirs.load_lora_weights(str(path), adapter_name="style")
    assert pipe.get_list_adapters() == {"unet": ["style"], "text_encoder": ["style"]}
    assert unet_diff(pipe, theirs) <= 1e-4
    diff, frames = pipeline_diff(pipe, theirs)
    assert diff <= 1e-4
    assert np.abs(frames - plain_frames).max() > 1e-3  # the LoRA acts
    pipe.unload_lora_weights()
    assert pipeline_diff(pipe, base_model()[1])[0] <= 1e-4  # and unloading gives the base model back


def kohya(sd: dict[str, torch.Tensor], prefix: str, alpha: float) -> dict[str, torch.Tensor]:
    """peft keys as kohya's sd-scripts / A1111 write them: `lora_unet_<module_path_with_underscores>.lora_down.weight`,
    `.lora_up.weight` and a per-module `.alpha`."""
    out = {}
    for key, value in sd.items():
        module, side = key.rsplit(".lora_", 1)
        name = f"{prefix}_{module.replace('.', '_')}"
        out[f"{name}.lora_{'down' if side.startswith('A') else 'up'}.weight"] = value
        out[f"{name}.alpha"] = torch.tensor(alpha)
    return out


def test_kohya_image_lora_matches_diffusers(tmp_path, plain_frames):
    pipe, theirs = base_model()
    unet = random_lora(pipe.unet, ["to_q", "to_k", "to_v", "to_out.0"], seed=4)
    te = random_lora(pipe.text_encoder, ["q_proj", "k_proj", "v_proj", "out_proj"], seed=5)
    path = tmp_path / "kohya.safetensors"
    save_file({**kohya(unet, "lora_unet", 2.0), **kohya(te, "lora_te", 2.0)}, str(path))  # alpha 2, rank 4: scale 0.5
    pipe.load_lora_weights(str(path))
    theirs.load_lora_weights(str(path))
    assert {k for k, v in pipe.get_list_adapters().items() if v} == {"unet", "text_encoder"}
    assert unet_diff(pipe, theirs) <= 1e-4
    diff, frames = pipeline_diff(pipe, theirs)
    assert diff <= 1e-4 and np.abs(frames - plain_frames).max() > 1e-3


@pytest.mark.parametrize("layout", ["animatediff", "diffusers"])
def test_motion_lora_matches_diffusers(tmp_path, layout, plain_frames):
    pipe, theirs = base_model()
    original = animatediff_motion_lora(pipe)
    path = tmp_path / "zoom.safetensors"
    save_file(original if layout == "animatediff" else diffusers_converted(original), str(path))
    pipe.load_lora_weights(str(path), adapter_name="zoom")
    theirs.load_lora_weights(diffusers_converted(original), adapter_name="zoom")
    assert set(pipe.get_list_adapters()) == {"motion_adapter"}  # the image UNet is untouched
    assert unet_diff(pipe, theirs) <= 1e-4
    diff, frames = pipeline_diff(pipe, theirs)
    assert diff <= 1e-4 and np.abs(frames - plain_frames).max() > 1e-3


def test_two_loras_with_weights_then_fuse_and_unfuse_match_diffusers(tmp_path):
    pipe, theirs = base_model()
    style = image_lora_file(pipe, tmp_path / "style.safetensors")
    motion = diffusers_converted(animatediff_motion_lora(pipe))
    for p in (pipe, theirs):
        p.load_lora_weights(str(style), adapter_name="style")
        p.load_lora_weights(motion, adapter_name="zoom")
        p.set_adapters(["style", "zoom"], [0.6, 1.3])
    weighted = pipeline_diff(pipe, theirs)
    assert unet_diff(pipe, theirs) <= 1e-4 and weighted[0] <= 1e-4
    for p in (pipe, theirs):
        p.fuse_lora()
    fused = pipeline_diff(pipe, theirs)
    assert fused[0] <= 1e-4 and np.abs(fused[1] - weighted[1]).max() <= 1e-4  # fusing keeps the output
    for p in (pipe, theirs):
        p.unfuse_lora()
        p.set_adapters(["style", "zoom"], [1.0, 0.0])
    assert pipeline_diff(pipe, theirs)[0] <= 1e-4


# ----------------------------------------------------------------------------- the CLI

FAST = ["--frames", "4", "--steps", "2", "--model", "tiny", "--height", "16", "--width", "16", "-q", "--seed", "5"]


@pytest.fixture(scope="module")
def lora_files(tmp_path_factory):
    """Files for the built-in tiny model: an image LoRA (diffusers' writer), an AnimateDiff motion LoRA as a
    pickle (.ckpt, like guoyww's), one for another base model, and broken ones."""
    folder = tmp_path_factory.mktemp("loras")
    tiny = tiny_pipeline()
    files = {"image": image_lora_file(tiny, folder / "style.safetensors"), "motion": folder / "zoom.ckpt"}
    torch.save({"state_dict": animatediff_motion_lora(tiny)}, files["motion"])
    other = tiny_pipeline()
    other.register_modules(unet=type(tiny.unet)(**{**tiny.unet.config, "block_out_channels": (16, 32), "norm_num_groups": 8}))
    files["other_base"] = image_lora_file(other, folder / "other.safetensors", text=False)
    alphas = {k.replace(".down.weight", ".alpha"): torch.tensor(2.0) for k in animatediff_motion_lora(tiny) if ".down." in k}
    files["motion_alpha"] = folder / "alpha.safetensors"
    save_file({**animatediff_motion_lora(tiny), **alphas}, str(files["motion_alpha"]))
    files["corrupt"] = folder / "corrupt.safetensors"
    files["corrupt"].write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{not json")
    files["truncated"] = folder / "truncated.safetensors"
    files["truncated"].write_bytes(files["image"].read_bytes()[:-100])
    return files


def run(*argv):
    from vidldm.cli import main

    return main([str(a) for a in argv])


def frames_of(folder):
    from PIL import Image

    return np.stack([np.asarray(Image.open(p)) for p in sorted(folder.glob("frame_*.png"))])


def test_cli_loras_with_weights_are_recorded_and_replayed(tmp_path, lora_files):
    import json

    assert run("generate", "a red circle", *FAST, "-o", tmp_path / "plain/") == 0
    out = tmp_path / "clip/"
    assert run("generate", "a red circle", *FAST, "--lora", f"{lora_files['image']}:0.7",
               "--motion-lora", lora_files["motion"], "-o", out) == 0
    side = json.loads((tmp_path / "clip.json").read_text())
    assert side["lora"] == [f"{lora_files['image'].resolve()}:0.7"]
    assert side["motion_lora"] == [f"{lora_files['motion'].resolve()}:1.0"]
    assert np.abs(frames_of(out).astype(int) - frames_of(tmp_path / "plain")).max() > 0  # the LoRAs act
    assert run("replay", tmp_path / "clip.json", "-o", tmp_path / "again/", "-q") == 0
    assert np.array_equal(frames_of(out), frames_of(tmp_path / "again"))
    replayed = json.loads((tmp_path / "again.json").read_text())
    assert (replayed["lora"], replayed["motion_lora"]) == (side["lora"], side["motion_lora"])


def test_cli_two_image_loras_and_every_mode_takes_the_flags(tmp_path, lora_files):
    from vidldm.cli import build_parser

    for mode, inputs in (("generate", ["p"]), ("animate", ["i.png", "p"]), ("restyle", ["v.mp4", "p"]), ("extend", ["v.mp4", "p"])):
        args = build_parser().parse_args([mode, *inputs, "--lora", "a.safetensors", "--lora", "b:c.safetensors:0.5",
                                          "--motion-lora", "m.ckpt:-1"])
        assert args.lora == ["a.safetensors", "b:c.safetensors:0.5"] and args.motion_lora == ["m.ckpt:-1"]
    image = tmp_path / "still.png"
    from PIL import Image

    Image.fromarray(np.full((16, 16, 3), 200, np.uint8)).save(image)
    assert run("animate", image, "a red circle", *FAST, "--lora", f"{lora_files['image']}:0.5",
               "--lora", f"{lora_files['image']}:0.5", "-o", tmp_path / "anim.gif") == 0


def test_lcm_lora_with_the_lcm_scheduler_makes_a_clip(tmp_path, lora_files):
    """An LCM / AnimateLCM LoRA is an image LoRA on the UNet, sampled with --scheduler lcm in 4-8 steps."""
    out = tmp_path / "lcm.mp4"
    argv = [a for a in FAST if a not in ("--steps", "2")]
    assert run("generate", "a red circle", *argv, "--lora", lora_files["image"], "--scheduler", "lcm", "--steps", 4,
               "--guidance", 1.5, "-o", out) == 0
    assert out.stat().st_size > 0


def test_parse_lora_spec_splits_on_the_last_colon_before_a_number():
    from vidldm.sampling_settings import parse_lora_spec

    assert parse_lora_spec("zoom.ckpt") == ("zoom.ckpt", 1.0)
    assert parse_lora_spec("a:b.safetensors:0.8") == ("a:b.safetensors", 0.8)
    assert parse_lora_spec("a:b.safetensors") == ("a:b.safetensors", 1.0)
    assert parse_lora_spec("x.safetensors:-1e-1") == ("x.safetensors", -0.1)
    with pytest.raises(VidldmError, match="finite"):
        parse_lora_spec("x.safetensors:nan")


class Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("flag, name, message", [
    ("--lora", "other_base", "does not fit this model"),
    ("--lora", "corrupt", "not a valid safetensors file"),
    ("--lora", "truncated", "not a valid safetensors file"),
    ("--lora", "motion", "is an AnimateDiff motion LoRA (motion-module keys); pass it with --motion-lora"),
    ("--motion-lora", "image", "it is an image LoRA; pass it with --lora"),
    ("--lora", "image:abc", "the weight 'abc' after the last ':' is not a number"),
    ("--lora", "image:inf", "LoRA weight must be a finite number"),
    ("--motion-lora", "missing.ckpt", "does not exist"),
    ("--motion-lora", "motion_alpha", "carries per-layer alphas"),
    ("--motion-lora", "exploit", "needs arbitrary code to unpickle"),
])
def test_bad_lora_is_one_line_exit_2_and_no_file(tmp_path, capsys, lora_files, flag, name, message):
    marker = tmp_path / "pwned"
    key, _, weight = name.partition(":")
    if key == "exploit":
        path = tmp_path / "evil.ckpt"
        torch.save({"state_dict": {"x.lora.down.weight": torch.zeros(1)}, "payload": Exploit(marker)}, path)
    else:
        path = lora_files.get(key, tmp_path / key)
    out = tmp_path / "out.mp4"
    code = run("generate", "a red circle", *FAST, flag, f"{path}:{weight}" if weight else path, "-o", out)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("vidldm: error: ") and message in err[0], err
    assert not out.exists() and not out.with_suffix(".json").exists() and not marker.exists()


def test_python_api_refuses_a_lora_for_another_base_and_keeps_the_pipeline(lora_files):
    pipe = tiny_pipeline()
    with pytest.raises(VidldmError, match="does not fit this model"):
        pipe.load_lora_weights(str(lora_files["other_base"]))
    assert pipe.get_list_adapters() == {} or not any(pipe.get_list_adapters().values())
    pipe.load_lora_weights(lora_files["image"].parent, weight_name=lora_files["image"].name)  # nothing left in the way
    assert "default_0" in pipe.get_list_adapters()["unet"]
    with pytest.raises(VidldmError, match="is loaded already"):
        pipe.load_lora_weights(lora_files["image"], adapter_name="default_0")


@torch.no_grad()
def test_fused_then_unloaded_loras_export_to_diffusers_merged(lora_files):
    pipe, _ = base_model()
    pipe.load_lora_weights(str(lora_files["image"]))
    pipe.load_lora_weights(str(lora_files["motion"]))
    with pytest.raises(VidldmError, match="has LoRAs loaded"):
        pipe.to_diffusers()
    x, ctx = unet_inputs()
    with_loras = pipe.video_unet(x, 321, ctx)
    pipe.fuse_lora()
    pipe.unload_lora_weights()  # diffusers' way to keep them merged
    assert not any(pipe.get_list_adapters().values())
    assert (pipe.video_unet(x, 321, ctx) - with_loras).abs().max() <= 1e-4
    assert unet_diff(pipe, pipe.to_diffusers()) <= 1e-4


# ----------------------------------------------------------------------------- trained motion LoRAs

from tests.test_train import recipe, video_folder  # noqa: E402,F401  (the tiny training data and recipe of test_train)


def test_trained_motion_lora_export_loads_in_diffusers_and_in_vidldm(tmp_path, video_folder):  # noqa: F811
    from pathlib import Path

    from vidldm.loading import load_pipeline
    from vidldm.train.config import load_config
    from vidldm.train.trainer import Trainer

    adapter = tmp_path / "adapter"  # per-clip normalisation: an adapter diffusers runs exactly
    tiny_motion_adapter(tiny_pipeline().unet, randomize=True, norm_mode="per_clip").save_pretrained(adapter)
    config = load_config(recipe(tmp_path, video_folder, model={"motion_adapter": str(adapter)}, checkpoint={"every": 100},
                                train={"max_steps": 2, "lora_rank": 4, "learning_rate": 1e-2, "frame_conditioning": 0}))
    Trainer(config).train()
    out = Path(config.output_dir)
    exported = load_file(str(out / "motion_lora.safetensors"))
    assert exported and all(k.startswith("unet.") and (".attn1." in k or ".attn2." in k) for k in exported)
    assert all(".processor.to_" in k for k in load_file(str(out / "motion_lora_animatediff.safetensors")))

    def fresh():
        pipe = load_pipeline("tiny", adapter, device="cpu")
        pipe.set_progress_bar_config(disable=True)
        return pipe

    pipe, plain = fresh(), fresh()
    theirs = pipe.to_diffusers()
    theirs.load_lora_weights(str(out / "motion_lora.safetensors"))  # diffusers' own loader reads the export
    pipe.load_lora_weights(str(out / "motion_lora.safetensors"))
    assert unet_diff(pipe, theirs) <= 1e-4
    x, ctx = unet_inputs()
    with torch.no_grad():
        ours, base = pipe.video_unet(x, 321, ctx), plain.video_unet(x, 321, ctx)
        merged = load_pipeline(str(out / "pipeline"), device="cpu").video_unet(x, 321, ctx)
        plain.load_lora_weights(str(out / "motion_lora_animatediff.safetensors"))
        animatediff = plain.video_unet(x, 321, ctx)
    assert (ours - base).abs().max() > 1e-5  # the LoRA trained and acts
    assert (ours - merged).abs().max() <= 1e-4  # the export is the model the run saved, merged
    assert (ours - animatediff).abs().max() <= 1e-6  # and both layouts are the same LoRA
    assert set(motion_lora.to_vidldm(exported)) == set(motion_lora.to_vidldm(load_file(str(out / "motion_lora_animatediff.safetensors"))))


@torch.no_grad()
def test_fast_paths_and_loras(lora_files):
    """Fused q/k/v projections are snapshots of the weights: loading a LoRA under them is refused, and fusing
    after loading leaves the LoRA layers unfused, so the output keeps the LoRA."""
    pipe = tiny_pipeline()
    pipe.enable_fast_paths(channels_last=False)
    with pytest.raises(VidldmError, match="unfuse_qkv_projections"):
        pipe.load_lora_weights(lora_files["motion"])
    pipe.disable_fast_paths()
    pipe.load_lora_weights(lora_files["motion"])
    pipe.load_lora_weights(lora_files["image"])
    x, ctx = unet_inputs()
    plain = pipe.video_unet(x, 321, ctx)
    pipe.enable_fast_paths(channels_last=False)
    assert (pipe.video_unet(x, 321, ctx) - plain).abs().max() <= 1e-5


def test_run_files_take_loras_as_animatediff_cli_writes_them(tmp_path, lora_files):
    """`lora_map` / `motion_lora_map` (animatediff-cli-prompt-travel) and `lora` lists become the repeatable flags,
    paths beside the run file are found, and each clip's sidecar records them as the CLI's would."""
    import json

    import yaml

    (tmp_path / "style.safetensors").write_bytes(lora_files["image"].read_bytes())
    run_file = tmp_path / "run.yaml"
    run_file.write_text(yaml.safe_dump({
        "model": "tiny", "steps": 2, "frames": 4, "height": 16, "width": 16, "prompt": "a red circle", "seed": 3,
        "lora_map": {"style.safetensors": 0.7}, "motion_lora": [f"{lora_files['motion']}:0.5"]}))
    assert run("run", run_file, "-o", tmp_path / "out", "-q") == 0
    [sidecar] = (tmp_path / "out").glob("*.json")
    side = json.loads(sidecar.read_text())
    assert side["lora"] == [f"{(tmp_path / 'style.safetensors').resolve()}:0.7"]
    assert side["motion_lora"] == [f"{lora_files['motion'].resolve()}:0.5"]
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"model": "tiny", "prompt": "a", "lora_map": {"missing.safetensors": 1}}))
    assert run("run", bad, "-o", tmp_path / "never") == 2
    assert not (tmp_path / "never").exists()
