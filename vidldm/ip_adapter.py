"""IP-Adapter image prompts on a `VideoPipeline`, through diffusers' `IPAdapterMixin`, with diffusers' names.

    image --CLIPImageProcessor--> pixels --image_encoder (CLIPVisionModelWithProjection)--> embedding (N, D)
          (plus / full-face adapters: the encoder's second-to-last hidden states (N, S, D))
    per frame: (B, F, N, ...) --VideoUNet: unet.encoder_hid_proj, frame by frame--> image tokens
          --the IP attention processors diffusers put on the image UNet's cross-attentions--> beside the text

diffusers' `load_ip_adapter` puts its processors and `encoder_hid_proj` on the image UNet, which `VideoUNet`
runs block by block, so they act as they do in `AnimateDiffPipeline` (same numbers, tests/test_ip_adapter.py).
What vidldm adds: files are read by vidldm (`.safetensors`, or `.bin` pickles read without running code) and
checked against the model before diffusers sees them, so an adapter for another base, a missing image encoder
or a corrupt file is one `VidldmError` line; and image prompts may hold for frame ranges only
(`ip_adapter_image={(0, 7): a, (8, 15): b}`): the embeddings get a frame axis, sliced per context window
like per-frame text. Frames outside every range get the "no image" embedding the unconditional half uses.
Supported: IP-Adapter (`ip-adapter_sd15`), plus and full-face variants; FaceID ones need face embeddings
from insightface and are refused.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers.loaders import IPAdapterMixin
from diffusers.models.embeddings import ImageProjection

from vidldm.errors import CheckpointError, VidldmError, first_line
from vidldm.frames import load_frames
from vidldm.models.motion_formats import read_state_dict

IMAGE_ENCODER = "image_encoder"  # diffusers' folder name, beside the adapter file (h94/IP-Adapter's models/)
FrameRange = tuple[int, int]  # first and last frame, both included


def adapter_file(source: str | os.PathLike, subfolder: str | None, weight_name: str | None) -> Path:
    """The adapter file `source` names: a file, or `subfolder/weight_name` in a folder (or a hub repo, fetched
    only because it was named)."""
    path = Path(source)
    if path.is_file():
        return path
    if path.is_dir():
        if not weight_name:
            raise VidldmError(f"'{source}' is a folder; name the IP-Adapter file in it (weight_name=, e.g. "
                              "ip-adapter_sd15.safetensors)")
        return path / (subfolder or "") / weight_name
    if not weight_name:
        raise CheckpointError(f"IP-Adapter '{source}' does not exist; check the path")
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(str(source), weight_name, subfolder=subfolder or None))
    except Exception as err:  # offline, no such repo or file: one line
        raise CheckpointError(f"'{source}' is not an IP-Adapter file or folder, and fetching {weight_name} from the "
                              f"Hugging Face Hub failed ({first_line(err)[:200]})") from err


def read_ip_adapter(source: str | os.PathLike | dict) -> dict[str, dict[str, torch.Tensor]]:
    """An IP-Adapter's tensors as diffusers takes them, `{"image_proj": {...}, "ip_adapter": {...}}`, from the
    original layout: flat `image_proj.*` / `ip_adapter.N.to_k_ip.weight` keys (.safetensors) or those two dicts
    (.bin)."""
    if isinstance(source, dict) and {"image_proj", "ip_adapter"} <= set(source):
        return {"image_proj": dict(source["image_proj"]), "ip_adapter": dict(source["ip_adapter"])}
    flat = dict(source) if isinstance(source, dict) else read_state_dict(source)
    sd: dict[str, dict[str, torch.Tensor]] = {"image_proj": {}, "ip_adapter": {}}
    for key, value in flat.items():
        part, _, rest = key.partition(".")
        if part in sd:
            sd[part][rest] = value
    if not sd["image_proj"] or not any(k.endswith("to_k_ip.weight") for k in sd["ip_adapter"]):
        raise CheckpointError(f"'{source if not isinstance(source, dict) else 'the state dict'}' is not an IP-Adapter "
                              "(no image_proj.* and ip_adapter.N.to_k_ip keys)")
    return sd


def projection_dims(image_proj: dict[str, torch.Tensor]) -> tuple[str, int, int]:
    """(kind, the image features it takes, the cross-attention dim it makes) of an adapter's image projection:
    "embeds" adapters take the encoder's projected embedding, "hidden" ones its hidden states."""
    if "proj.weight" in image_proj:  # IP-Adapter: a linear map to 4 tokens
        weight = image_proj["proj.weight"]
        return "embeds", weight.shape[1], weight.shape[0] // 4
    if "latents" in image_proj and "proj_in.weight" in image_proj:  # plus: a perceiver resampler
        return "hidden", image_proj["proj_in.weight"].shape[1], image_proj["proj_out.weight"].shape[0]
    if "proj.3.weight" in image_proj:  # full face: an MLP on every token
        return "hidden", image_proj["proj.0.weight"].shape[1], image_proj["proj.3.weight"].shape[0]
    raise VidldmError("this IP-Adapter is a FaceID one (or of an unknown kind): it needs face embeddings from "
                      "insightface, which vidldm does not make; use ip-adapter_sd15 or a plus variant")


