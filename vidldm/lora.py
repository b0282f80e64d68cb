"""LoRAs on a `VideoPipeline`, through diffusers' and peft's LoRA machinery, with diffusers' names and meaning.

`VideoLoraLoaderMixin` is diffusers' `StableDiffusionLoraLoaderMixin` (what `AnimateDiffPipeline` uses) with one
more loadable module, `motion_adapter`, because vidldm keeps the temporal layers out of the image UNet:

- image LoRAs (UNet and text encoder; diffusers/peft keys or kohya/A1111 keys, which diffusers' converters
  read) go through diffusers' own `load_lora_weights`, into the unchanged `UNet2DConditionModel` and text encoder;
- motion-module keys (AnimateDiff's original layout or diffusers' `UNetMotionModel` layout) are renamed onto
  the `MotionAdapter`'s modules (`models/motion_lora.py`) and injected by peft (`load_lora_adapter`).

One file may hold both; both parts share one adapter name, so `set_adapters(["zoom", "style"], [0.8, 1.0])`,
`fuse_lora()`, `unfuse_lora()`, `delete_adapters()` and `unload_lora_weights()` act on them together.
Files are read by vidldm (`torch.load(weights_only=True)` for pickles): a LoRA with code in it is refused.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from diffusers.loaders import StableDiffusionLoraLoaderMixin

from vidldm.errors import CheckpointError, VidldmError, first_line
from vidldm.models import motion_lora
from vidldm.models.motion_formats import read_state_dict

LORA_COMPONENTS = ["unet", "text_encoder", "motion_adapter"]


def lora_file(source: str | os.PathLike, weight_name: str | None = None) -> Path:
    """The LoRA file `source` names: a file; `weight_name` in a folder (default diffusers'
    `pytorch_lora_weights.safetensors`); or that file of a Hugging Face Hub repo, fetched only because it was named."""
    path = Path(source)
    name = weight_name or "pytorch_lora_weights.safetensors"
    if path.is_file() or path.is_dir():
        return path if path.is_file() else path / name
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(str(source), name))
    except Exception as err:  # offline, no such repo or file: one line
        raise CheckpointError(f"'{source}' is not a LoRA file or folder, and fetching {name} from the Hugging Face Hub "
                              f"failed ({first_line(err)[:200]})") from err


def read_lora(source: str | os.PathLike | dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A LoRA file's tensors (`.safetensors`, or a pickle read without running code), or a copy of a dict."""
    if isinstance(source, dict):
        return dict(source)
    sd = read_state_dict(source)
    if not any("lora" in k for k in sd):
        raise CheckpointError(f"'{source}' holds no LoRA weights (no lora_A/lora_B, lora_down/lora_up keys)")
    return sd


