"""`load_pipeline`: one entry point for every model a user may own.

- `"tiny"`: a tiny random pipeline built in code (tests, demos; makes noise, not pictures);
- a vidldm pipeline folder (`VideoPipeline.save_pretrained`), or one in the shipped model's layout
  (`scripts/export_shapes.py`: vae/, unet/, motion_adapter/, sampling.json; MiniLM text encoder);
- a local diffusers Stable Diffusion folder (1.x / 2.x) + `motion_adapter=` (an AnimateDiff
  `.ckpt`/`.safetensors`, a diffusers `MotionAdapter` folder or a vidldm adapter folder);
- a folder written by diffusers' `AnimateDiffPipeline.save_pretrained`: its `UNetMotionModel` splits
  into the image UNet and the adapter;
- a diffusers SDXL folder (`StableDiffusionXLPipeline`, `AnimateDiffSDXLPipeline`): two text encoders, run
  with an SDXL motion module (AnimateDiff's `mm_sdxl_v10_beta.ckpt` or diffusers' SDXL `MotionAdapter`);
- any of these folders in a weights variant (`variant="fp16"`, what `save_pretrained(variant=...)`
  writes), found by itself when a folder holds only one;
- a single-file SD checkpoint (`.safetensors`/`.ckpt`) + `config=` a local diffusers folder for its configs;
- a Hugging Face Hub id, only when the user names one (offline this fails with one clear line).
Nothing is downloaded unless the user asks for a hub id. Whatever diffusers or transformers raise
for a file they cannot read reaches the user as one `CheckpointError` line naming the file.
`export_diffusers` writes the other way: an `AnimateDiffPipeline` folder diffusers loads.
"""

from __future__ import annotations

import os
import re
import shutil
import warnings
from contextlib import contextmanager
from pathlib import Path

import torch

from vidldm.builtin_names import BUILTIN
from vidldm.builtins import is_shapes_folder, shapes_init_pipeline, shapes_pipeline, tiny_pipeline
from vidldm.errors import CheckpointError, VidldmError, first_line
from vidldm.models.motion import MotionAdapter
from vidldm.models.motion_formats import (
    diffusers_norm_groups,
    load_motion_adapter,
    read_config,
    resolve_variant,
    split_motion_unet,
    weight_variants,
)
from vidldm.models.sdxl import is_sdxl
from vidldm.pipeline import VideoPipeline
from vidldm.schedulers import base_model_schedule, default_scheduler

DTYPES = {"fp32": torch.float32, "float32": torch.float32, "fp16": torch.float16, "float16": torch.float16,
          "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}


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
    fresh_max_seq_length: int | None = None,
    variant: str | None = None,
) -> VideoPipeline:
    """Load a `VideoPipeline` from any supported source (see the module docstring).

    `fresh_max_seq_length`: for training, a Stable Diffusion base without `motion_adapter` gets a
    new zero-initialised adapter of this length instead of an error (and sizes the tiny model's).
    `variant`: the weights variant of diffusers folders (e.g. "fp16"); a component saved without it
    loads its plain weights, and a folder holding one variant only needs no `variant`."""
    torch_dtype = parse_dtype(dtype)
    adapter = _adapter(motion_adapter, variant)
    name = str(name_or_path)
    path = Path(name).expanduser()
    if name in BUILTIN:
        pipe = _with_adapter(_builtin(name, fresh_max_seq_length), adapter)
    elif path.is_dir():
        pipe = _from_folder(path, adapter, fresh_max_seq_length, variant)
    elif path.is_file():
        pipe = _from_single_file(path, adapter, config, fresh_max_seq_length)
    elif _looks_like_hub_id(name) and not path.suffix:
        pipe = _from_hub(name, adapter, variant)
    else:
        raise VidldmError(
            f"unknown model '{name}': not a built-in ({', '.join(BUILTIN)}), a folder or a checkpoint file"
        )
    if adapter is not None and not isinstance(motion_adapter, MotionAdapter):
        _check_norm_groups(Path(motion_adapter), pipe.unet)
    pipe.motion_adapter.check_fits(pipe.unet)  # an SDXL module with an SD 1.5 model (or the reverse): say so now
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        # One dtype for all parts: from an fp16 variant diffusers loads fp32 but transformers keeps the file's fp16.
        target = torch_dtype or pipe.unet.dtype
        for module in pipe.components.values():
            if isinstance(module, torch.nn.Module) and module.dtype != target:
                module.to(dtype=target)
        return pipe.to(device)
    except (RuntimeError, AssertionError) as err:
        raise VidldmError(f"cannot use device '{device}': {str(err).splitlines()[0]}") from err