def check_fits(sd: dict[str, dict[str, torch.Tensor]], unet, image_encoder, name: str) -> None:
    """Refuse, before diffusers changes the UNet, an adapter made for another base or encoder."""
    kind, features, dim = projection_dims(sd["image_proj"])
    own = unet.config.cross_attention_dim
    keys = [sd["ip_adapter"].get(f"{2 * i + 1}.to_k_ip.weight") for i in range(len(cross_attentions(unet)))]
    if dim != own or any(k is not None and k.shape[1] != own for k in keys):
        raise VidldmError(f"IP-Adapter '{name}' was made for a base model with cross-attention dim {dim}, this model's is "
                          f"{own} (SD 1.x: 768, SD 2.x: 1024, SDXL: 2048); use the adapter made for this base")
    found = sum(k.endswith("to_k_ip.weight") for k in sd["ip_adapter"])
    widths = [attn.to_k.weight.shape[0] for attn in cross_attentions(unet).values()]
    if None in keys or found != len(keys) or any(k.shape[0] != w for k, w in zip(keys, widths)):
        raise VidldmError(f"IP-Adapter '{name}' has weights for {found} cross-attention layers that do not match this "
                          f"UNet's {len(keys)}; it was made for another base model")
    if image_encoder is not None:
        given = image_encoder.config.projection_dim if kind == "embeds" else image_encoder.config.hidden_size
        if given != features:
            what = "embeddings" if kind == "embeds" else "hidden states"
            raise VidldmError(f"IP-Adapter '{name}' takes {features}-wide image {what}, but the image encoder makes "
                              f"{given}-wide ones; give the encoder it was trained with (--image-encoder)")


def cross_attentions(unet) -> dict[str, torch.nn.Module]:
    """The image UNet's cross-attention layers in diffusers' order, the order of an adapter's `ip_adapter.N` keys
    (N = 1, 3, 5, ...: the original numbering counted the self-attentions too)."""
    return {name.removesuffix(".processor"): unet.get_submodule(name.removesuffix(".processor"))
            for name in unet.attn_processors if name.endswith("attn2.processor")}


def load_image_encoder(folder: Path, dtype: torch.dtype, device):
    """A `CLIPVisionModelWithProjection` folder (`config.json` + weights), read locally; one line if it is not."""
    from transformers import CLIPVisionModelWithProjection

    try:
        return CLIPVisionModelWithProjection.from_pretrained(str(folder), local_files_only=True, dtype=dtype).to(device)
    except Exception as err:  # transformers raises OSError, ValueError, safetensors errors...
        raise CheckpointError(f"cannot read the image encoder '{folder}': {first_line(err)[:200]} (it should be a "
                              "CLIPVisionModelWithProjection folder, like h94/IP-Adapter's models/image_encoder)") from err


def frame_ranges(prompt: Any, num_frames: int) -> list[tuple[FrameRange, Any]]:
    """One adapter's image prompt as `[((first, last), image)]`: an image (or a list of images) for the whole
    clip, or `{(first, last): image}` for frame ranges (both ends included), which may not overlap."""
    if not isinstance(prompt, dict):
        return [((0, num_frames - 1), prompt)]
    if not prompt:
        raise VidldmError("ip_adapter_image frame ranges must be a non-empty {(first, last): image} mapping")
    for key in prompt:
        ok = isinstance(key, tuple) and len(key) == 2 and all(isinstance(i, int) and not isinstance(i, bool) for i in key)
        if not ok or not 0 <= key[0] <= key[1] < num_frames:
            raise VidldmError(f"ip_adapter_image frame ranges must be (first, last) frames with 0 <= first <= last <= "
                              f"{num_frames - 1}, got {key!r}")
    ranges = sorted(prompt)
    for (_, last), (first, _) in zip(ranges, ranges[1:]):
        if first <= last:
            raise VidldmError(f"ip_adapter_image frame ranges overlap at frame {first}; give each frame one image")
    return [(key, prompt[key]) for key in ranges]