class VideoLoraLoaderMixin(StableDiffusionLoraLoaderMixin):
    """diffusers' LoRA methods for `VideoPipeline`; `motion_adapter` is a LoRA-loadable component."""

    _lora_loadable_modules = LORA_COMPONENTS

    def load_lora_weights(self, pretrained_model_name_or_path_or_dict, adapter_name: str | None = None, **kwargs):
        """Load a LoRA (a file, a `{key: tensor}` dict, or `weight_name=` in a folder or a named hub repo; pickles
        are read without running code) as adapter `adapter_name` (default `default_{i}`): image keys into the UNet
        and the text encoder, motion-module keys into the motion adapter. A LoRA that does not fit raises a
        `VidldmError` and leaves the pipeline as it was."""
        source = pretrained_model_name_or_path_or_dict
        weight_name = kwargs.pop("weight_name", None)
        sd = read_lora(source if isinstance(source, dict) else lora_file(source, weight_name))
        self._check_unfused()
        adapter_name = adapter_name or self._free_adapter_name()
        if adapter_name in self._adapter_names():
            raise VidldmError(f"a LoRA named '{adapter_name}' is loaded already; pick another adapter_name")
        motion = {k: v for k, v in sd.items() if ".motion_modules." in k}
        image = {k: v for k, v in sd.items() if k not in motion}
        try:
            if image:
                super().load_lora_weights(image, adapter_name=adapter_name, **kwargs)
            if motion:
                self.motion_adapter.load_lora_adapter(motion_lora.to_vidldm(motion), prefix=None, adapter_name=adapter_name)
        except (RuntimeError, ValueError, KeyError, TypeError) as err:
            self._forget(adapter_name)
            if isinstance(err, VidldmError):
                raise
            raise VidldmError(f"the LoRA does not fit this model; was it made for another base model? ({first_line(err)[:200]})") from err
        if adapter_name not in self._adapter_names():
            raise VidldmError("the LoRA has no weights for this model's UNet, text encoder or motion modules")

    def fuse_lora(self, components: list[str] = LORA_COMPONENTS, lora_scale: float = 1.0, safe_fusing: bool = False,
                  adapter_names: list[str] | None = None, **kwargs):
        """diffusers' `fuse_lora`, over the motion adapter too: the LoRAs are merged into the weights."""
        super().fuse_lora(components=components, lora_scale=lora_scale, safe_fusing=safe_fusing,
                          adapter_names=adapter_names, **kwargs)

    def unfuse_lora(self, components: list[str] = LORA_COMPONENTS, **kwargs):
        """diffusers' `unfuse_lora`, over the motion adapter too."""
        super().unfuse_lora(components=components, **kwargs)

    # ------------------------------------------------------------------ helpers
    def _adapter_names(self) -> set[str]:
        return {name for names in self.get_list_adapters().values() for name in names}

    def _free_adapter_name(self) -> str:
        taken, i = self._adapter_names(), 0
        while f"default_{i}" in taken:
            i += 1
        return f"default_{i}"

    def _forget(self, adapter_name: str) -> None:
        """Remove what a failed load left of `adapter_name` (peft may have injected layers before failing)."""
        for component in LORA_COMPONENTS:
            model = getattr(self, component, None)
            config = getattr(model, "peft_config", None) or {}
            if adapter_name in config:
                if component == "text_encoder":
                    from peft.tuners.tuners_utils import BaseTunerLayer

                    for module in model.modules():
                        if isinstance(module, BaseTunerLayer):
                            module.delete_adapter(adapter_name)
                    config.pop(adapter_name, None)
                else:
                    model.delete_adapters(adapter_name)

    def _check_unfused(self) -> None:
        """Fused q/k/v projections are snapshots of the weights; a LoRA injected under them would be ignored."""
        for component in ("unet", "motion_adapter"):
            for m in getattr(self, component).modules():
                if getattr(m, "qkv_weight", None) is not None or getattr(m, "fused_weight", None) is not None:
                    raise VidldmError("q/k/v projections are fused (enable_fast_paths); call pipe.unfuse_qkv_projections() "
                                      "before loading LoRAs, and fuse again after")


def save_motion_lora(sd: dict[str, torch.Tensor], folder: str | os.PathLike) -> tuple[Path, Path]:
    """Write a motion LoRA trained on vidldm's `MotionAdapter` (peft keys, `lora_alpha = r`) in the two layouts
    other tools read, atomically:

    - `motion_lora.safetensors`: diffusers' (`unet.` + `UNetMotionModel` names, peft `lora_A`/`lora_B`), written by
      diffusers' own `save_lora_weights`; `AnimateDiffPipeline.load_lora_weights` and vidldm load it;
    - `motion_lora_animatediff.safetensors`: AnimateDiff's original (`processor.to_q_lora.down`), as its motion
      LoRAs (v2_lora_*.ckpt) are, for tools that read those.
    Returns both paths."""
    from vidldm import atomic

    ours = {k.removeprefix("base_model.model."): v.detach().contiguous().cpu() for k, v in sd.items()}
    folder = Path(folder)
    diffusers_path, animatediff_path = folder / "motion_lora.safetensors", folder / "motion_lora_animatediff.safetensors"
    animatediff = motion_lora.to_animatediff(ours)  # first: it refuses LoRAs its layout cannot hold, before any write

    def write_diffusers(tmp: Path) -> None:
        StableDiffusionLoraLoaderMixin.save_lora_weights(tmp.parent, unet_lora_layers=motion_lora.to_diffusers(ours),
                                                         weight_name=tmp.name)

    def write_animatediff(tmp: Path) -> None:
        from safetensors.torch import save_file

        save_file(animatediff, str(tmp), metadata={"format": "pt"})

    return atomic.write_file(diffusers_path, write_diffusers), atomic.write_file(animatediff_path, write_animatediff)