def _builtin(name: str, frames: int | None) -> VideoPipeline:
    if name == "tiny":
        return tiny_pipeline(max_seq_length=frames or 16)
    if name == "shapes-init":
        return shapes_init_pipeline()
    return shapes_pipeline()


def _adapter(motion_adapter, variant: str | None = None) -> MotionAdapter | None:
    if motion_adapter is None or isinstance(motion_adapter, MotionAdapter):
        return motion_adapter
    name = str(motion_adapter)
    path = Path(name).expanduser()
    if not path.exists() and _looks_like_hub_id(name) and not path.suffix:  # a local path always wins
        return _adapter_from_hub(name, variant)
    return load_motion_adapter(motion_adapter, variant=_adapter_variant(path, variant))


def _adapter_from_hub(repo_id: str, variant: str | None) -> MotionAdapter:
    """A diffusers `MotionAdapter` repo (e.g. guoyww/animatediff-motion-adapter-v1-5-2), fetched only because the
    user named it; offline or missing it is one line, as for `--model`."""
    from diffusers import MotionAdapter as DiffusersMotionAdapter

    from vidldm.models.motion_formats import from_diffusers

    try:
        with warnings.catch_warnings():  # diffusers passes huggingface_hub a deprecated argument: noise, not news
            warnings.simplefilter("ignore")
            theirs = DiffusersMotionAdapter.from_pretrained(repo_id, variant=variant)
    except Exception as err:  # network, auth, missing repo or variant: all mean "could not get it"
        raise VidldmError(
            f"could not fetch motion adapter '{repo_id}' from the Hugging Face Hub ({type(err).__name__}); "
            "check the id and your connection, or pass a local file or folder"
        ) from err
    return from_diffusers(theirs)


def _adapter_variant(path: Path, variant: str | None) -> str | None:
    """The `--variant` asked for the model applies to an adapter folder only if it has it: an fp16 SD folder
    may well go with an adapter someone saved plain."""
    return variant if path.is_dir() and variant in weight_variants(path) else None


def _check_norm_groups(source: Path, unet) -> None:
    """Refuse a diffusers adapter folder whose `motion_norm_num_groups` differs from the UNet's `norm_num_groups`:
    diffusers runs its temporal layers with the UNet's value and vidldm with the adapter's, so the pair has no
    one meaning (every released adapter uses 32 for both)."""
    groups = diffusers_norm_groups(source)
    if groups is not None and groups != unet.config.norm_num_groups:
        raise CheckpointError(
            f"motion adapter '{source}' sets motion_norm_num_groups {groups} but the UNet's norm_num_groups is "
            f"{unet.config.norm_num_groups}; diffusers would run it with {unet.config.norm_num_groups} groups and "
            "vidldm with its own, so they disagree; use an adapter made for this UNet"
        )


# What diffusers and transformers raise for files they cannot read: a missing or truncated weights file
# (OSError, safetensors' SafetensorError), a config that is not JSON (OSError), weights of another shape
# (ValueError, RuntimeError), a single file they cannot split into components (SingleFileComponentError).
def _load_errors() -> tuple[type[BaseException], ...]:
    from diffusers.loaders.single_file_utils import SingleFileComponentError
    from safetensors import SafetensorError

    return (OSError, ValueError, KeyError, RuntimeError, SafetensorError, SingleFileComponentError)


@contextmanager
def _reading(what: str):
    """Turn a library's loading exception into one `CheckpointError` line saying what was being read."""
    try:
        yield
    except VidldmError:
        raise
    except _load_errors() as err:
        detail, root = first_line(err), err
        while (root.__cause__ or root.__context__) is not None:  # diffusers re-raises the reason as a vaguer OSError
            root = root.__cause__ or root.__context__
        if root is not err and first_line(root) not in detail:
            detail += f" ({first_line(root)})"
        raise CheckpointError(f"cannot load {what}: {detail}") from err


