"""`load_pipeline`: one entry point for every model a user may own.

- `"tiny"`: a tiny random pipeline built in code (tests, demos; makes noise, not pictures);
- a vidldm pipeline folder (`VideoPipeline.save_pretrained`), or one in the shipped model's layout
  (`scripts/export_shapes.py`: vae/, unet/, motion_adapter/, sampling.json; MiniLM text encoder);
- a local diffusers Stable Diffusion folder (1.x / 2.x) + `motion_adapter=` (an AnimateDiff
  `.ckpt`/`.safetensors`, a diffusers `MotionAdapter` folder or a vidldm adapter folder);
- a single-file SD checkpoint (`.safetensors`/`.ckpt`) + `config=` a local diffusers folder for its configs;
- a Hugging Face Hub id, only when the user names one (offline this fails with one clear line).
Nothing is downloaded unless the user asks for a hub id.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import torch

from vidldm.errors import VidldmError
from vidldm.models.motion import MotionAdapter
from vidldm.models.motion_formats import load_motion_adapter
from vidldm.pipeline import VideoPipeline
from vidldm.schedulers import base_model_schedule, default_scheduler

BUILTIN = ("tiny", "shapes", "shapes-init")
DTYPES = {"fp32": torch.float32, "float32": torch.float32, "fp16": torch.float16, "float16": torch.float16,
          "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}


def tiny_pipeline(seed: int = 0, max_frames: int = 16) -> VideoPipeline:
    """A random SD-shaped pipeline small enough for CPU tests; it makes noise, not pictures (32x32 by default)."""
    from vidldm.models.tiny import byte_tokenizer, tiny_motion_adapter, tiny_text_encoder, tiny_unet, tiny_vae

    unet = tiny_unet(seed)
    return VideoPipeline(
        vae=tiny_vae(seed), text_encoder=tiny_text_encoder(seed), tokenizer=byte_tokenizer(),
        unet=unet, motion_adapter=tiny_motion_adapter(unet, seed, randomize=True, max_seq_length=max_frames),
        scheduler=default_scheduler(),
    )


def parse_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise VidldmError(f"unknown dtype '{dtype}'; choose one of: fp32, fp16, bf16")
    return DTYPES[dtype]


def load_pipeline(
    name_or_path: str | os.PathLike = "tiny",
    motion_adapter: str | os.PathLike | MotionAdapter | None = None,
    *,
    config: str | os.PathLike | None = None,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    fresh_adapter_frames: int | None = None,
) -> VideoPipeline:
    """Load a `VideoPipeline` from any supported source (see the module docstring).

    `fresh_adapter_frames`: for training, a Stable Diffusion base without `motion_adapter` gets a
    new zero-initialised adapter of this length instead of an error (and sizes the tiny model's)."""
    torch_dtype = parse_dtype(dtype)
    adapter = _adapter(motion_adapter)
    name = str(name_or_path)
    path = Path(name).expanduser()
    if name in BUILTIN:
        pipe = _with_adapter(_builtin(name, fresh_adapter_frames), adapter)
    elif path.is_dir():
        pipe = _from_folder(path, adapter, fresh_adapter_frames)
    elif path.is_file():
        pipe = _from_single_file(path, adapter, config, fresh_adapter_frames)
    elif _looks_like_hub_id(name) and not path.suffix:
        pipe = _from_hub(name, adapter)
    else:
        raise VidldmError(
            f"unknown model '{name}': not a built-in ({', '.join(BUILTIN)}), a folder or a checkpoint file"
        )
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        if torch_dtype is not None and torch_dtype != pipe.unet.dtype:
            pipe = pipe.to(dtype=torch_dtype)
        return pipe.to(device)
    except (RuntimeError, AssertionError) as err:
        raise VidldmError(f"cannot use device '{device}': {str(err).splitlines()[0]}") from err


def _builtin(name: str, frames: int | None) -> VideoPipeline:
    if name == "tiny":
        return tiny_pipeline(max_frames=frames or 16)
    from vidldm.models.shapes import shapes_init_pipeline, shapes_pipeline

    if name == "shapes-init":
        return shapes_init_pipeline()
    return shapes_pipeline()


def _adapter(motion_adapter) -> MotionAdapter | None:
    if motion_adapter is None or isinstance(motion_adapter, MotionAdapter):
        return motion_adapter
    return load_motion_adapter(motion_adapter)


def _with_adapter(pipe: VideoPipeline, adapter: MotionAdapter | None) -> VideoPipeline:
    """`pipe` with the adapter the user gave in place of its own (the same pipeline when none was given)."""
    return pipe if adapter is None else pipe.with_parts(motion_adapter=adapter)


def _from_folder(path: Path, adapter: MotionAdapter | None, fresh: int | None = None) -> VideoPipeline:
    index = path / "model_index.json"
    if not index.exists():
        from vidldm.models.shapes import is_shapes_folder, shapes_pipeline

        if is_shapes_folder(path):  # an exported shapes model: its text encoder is the MiniLM package's
            return _with_adapter(shapes_pipeline(path), adapter)
        raise VidldmError(f"'{path}' has no model_index.json; give a vidldm or diffusers pipeline folder, or an "
                          "exported shapes model (vae/, unet/ and motion_adapter/, each with a config.json)")
    kind = json.loads(index.read_text()).get("_class_name")
    if kind == "VideoPipeline":
        return _with_adapter(VideoPipeline.from_pretrained(str(path), local_files_only=True), adapter)
    if kind in ("StableDiffusionPipeline", "AnimateDiffPipeline"):
        return _from_diffusers_parts(str(path), adapter, kind, fresh=fresh)
    raise VidldmError(f"'{path}' holds a {kind}; vidldm loads VideoPipeline and Stable Diffusion 1.x/2.x folders")


def _from_diffusers_parts(path: str, adapter: MotionAdapter | None, kind: str, fresh: int | None = None, **hub) -> VideoPipeline:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import AutoTokenizer, CLIPTextModel

    local = {"local_files_only": True} if not hub else {}
    unet = UNet2DConditionModel.from_pretrained(path, subfolder="unet", **local, **hub)
    if adapter is None and kind == "AnimateDiffPipeline":
        from diffusers import MotionAdapter as DiffusersMotionAdapter

        from vidldm.models.motion_formats import from_diffusers

        adapter = from_diffusers(DiffusersMotionAdapter.from_pretrained(path, subfolder="motion_adapter", **local, **hub))
    if adapter is None and fresh:
        adapter = MotionAdapter.from_unet_config(unet.config, max_seq_length=fresh)
    if adapter is None:
        raise VidldmError("a Stable Diffusion model needs temporal layers: pass --motion-adapter (an AnimateDiff .ckpt/.safetensors or an adapter folder)")
    return VideoPipeline(
        vae=AutoencoderKL.from_pretrained(path, subfolder="vae", **local, **hub),
        text_encoder=CLIPTextModel.from_pretrained(path, subfolder="text_encoder", **local, **hub),
        tokenizer=AutoTokenizer.from_pretrained(path, subfolder="tokenizer", **local, **hub),
        unet=unet, motion_adapter=adapter,
        # AnimateDiff samples with DDIM over linear betas; keep what the base model was trained for.
        scheduler=default_scheduler(**base_model_schedule(_scheduler_config(path, local, hub))),
    )


def _scheduler_config(path: str, local: dict, hub: dict) -> dict:
    """The keys the folder's scheduler config sets (none when it has no scheduler folder)."""
    from diffusers import DDIMScheduler

    try:
        return dict(DDIMScheduler.load_config(path, subfolder="scheduler", **local, **hub))
    except (OSError, ValueError):
        return {}


def _from_single_file(path: Path, adapter: MotionAdapter | None, config, fresh: int | None = None) -> VideoPipeline:
    if path.suffix.lower() not in (".safetensors", ".ckpt"):
        raise VidldmError(f"'{path.name}' is not a model file; give a .safetensors/.ckpt checkpoint or a folder")
    if config is None:
        raise VidldmError("a single-file checkpoint needs config=<a local diffusers SD folder> for its configs and tokenizer (no download)")
    if adapter is None and not fresh:
        raise VidldmError("a Stable Diffusion checkpoint needs temporal layers: pass --motion-adapter")
    from diffusers import StableDiffusionPipeline

    try:
        sd = StableDiffusionPipeline.from_single_file(str(path), config=str(config), local_files_only=True,
                                                      safety_checker=None, requires_safety_checker=False)
    except (OSError, ValueError, KeyError) as err:
        raise VidldmError(f"cannot load '{path.name}' as a Stable Diffusion checkpoint: {str(err).splitlines()[0]}") from err
    adapter = adapter or MotionAdapter.from_unet_config(sd.unet.config, max_seq_length=fresh)
    return VideoPipeline(vae=sd.vae, text_encoder=sd.text_encoder, tokenizer=sd.tokenizer, unet=sd.unet,
                         motion_adapter=adapter, scheduler=default_scheduler(**base_model_schedule(sd.scheduler.config)))


def _looks_like_hub_id(name: str) -> bool:
    return re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", name) is not None


def _from_hub(repo_id: str, adapter: MotionAdapter | None) -> VideoPipeline:
    """Only reached when the user names a hub id; offline it fails with one line, not a stack trace."""
    from huggingface_hub import model_info

    try:
        info = model_info(repo_id)
        kind = "AnimateDiffPipeline" if "AnimateDiff" in str(getattr(info, "pipeline_tag", "")) else "StableDiffusionPipeline"
        return _from_diffusers_parts(repo_id, adapter, kind, local_files_only=False)
    except VidldmError:
        raise
    except Exception as err:  # network, auth, missing repo: all mean "could not get it"
        raise VidldmError(
            f"could not fetch '{repo_id}' from the Hugging Face Hub ({type(err).__name__}); "
            "check the id and your connection, or pass a local folder"
        ) from err