def as_image(image: Any) -> Any:
    """A path becomes a PIL image; PIL images, arrays, tensors and lists go to the image processor as given."""
    from PIL import Image

    if isinstance(image, (str, os.PathLike)):
        return Image.fromarray(load_frames(image, image=True)[0])
    if isinstance(image, np.ndarray) and image.ndim == 3 and image.dtype == np.uint8:
        return Image.fromarray(image)
    return image


def per_frame(uncond: torch.Tensor, pieces: list[tuple[FrameRange, torch.Tensor]], num_frames: int) -> torch.Tensor:
    """`(B, F, N, ...)`: each range's embedding `(B, N, ...)` on its frames, `uncond` `(B, N, ...)` elsewhere."""
    out = uncond[:, None].repeat(1, num_frames, *[1] * (uncond.ndim - 1))
    for (first, last), embeds in pieces:
        out[:, first : last + 1] = embeds[:, None]
    return out


class VideoIPAdapterMixin(IPAdapterMixin):
    """diffusers' IP-Adapter methods for `VideoPipeline` (`load_ip_adapter`, `set_ip_adapter_scale`,
    `unload_ip_adapter`), with the checks and frame ranges of the module docstring."""

    def load_ip_adapter(self, pretrained_model_name_or_path_or_dict, subfolder: str | list[str] | None = None,
                        weight_name: str | list[str] | None = None, image_encoder_folder: str | None = IMAGE_ENCODER,
                        **kwargs):
        """diffusers' `load_ip_adapter`: one adapter (a file, a folder + `weight_name`, a state dict), or a list of them
        loaded together. The image encoder is `image_encoder_folder`: a folder, or a name looked up beside the
        (first) adapter file, as diffusers does; None loads none (then only `ip_adapter_image_embeds` work)."""
        sources = pretrained_model_name_or_path_or_dict
        sources = sources if isinstance(sources, list) else [sources]
        names = weight_name if isinstance(weight_name, list) else [weight_name] * len(sources)
        folders = subfolder if isinstance(subfolder, list) else [subfolder] * len(sources)
        if len(names) != len(sources) or len(folders) != len(sources):
            raise VidldmError("give one weight_name and subfolder per IP-Adapter, or one for all")
        self._check_can_load()
        files = [s if isinstance(s, dict) else adapter_file(s, f, n) for s, f, n in zip(sources, folders, names)]
        state_dicts = [read_ip_adapter(f) for f in files]
        encoder = self.image_encoder or self._find_image_encoder(files[0], image_encoder_folder)
        for f, sd in zip(files, state_dicts):
            check_fits(sd, self.unet, encoder, "the state dict" if isinstance(f, dict) else str(f))
        if encoder is not None and self.image_encoder is None:
            self.register_modules(image_encoder=encoder)
        kwargs.setdefault("low_cpu_mem_usage", False)  # weights straight into place: no meta tensors to go wrong
        try:
            super().load_ip_adapter(state_dicts, subfolder=[""] * len(files), weight_name=[""] * len(files),
                                    image_encoder_folder=None, **kwargs)
        except (RuntimeError, ValueError, KeyError) as err:
            self.unload_ip_adapter()
            raise VidldmError(f"the IP-Adapter does not fit this model ({first_line(err)[:200]})") from err

    def _check_can_load(self) -> None:
        if getattr(self, "model_offload", None) is not None:
            raise VidldmError("load IP-Adapters before enabling CPU offload (the image encoder must be one of the "
                              "offloaded models); call pipe.remove_all_hooks() first")
        for m in self.unet.modules():
            if getattr(m, "fused_weight", None) is not None:
                raise VidldmError("q/k/v projections are fused (enable_fast_paths); call pipe.unfuse_qkv_projections() "
                                  "before loading an IP-Adapter, and fuse again after")

    def _find_image_encoder(self, adapter: Path | dict, folder: str | None):
        """The encoder `folder` names, or None when `folder` is None: a bare name is a folder beside the adapter
        file (diffusers' rule: `image_encoder` in the adapter's folder), a path is that folder."""
        if folder is None:
            return None
        path = Path(folder)
        if len(path.parts) == 1 and not path.is_absolute() and not isinstance(adapter, dict):
            path = Path(adapter).parent / folder
        if not (path / "config.json").is_file():
            beside = "" if isinstance(adapter, dict) else f" (looked for {path})"
            raise VidldmError(f"the IP-Adapter needs its image encoder{beside}: give the CLIPVisionModelWithProjection folder "
                              "it was trained with (--image-encoder FOLDER, image_encoder_folder=), e.g. h94/IP-Adapter's "
                              "models/image_encoder")
        return load_image_encoder(path, self.unet.dtype, self.unet.device)

    @property
    def num_ip_adapters(self) -> int:
        proj = getattr(self.unet, "encoder_hid_proj", None)
        return len(proj.image_projection_layers) if getattr(self.unet.config, "encoder_hid_dim_type", None) == "ip_image_proj" else 0

    def check_image_prompt(self, image, embeds) -> None:
        """An IP-Adapter and its image prompt come together: one line when either is missing, or both forms given."""
        if image is not None and embeds is not None:
            raise VidldmError("give either ip_adapter_image or ip_adapter_image_embeds, not both")
        given = image is not None or embeds is not None
        if given and not self.num_ip_adapters:
            raise VidldmError("an image prompt needs an IP-Adapter: call pipe.load_ip_adapter(...) first (CLI: --ip-adapter)")
        if self.num_ip_adapters and not given:
            raise VidldmError("an IP-Adapter is loaded: give ip_adapter_image (or ip_adapter_image_embeds), or call "
                              "pipe.unload_ip_adapter()")
        if image is not None and self.image_encoder is None:
            raise VidldmError("ip_adapter_image needs the image encoder, which was not loaded (image_encoder_folder=None); "
                              "pass ip_adapter_image_embeds instead or load the adapter with its encoder")

    def image_prompt_embeddings(self, image, embeds, batch: int, num_frames: int, guided: bool, device) -> list[torch.Tensor]:
        """One tensor per IP-Adapter, with a frame axis: `(2B, F, N, ...)`, the unconditional half first (as the text),
        or `(B, F, N, ...)` without guidance. `embeds`: diffusers' precomputed `ip_adapter_image_embeds`, one
        `(B or 1, N, ...)` per adapter (under guidance the unconditional ones first: `(2B or 2, N, ...)`)."""
        layers = self.unet.encoder_hid_proj.image_projection_layers
        if embeds is not None:
            if not isinstance(embeds, (list, tuple)) or len(embeds) != len(layers):
                raise VidldmError(f"ip_adapter_image_embeds must be a list of {len(layers)} tensors (one per IP-Adapter)")
            pairs = [e.chunk(2) if guided else (e, e) for e in embeds]
            prompts = [[((0, num_frames - 1), pos)] for _, pos in pairs]
            unconds = [neg for neg, _ in pairs]
        else:
            images = image if isinstance(image, list) and len(layers) > 1 else [image]
            if len(images) != len(layers):
                raise VidldmError(f"{len(images)} image prompts for {len(layers)} IP-Adapters; give one per adapter")
            self._offload("text")  # the image encoder runs with the text encoder
            prompts, unconds = [], []
            for prompt, layer in zip(images, layers):
                hidden = not isinstance(layer, ImageProjection)  # diffusers' rule: plus/full take hidden states
                encoded = [(frames, self._encode_image(im, device, hidden)) for frames, im in frame_ranges(prompt, num_frames)]
                prompts.append([(frames, pos) for frames, (pos, _) in encoded])
                unconds.append(encoded[0][1][1])
        out = []
        for pieces, uncond in zip(prompts, unconds):
            cond = per_frame(_batch(uncond, batch, device), [(f, _batch(e, batch, device)) for f, e in pieces], num_frames)
            if guided:
                cond = torch.cat([per_frame(_batch(uncond, batch, device), [], num_frames), cond])
            out.append(cond.to(self.unet.dtype))
        return out

    def _encode_image(self, image, device, hidden: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """diffusers' `AnimateDiffPipeline.encode_image` (the same numbers): (image, "no image") embeddings `(1, N, ...)`."""
        from diffusers import AnimateDiffPipeline

        pos, neg = AnimateDiffPipeline.encode_image(self, as_image(image), device, 1, hidden)
        return pos[None], neg[None]


def _batch(x: torch.Tensor, batch: int, device) -> torch.Tensor:
    """`(1, ...)` repeated to `(batch, ...)`, or `(batch, ...)` as it is."""
    if x.shape[0] not in (1, batch):
        raise VidldmError(f"image embeddings for a batch of {x.shape[0]}, the prompts make {batch}; give 1 or {batch}")
    return x.to(device).expand(batch, *x.shape[1:])