def _with_adapter(pipe: VideoPipeline, adapter: MotionAdapter | None) -> VideoPipeline:
    """`pipe` with the adapter the user gave in place of its own (the same pipeline when none was given)."""
    return pipe if adapter is None else pipe.with_parts(motion_adapter=adapter)


def _from_folder(path: Path, adapter: MotionAdapter | None, fresh: int | None = None,
                 variant: str | None = None) -> VideoPipeline:
    index = path / "model_index.json"
    if not index.exists():
        if is_shapes_folder(path):  # an exported shapes model: its text encoder is the MiniLM package's
            return _with_adapter(shapes_pipeline(path), adapter)
        raise VidldmError(f"'{path}' has no model_index.json; give a vidldm or diffusers pipeline folder, or an "
                          "exported shapes model (vae/, unet/ and motion_adapter/, each with a config.json)")
    kind = read_config(index, "a pipeline folder").get("_class_name")
    if kind == "VideoPipeline":
        with _reading(f"the vidldm pipeline in '{path}'"):
            pipe = VideoPipeline.from_pretrained(str(path), local_files_only=True, variant=_pipeline_variant(path, variant))
        return _with_adapter(pipe, adapter)
    if kind in _DIFFUSERS_KINDS:
        return _from_diffusers_parts(str(path), adapter, kind, fresh=fresh, variant=variant)
    raise VidldmError(f"'{path}' holds a {kind}; vidldm loads VideoPipeline, AnimateDiffPipeline, AnimateDiffSDXLPipeline, "
                      "Stable Diffusion 1.x/2.x and SDXL folders")


_DIFFUSERS_KINDS = ("StableDiffusionPipeline", "AnimateDiffPipeline", "StableDiffusionXLPipeline", "AnimateDiffSDXLPipeline")


def _pipeline_variant(path: Path, variant: str | None) -> str | None:
    """The variant to ask diffusers for when loading a whole pipeline folder: the one given, else the one
    variant its components hold when some component has no plain weights."""
    if variant is not None:
        return variant
    found = [weight_variants(sub) for sub in sorted(path.iterdir()) if sub.is_dir()]
    found = [v for v in found if v]
    if all(None in v for v in found):
        return None
    named = set().union(*found) - {None}
    if len(named) != 1:
        raise CheckpointError(f"'{path}' holds weights in variants {', '.join(sorted(named))}; pick one with --variant")
    return named.pop()


def _from_diffusers_parts(path: str, adapter: MotionAdapter | None, kind: str, fresh: int | None = None,
                          variant: str | None = None, **hub) -> VideoPipeline:
    from diffusers import AutoencoderKL, UNet2DConditionModel, UNetMotionModel
    from transformers import AutoTokenizer, CLIPTextModel

    local = {"local_files_only": True} if not hub else {}

    def part(cls, subfolder: str, weights: bool = True):
        """One component in the variant asked for (locally: the one its folder has), errors as one line."""
        extra = {}
        if weights:  # a hub repo cannot be listed offline: ask for the variant as given
            extra["variant"] = variant if hub else resolve_variant(Path(path) / subfolder, variant)
        with _reading(f"{subfolder}/ of '{path}'"):
            return cls.from_pretrained(path, subfolder=subfolder, **extra, **local, **hub)

    with _reading(f"unet/config.json of '{path}'"):
        unet_config = dict(UNet2DConditionModel.load_config(path, subfolder="unet", **local, **hub))
    if unet_config.get("_class_name") == "UNetMotionModel":  # AnimateDiffPipeline.save_pretrained writes this
        unet, own_adapter = split_motion_unet(part(UNetMotionModel, "unet"))
        adapter = adapter or own_adapter
    else:
        unet = part(UNet2DConditionModel, "unet")
    if adapter is None and kind.startswith("AnimateDiff"):  # an AnimateDiff folder with a plain UNet beside its adapter
        adapter = _folder_adapter(path, variant, hub, part)
        if not hub:
            _check_norm_groups(Path(path) / "motion_adapter", unet)
    if adapter is None and fresh:
        adapter = MotionAdapter.from_unet_config(unet.config, max_seq_length=fresh)
    if adapter is None:
        raise VidldmError("a Stable Diffusion model needs temporal layers: pass --motion-adapter (an AnimateDiff .ckpt/.safetensors or an adapter folder)")
    return VideoPipeline(
        vae=part(AutoencoderKL, "vae"),
        text_encoder=part(CLIPTextModel, "text_encoder"),
        tokenizer=part(AutoTokenizer, "tokenizer", weights=False),
        unet=unet, motion_adapter=adapter, **_sdxl_parts(path, unet, part, hub),
        # AnimateDiff samples with DDIM over linear betas; keep what the base model was trained for.
        scheduler=default_scheduler(**base_model_schedule(_scheduler_config(path, local, hub))),
    )


def _sdxl_parts(path: str, unet, part, hub: dict) -> dict:
    """An SDXL folder's second text encoder and tokenizer, and its negative-prompt rule (model_index.json)."""
    if not is_sdxl(unet.config):
        return {}
    from transformers import AutoTokenizer, CLIPTextModelWithProjection

    index = {} if hub else read_config(Path(path) / "model_index.json", "a pipeline folder")
    return dict(text_encoder_2=part(CLIPTextModelWithProjection, "text_encoder_2"),
                tokenizer_2=part(AutoTokenizer, "tokenizer_2", weights=False),
                force_zeros_for_empty_prompt=index.get("force_zeros_for_empty_prompt", True))


def _folder_adapter(path: str, variant: str | None, hub: dict, part) -> MotionAdapter:
    if hub:
        from diffusers import MotionAdapter as DiffusersMotionAdapter

        from vidldm.models.motion_formats import from_diffusers

        return from_diffusers(part(DiffusersMotionAdapter, "motion_adapter"))
    return load_motion_adapter(Path(path) / "motion_adapter", variant=_adapter_variant(Path(path) / "motion_adapter", variant))


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

    with _reading(f"'{path}' as a Stable Diffusion checkpoint (it needs UNet, VAE and text encoder weights)"):
        sd = StableDiffusionPipeline.from_single_file(str(path), config=str(config), local_files_only=True,
                                                      safety_checker=None, requires_safety_checker=False)
    adapter = adapter or MotionAdapter.from_unet_config(sd.unet.config, max_seq_length=fresh)
    return VideoPipeline(vae=sd.vae, text_encoder=sd.text_encoder, tokenizer=sd.tokenizer, unet=sd.unet,
                         motion_adapter=adapter, scheduler=default_scheduler(**base_model_schedule(sd.scheduler.config)))


def export_diffusers(
    name_or_path: str | os.PathLike,
    output: str | os.PathLike,
    motion_adapter: str | os.PathLike | MotionAdapter | None = None,
    *,
    config: str | os.PathLike | None = None,
    variant: str | None = None,
    lossy: bool = False,
) -> VideoPipeline:
    """Write a model (anything `load_pipeline` reads) as a diffusers `AnimateDiffPipeline` folder at `output`,
    a new folder; it is written under a temporary name beside it and renamed, so a failure leaves nothing.
    Returns the vidldm pipeline it was made from. See `VideoPipeline.to_diffusers` for what is refused."""
    out = Path(output).expanduser()
    if out.exists():
        raise VidldmError(f"'{out}' already exists; export into a new folder")
    if not out.parent.is_dir():
        raise VidldmError(f"output folder '{out.parent}' does not exist; create it first")
    pipe = load_pipeline(name_or_path, motion_adapter, config=config, device="cpu", variant=variant)
    theirs = pipe.to_diffusers(lossy=lossy)
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)  # a previous export killed half-way
    try:
        theirs.save_pretrained(tmp)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return pipe


def _looks_like_hub_id(name: str) -> bool:
    return re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", name) is not None


def _from_hub(repo_id: str, adapter: MotionAdapter | None, variant: str | None = None) -> VideoPipeline:
    """Only reached when the user names a hub id; offline it fails with one line, not a stack trace."""
    from huggingface_hub import model_info

    try:
        info = model_info(repo_id)
        kind = "AnimateDiffPipeline" if "AnimateDiff" in str(getattr(info, "pipeline_tag", "")) else "StableDiffusionPipeline"
        return _from_diffusers_parts(repo_id, adapter, kind, variant=variant, local_files_only=False)
    except VidldmError:
        raise
    except Exception as err:  # network, auth, missing repo: all mean "could not get it"
        raise VidldmError(
            f"could not fetch '{repo_id}' from the Hugging Face Hub ({type(err).__name__}); "
            "check the id and your connection, or pass a local folder"
        ) from err


def apply_loras(pipe: VideoPipeline, loras: list[str] | None = None, motion_loras: list[str] | None = None) -> list[str]:
    """Load `--lora` / `--motion-lora` values (`PATH[:WEIGHT]`) into `pipe` and weight them (`set_adapters`);
    returns the adapter names. A motion LoRA given as an image LoRA (or the reverse) is refused: the flags say
    which part of the model a file is meant for, and a mix-up would load nothing or the wrong thing."""
    from vidldm.lora import read_lora
    from vidldm.models.motion_lora import is_motion_lora
    from vidldm.sampling_settings import parse_lora_spec

    names, weights = [], []
    for flag, specs in (("--lora", loras or []), ("--motion-lora", motion_loras or [])):
        for i, spec in enumerate(specs):
            path, weight = parse_lora_spec(spec)
            try:
                sd = read_lora(path)
            except VidldmError as err:  # the reader's message names the file already
                raise VidldmError(f"{flag}: {err}") from err
            try:
                motion = is_motion_lora(sd)
                if flag == "--lora" and motion:
                    raise VidldmError("it is an AnimateDiff motion LoRA (motion-module keys); pass it with --motion-lora")
                if flag == "--motion-lora" and not motion:
                    raise VidldmError("it has no motion-module keys, so it is an image LoRA; pass it with --lora")
                name = f"{flag.strip('-').replace('-', '_')}_{i}"
                pipe.load_lora_weights(sd, adapter_name=name)
            except VidldmError as err:
                raise VidldmError(f"{flag} '{path}': {err}") from err
            names.append(name)
            weights.append(weight)
    if names:
        pipe.set_adapters(names, weights)
    return names


def apply_ip_adapter(pipe: VideoPipeline, spec: str | None, image_encoder: str | None = None) -> None:
    """Load an `--ip-adapter` value (`PATH[:SCALE]`) into `pipe`, its image encoder from `image_encoder` (a folder)
    or the `image_encoder/` folder beside the file (diffusers' place), and set its scale."""
    from vidldm.sampling_settings import parse_lora_spec

    if not spec:
        return
    path, scale = parse_lora_spec(spec, "--ip-adapter scale")
    try:
        pipe.load_ip_adapter(path, image_encoder_folder=str(Path(image_encoder).resolve()) if image_encoder else "image_encoder")
    except VidldmError as err:
        raise VidldmError(f"--ip-adapter '{path}': {err}") from err
    pipe.set_ip_adapter_scale(scale)


def apply_controlnets(pipe: VideoPipeline, controlnets: list[str] | None = None, sparsectrl: str | None = None) -> None:
    """Load `--controlnet` values and a `--sparsectrl` value (`PATH[:SCALE]`; the scales are the call's) into `pipe`,
    in that order, in the UNet's dtype and device (`vidldm.control.load_control_model`)."""
    from vidldm.control import load_control_model
    from vidldm.sampling_settings import parse_lora_spec

    nets = []
    for flag, kind, specs in (("--controlnet", "controlnet", controlnets or []),
                              ("--sparsectrl", "sparsectrl", [sparsectrl] if sparsectrl else [])):
        for spec in specs:
            path, _ = parse_lora_spec(spec, f"{flag} scale")
            try:
                nets.append(load_control_model(path, kind, pipe.unet, pipe.unet.dtype, pipe.unet.device))
            except VidldmError as err:
                raise VidldmError(f"{flag} '{path}': {err}") from err
    if nets:
        pipe.set_controlnet(nets)
