"""`VideoPipeline`: prompt / image / video in, frames out, through the one loop in `sampling.py`.

    prompt --tokenizer/text_encoder--> embeddings (B, L, D) or per frame (B, F, L, D)
    image / video --VideoVAE.encode--> known latents or SDEdit start (B, C, F, h, w)
    noise --sampling.denoise(VideoUNet, scheduler)--> latents --VideoVAE.decode--> frames

Every mode is a choice of inputs to `__call__`:
- text-to-video: `prompt`;
- prompt travel: `prompt={0: "...", 12: "..."}`, embeddings interpolated between keys;
- image animation: `image=` (frame 0 is the image, or one image per prompt; `image_conditioning`
  "clean" or "replace");
- keyframes (in-betweening, frame-rate upsampling): `image={0: start, 15: end}`, stills at any frames,
  the model makes the frames between;
- video-to-video: `video=`, `strength`;
- extension: `video=`, `extend=True` (the last frames of the video are known frames); the result is the
  input followed by the new frames (`F_in + num_frames - k`; latents: the `num_frames` window only);
- long clips: `num_frames` beyond the motion adapter's length uses context windows;
- precomputed text: `prompt_embeds=` / `negative_prompt_embeds=` instead of strings (diffusers' names).
- image prompts (IP-Adapter, `vidldm/ip_adapter.py`): `ip_adapter_image=` an image for the clip or
  `{(first, last): image}` per frame range, riding in the denoiser's `added_cond_kwargs` as diffusers' `image_embeds`.
- structure (ControlNet, SparseCtrl, `vidldm/control.py`): `set_controlnet(...)`, then `conditioning_frames=` a control
  clip per net, or keyframes with `controlnet_frame_indices=`; residuals the denoiser adds per context window.

An SDXL model (`text_encoder_2` / `tokenizer_2` set, a UNet with `addition_embed_type="text_time"`) encodes
with both encoders and passes the pooled text and size ids to the UNet (`models/sdxl.py`), as diffusers'
`AnimateDiffSDXLPipeline` does; everything else is the same path.

`temporal_end` < 1 runs the motion modules only for that first fraction of the steps (as
diffusers' `control_guidance_end` does for ControlNet): motion is settled at high noise, and the
last, low-noise steps refine every frame with the image model alone.

A model may carry its own sampling defaults (`generation_defaults`, saved in model_index.json, e.g.
the shapes model's 20 steps, guidance 6, temporal_end 1.0, free_init 2): a call that leaves a setting of
`SAMPLING_DEFAULTS` out uses them (`free_init` only where sampling starts from noise), else diffusers' (25 steps,
guidance 7.5, rescale 0, temporal_end 1, no FreeInit).

Classifier-free guidance runs the conditional and unconditional halves in one UNet call.
`enable_fast_paths()` switches on fused q/k/v projections, channels-last memory and regional
`torch.compile` (see `models/fast.py`); results stay equal to the plain path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from diffusers import AutoencoderKL, DiffusionPipeline, UNet2DConditionModel
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor
from einops import rearrange
from PIL import Image

from vidldm import sampling_settings as settings
from vidldm.control import CONTROL_ARGS, VideoControlNetMixin
from vidldm.denoisers import GuidedDenoiser, temporal_steps
from vidldm.errors import VidldmError
from vidldm.frames import frames_to_tensor, load_frames, tensor_to_frames
from vidldm.free_init import FreeInit
from vidldm.ip_adapter import VideoIPAdapterMixin
from vidldm.long_clips import LongClip, long_clip_options
from vidldm.lora import VideoLoraLoaderMixin
from vidldm.models import fast, sdxl
from vidldm.models.motion import MotionAdapter
from vidldm.models.text import encode_text
from vidldm.models.video_unet import VideoUNet
from vidldm.models.video_vae import TemporalDecoder, VideoVAE
from vidldm.noise_prior import correlate
from vidldm.offload import ModelOffload, sequential_offload
from vidldm.sampling import KnownFrames, denoise, freenoise_noise
from vidldm.sampling_settings import SAMPLING_DEFAULTS, check_generation_defaults
from vidldm.schedulers import make_scheduler
from vidldm.temporal_smoothing import smooth_over_time

OutputType = Literal["pil", "np", "pt", "latent"]
LONG_CLIP_ARGS = ("closed_loop", "weighting_scheme", "noise_type")  # with context_* and free_*: vidldm.long_clips


@dataclass
class Start:
    """Where the loop starts: latents `(B, C, F, h, w)`, the timesteps it runs, the frames it keeps known."""

    latents: torch.Tensor
    timesteps: torch.Tensor
    known: KnownFrames | None
    num_inference_steps: int = 0


def check_prompt(prompt, num_frames: int) -> None:
    """A string, a non-empty list of strings, or prompt travel `{frame index: string}` within the clip."""
    if isinstance(prompt, dict):
        if not prompt or not all(isinstance(k, int) and 0 <= k < num_frames for k in prompt):
            raise VidldmError(f"prompt travel keys must be frame indices in [0, {num_frames - 1}]")
        if not all(isinstance(v, str) for v in prompt.values()):
            raise VidldmError("prompt travel values must be strings")
    elif isinstance(prompt, (list, tuple)):
        if not prompt or not all(isinstance(p, str) for p in prompt):
            raise VidldmError("prompt must be a string, a non-empty list of strings or {frame: prompt}")
    elif not isinstance(prompt, str):
        raise VidldmError("prompt must be a string, a non-empty list of strings or {frame: prompt}")


@dataclass
class VideoPipelineOutput(BaseOutput):
    """`frames`: per `output_type`, a list (batch) of lists of PIL images, `(B, F, H, W, 3)` float numpy
    in [0, 1], `(B, F, 3, H, W)` float tensor in [0, 1] (diffusers' layout), or latents `(B, C, F, h, w)`."""

    frames: Any


class VideoPipeline(DiffusionPipeline, VideoLoraLoaderMixin, VideoIPAdapterMixin, VideoControlNetMixin):
    """Image model (VAE, text encoder, UNet) + `MotionAdapter` + scheduler, as in AnimateDiff; LoRAs with
    diffusers' methods (`load_lora_weights`, `set_adapters`, `fuse_lora`..., see `vidldm/lora.py`); IP-Adapter
    image prompts likewise (`load_ip_adapter`, `set_ip_adapter_scale`, then `ip_adapter_image=` an image, or
    `{(first, last): image}` per frame range, or `ip_adapter_image_embeds=`; see `vidldm/ip_adapter.py`); ControlNets
    and SparseCtrl (`controlnet=` or `set_controlnet`, then `conditioning_frames=`...; see `vidldm/control.py`)."""

    model_cpu_offload_seq = "text_encoder->image_encoder->unet->vae"
    _optional_components = ["temporal_decoder", "text_encoder_2", "tokenizer_2", "image_encoder", "feature_extractor",
                            "controlnet"]

    def __init__(
        self,
        vae: AutoencoderKL,
        text_encoder,
        tokenizer,
        unet: UNet2DConditionModel,
        motion_adapter: MotionAdapter,
        scheduler,
        temporal_decoder: TemporalDecoder | None = None,
        generation_defaults: dict | None = None,  # e.g. {"num_inference_steps": 20, "temporal_end": 0.7}
        text_encoder_2=None,  # SDXL: the second, projecting text encoder and its tokenizer
        tokenizer_2=None,
        force_zeros_for_empty_prompt: bool = True,  # SDXL: no negative prompt -> zero embeddings (diffusers' rule)
        image_encoder=None,  # IP-Adapter: CLIPVisionModelWithProjection and its CLIPImageProcessor (load_ip_adapter)
        feature_extractor=None,
        controlnet=None,  # ControlNetModel, SparseControlNetModel or several (vidldm/control.py)
    ):
        super().__init__()
        self.register_modules(
            vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
            motion_adapter=motion_adapter, scheduler=scheduler, temporal_decoder=temporal_decoder,
            text_encoder_2=text_encoder_2, tokenizer_2=tokenizer_2, image_encoder=image_encoder,
            feature_extractor=feature_extractor,
        )
        self.set_controlnet(controlnet)
        self.register_to_config(generation_defaults=check_generation_defaults(generation_defaults or {}))
        if text_encoder_2 is not None:
            self.register_to_config(force_zeros_for_empty_prompt=force_zeros_for_empty_prompt)
        if unet is not None:
            sdxl.check_parts(unet, text_encoder_2, tokenizer_2)

    # ------------------------------------------------------------------ the model's own settings
    @property
    def generation_defaults(self) -> dict[str, float]:
        """The sampling settings this model was tuned for (a subset of `SAMPLING_DEFAULTS`' keys)."""
        return dict(self.config.get("generation_defaults") or {})

    def set_generation_defaults(self, **settings: float) -> None:
        """Lay `settings` over the model's own sampling defaults; they are saved with the pipeline."""
        self.register_to_config(generation_defaults=check_generation_defaults({**self.generation_defaults, **settings}))

    def sampling_defaults(self, **given: float | None) -> dict[str, float]:
        """Every sampling setting a call uses: those `given` that are not None, else the model's own, else diffusers'."""
        own = {**SAMPLING_DEFAULTS, **self.generation_defaults}
        return {key: value if given.get(key) is None else given[key] for key, value in own.items()}

    def with_parts(self, **parts) -> VideoPipeline:
        """A new pipeline sharing these modules and sampling defaults, with `parts` replaced (e.g. `motion_adapter=`)."""
        return VideoPipeline(**{**self.components, **parts}, generation_defaults=self.generation_defaults,
                             force_zeros_for_empty_prompt=self.config.get("force_zeros_for_empty_prompt", True))

    def to_diffusers(self, lossy: bool = False):
        """This model as diffusers' `AnimateDiffPipeline`: a new `UNetMotionModel` made from the UNet and the
        adapter (`from_unet2d`, copies), with this pipeline's VAE, text encoder and tokenizer (shared) and a
        scheduler of the same config. `save_pretrained` on it writes a folder diffusers loads.

        Refused with a `CheckpointError` that says why where diffusers would run another model: a temporal
        decoder, or an adapter diffusers cannot hold or would compute differently (`check_diffusers_can_run`;
        `lossy=True` lets per-frame normalisation and frame conditioning through). Unfuse q/k/v
        (`disable_fast_paths()`) first; the model's `generation_defaults` have no place in a diffusers folder."""
        from diffusers import AnimateDiffPipeline, UNetMotionModel

        from vidldm.models.motion_formats import check_diffusers_can_run, to_diffusers

        if self.is_sdxl:
            raise VidldmError("exporting an SDXL model is not supported yet: its diffusers folder is an "
                              "AnimateDiffSDXLPipeline, which vidldm does not write; keep the SDXL folder and the motion module")
        if self.temporal_decoder is not None:
            raise VidldmError("this model decodes with temporal decoder layers, which diffusers' AnimateDiffPipeline "
                              "has no place for (it decodes each frame on its own)")
        if any(getattr(m, "peft_config", None) for m in (self.unet, self.motion_adapter, self.text_encoder)):
            raise VidldmError("this pipeline has LoRAs loaded; to export them merged, call pipe.fuse_lora() and then "
                              "pipe.unload_lora_weights() (diffusers' way), or export first and load them into both")
        check_diffusers_can_run(self.motion_adapter, self.unet, lossy)
        adapter = to_diffusers(self.motion_adapter)
        unet = UNetMotionModel.from_unet2d(self.unet, adapter)
        if unet.dtype != self.unet.dtype:
            unet = unet.to(dtype=self.unet.dtype)
        return AnimateDiffPipeline(
            vae=self.vae, text_encoder=self.text_encoder, tokenizer=self.tokenizer, unet=unet.eval(),
            motion_adapter=adapter, scheduler=type(self.scheduler).from_config(self.scheduler.config),
        )

    @property
    def video_unet(self) -> VideoUNet:
        """The UNet + adapter as one video model; rebuilt if either component was replaced."""
        cached = self.__dict__.get("_video_unet")
        if cached is None or cached.unet is not self.unet or cached.motion_adapter is not self.motion_adapter:
            cached = VideoUNet(self.unet, self.motion_adapter)  # shares the modules, adds no weights
            self.__dict__["_video_unet"] = cached
        return cached

    @property
    def num_timesteps(self) -> int | None:
        """The steps the current (or last) call's loop runs, as diffusers' pipelines expose it."""
        return getattr(self, "_num_timesteps", None)

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def max_seq_length(self) -> int:
        return self.motion_adapter.max_seq_length

    @property
    def default_num_frames(self) -> int:
        """The clip length when none is asked for: 16 (AnimateDiff's training length), fewer where the adapter's
        position table is shorter. The CLI, the studio and the pipeline all default to this."""
        return min(16, self.max_seq_length)

    # ------------------------------------------------------------------ text
    @property
    def is_sdxl(self) -> bool:
        return self.text_encoder_2 is not None

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        """`N` strings -> token embeddings `(N, L, D)` in the UNet's dtype."""
        return self.encode_text_pooled(texts)[0]

    def encode_text_pooled(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`N` strings -> token embeddings `(N, L, D)` and, for SDXL, the pooled text `(N, P)` (else None)."""
        self._offload("text")
        if not self.is_sdxl:
            return encode_text(self.tokenizer, self.text_encoder, texts, self._execution_device).to(self.unet.dtype), None
        embeds, pooled = sdxl.encode_sdxl((self.tokenizer, self.tokenizer_2), (self.text_encoder, self.text_encoder_2), texts)
        return embeds.to(self.unet.dtype), pooled.to(self.unet.dtype)

    def prompt_embeddings(self, prompt, num_frames: int) -> torch.Tensor:
        """`(B, L, D)` for a str or a list; `(1, F, L, D)` for prompt travel `{frame: prompt}`,
        linearly interpolated between the keyed frames and held before the first / after the last."""
        return self.prompt_conditioning(prompt, num_frames)[0]

    def prompt_conditioning(self, prompt, num_frames: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`prompt_embeddings` and, for SDXL, the pooled text: `(B, P)`, or `(1, F, P)` for prompt travel
        (interpolated as the token embeddings are)."""
        if isinstance(prompt, dict):
            keys = sorted(prompt)
            embeds, pooled = self.encode_text_pooled([prompt[k] for k in keys])
            return _travel(embeds, keys, num_frames), None if pooled is None else _travel(pooled, keys, num_frames)
        return self.encode_text_pooled([prompt] if isinstance(prompt, str) else list(prompt))

    # ------------------------------------------------------------------ fast paths
    def fuse_qkv_projections(self) -> None:
        """One matmul for q/k/v in every spatial and temporal attention (inference; keys unchanged)."""
        fast.fuse_qkv_projections(self.unet)
        fast.fuse_qkv_projections(self.motion_adapter)

    def unfuse_qkv_projections(self) -> None:
        fast.unfuse_qkv_projections(self.unet)
        fast.unfuse_qkv_projections(self.motion_adapter)

    def enable_fast_paths(self, fuse_qkv: bool = True, channels_last: bool = True, compile: bool = False,
                          compile_options: dict[str, Any] | None = None) -> None:
        """Switch on the fast paths (each keeps results equal to the plain path):

        - `fuse_qkv`: q/k/v projections in one matmul (`fuse_qkv_projections`);
        - `channels_last`: UNet and VAE weights, hence activations, in channels-last memory;
        - `compile`: `torch.compile` of the repeated blocks of the UNet, the motion adapter and the
          VAE decoder ("regional": short warm-up; the loop between blocks stays eager).
          `compile_options` go to `torch.compile` (`mode`, `dynamic`, `fullgraph`, `backend`).
        Call `disable_fast_paths()` before training or saving weights you changed.
        """
        if compile_options is not None and not compile:
            raise VidldmError("compile_options were given but compile=False; pass compile=True to use them")
        if fuse_qkv:
            self.fuse_qkv_projections()
        if channels_last:
            for model in (self.unet, self.motion_adapter, self.vae):
                model.to(memory_format=torch.channels_last)
        if compile:
            options = compile_options or {}
            for model in (self.unet, self.motion_adapter, self.vae.decoder):
                fast.compile_regions(model, **options)

    def disable_fast_paths(self) -> None:
        """Back to the plain path: unfused projections, contiguous weights, eager blocks."""
        self.unfuse_qkv_projections()
        for model in (self.unet, self.motion_adapter, self.vae):
            fast.uncompile_regions(model)
            model.to(memory_format=torch.contiguous_format)

    # ------------------------------------------------------------------ long clips: diffusers' switches
    def enable_free_noise(self, context_length: int | None = 16, context_stride: int = 4,
                          weighting_scheme: str = "pyramid", noise_type: str = "shuffle_context",
                          prompt_interpolation_callback=None) -> None:
        """diffusers' FreeNoise switch (same names and defaults): later calls cut clips longer than `context_length`
        (None: the adapter's length) into windows `context_stride` apart, blended by `weighting_scheme`, from
        noise of `noise_type`. A call's own `context_frames`, `context_stride`, ... still win. vidldm windows
        the whole UNet call, where diffusers windows the motion modules' attention (README, "Long clips").
        Prompt travel is interpolated linearly; another `prompt_interpolation_callback` is not supported."""
        if prompt_interpolation_callback is not None:
            raise VidldmError("prompt_interpolation_callback is not supported: vidldm interpolates prompt travel "
                              "linearly between its keyed frames")
        enabled = dict(context_length=context_length or self.max_seq_length, context_stride=context_stride,
                       weighting_scheme=weighting_scheme, noise_type=noise_type)
        long_clip_options(enabled["context_length"] + 1, self.max_seq_length, {}, enabled, None)  # checks them
        self.__dict__["_free_noise"] = enabled

    def disable_free_noise(self) -> None:
        """FreeNoise's noise rescheduling off: every frame its own noise. Clips longer than the adapter's window
        are still cut into windows (its positions stop there); pass `free_noise=True` to a call to turn it on."""
        self.__dict__["_free_noise"] = {"noise_type": "random"}

    @property
    def free_noise_enabled(self) -> bool:
        return (self.__dict__.get("_free_noise") or {}).get("noise_type", "shuffle_context") != "random"

    def enable_free_init(self, num_iters: int = 3, use_fast_sampling: bool = False, method: str = "butterworth",
                         order: int = 4, spatial_stop_frequency: float = 0.25, temporal_stop_frequency: float = 0.25):
        """diffusers' FreeInit switch (same names, defaults and results): later calls sample `num_iters` times
        (see `vidldm.free_init`); a call's `free_init=`, `free_init_method=`, ... still win."""
        try:
            self.__dict__["_free_init"] = FreeInit(num_iters, use_fast_sampling, method, order, spatial_stop_frequency,
                                                   temporal_stop_frequency)
        except ValueError as e:
            raise VidldmError(str(e)) from None

    def disable_free_init(self) -> None:
        self.__dict__["_free_init"] = None

    @property
    def free_init_enabled(self) -> bool:
        return self.__dict__.get("_free_init") is not None

    # ------------------------------------------------------------------ memory
    def enable_vae_slicing(self) -> None:
        """Decode one frame at a time inside each decode chunk (diffusers' `AutoencoderKL.enable_slicing`)."""
        self.vae.enable_slicing()

    def disable_vae_slicing(self) -> None:
        self.vae.disable_slicing()

    def enable_vae_tiling(self) -> None:
        """Decode (and encode) each frame in overlapping tiles, blended (diffusers' `AutoencoderKL.enable_tiling`):
        large frames in little memory, slightly different pixels at tile seams. A temporal decoder ignores it."""
        self.vae.enable_tiling()

    def disable_vae_tiling(self) -> None:
        self.vae.disable_tiling()

    @property
    def model_offload(self) -> ModelOffload | None:
        """The model offload `enable_model_cpu_offload` set up (None when off)."""
        return self.__dict__.get("_model_offload")

    @model_offload.setter
    def model_offload(self, offload: ModelOffload | None) -> None:
        self.__dict__["_model_offload"] = offload

    def offload_groups(self) -> dict[str, list]:
        """The models each phase of a call runs: text encoding, the loop (UNet + adapter), VAE encode/decode."""
        return {"text": [self.text_encoder, self.text_encoder_2, self.image_encoder], "denoise": [self.unet, self.motion_adapter, self.controlnet],
                "vae": [self.vae, self.temporal_decoder]}

    def enable_model_cpu_offload(self, gpu_id: int | None = None, device: torch.device | str | None = None) -> None:
        """Keep every model in CPU memory and move each phase's models to `device` (default `cuda:gpu_id`) just
        before they run (`vidldm.offload`: diffusers' hooks on `forward` would miss the UNet and the adapter,
        which `VideoUNet` calls block by block). Outputs are unchanged."""
        if device is None:
            if not torch.cuda.is_available():
                raise VidldmError("model CPU offload moves models to a GPU and none is available; give device=")
            device = f"cuda:{gpu_id or 0}"
        self.remove_all_hooks()
        self.model_offload = ModelOffload(self.offload_groups(), device)

    def enable_sequential_cpu_offload(self, gpu_id: int | None = None, device: torch.device | str | None = None) -> None:
        """Keep every weight in CPU memory and move each layer's weights to `device` (default `cuda:gpu_id`) just
        before it runs, and out after (accelerate's hooks, `vidldm.offload.sequential_offload`, which says why not
        diffusers' method as it is). Least accelerator memory, slowest; outputs are unchanged."""
        if device is None:
            if not torch.cuda.is_available():
                raise VidldmError("sequential CPU offload moves weights to a GPU and none is available; give device=")
            device = f"cuda:{gpu_id or 0}"
        self.remove_all_hooks()
        self._offload_device = torch.device(device)  # diffusers' attribute, read by its offload helpers
        sequential_offload([m for m in self.components.values() if isinstance(m, torch.nn.Module)], device)
        self.__dict__["_sequential_offload"] = True  # a module added later would have no hooks (set_controlnet refuses)

    @property
    def offloaded(self) -> bool:
        """Whether CPU offload (model or sequential) is on: the modules it moves were fixed when it was enabled."""
        return self.model_offload is not None or self.__dict__.get("_sequential_offload", False)

    def remove_all_hooks(self) -> None:
        super().remove_all_hooks()
        self.model_offload = None
        self.__dict__["_sequential_offload"] = False

    def maybe_free_model_hooks(self) -> None:
        """After a call: every offloaded model back in CPU memory."""
        super().maybe_free_model_hooks()
        if self.model_offload is not None:
            self.model_offload.offload_all()

    @property
    def _execution_device(self) -> torch.device:
        if self.model_offload is not None:
            return self.model_offload.device
        return super()._execution_device

    def _offload(self, phase: str) -> None:
        if self.model_offload is not None:
            self.model_offload.load(phase)

    # ------------------------------------------------------------------ checks
    def check_inputs(self, prompt, height, width, num_frames, image, video, output_type,
                     prompt_embeds=None, negative_prompt_embeds=None, negative_prompt=None, image_prompt=(None, None),
                     **numbers):
        """Every input of `__call__` before any work; `numbers` are checked against the settings table
        (`vidldm.sampling_settings`: the ranges the CLI checks too), by their Python names."""
        if prompt_embeds is not None:
            self.check_embeddings(prompt, prompt_embeds, negative_prompt, negative_prompt_embeds, num_frames)
        elif negative_prompt_embeds is not None:
            raise VidldmError("negative_prompt_embeds needs prompt_embeds; give both or pass strings")
        else:
            check_prompt(prompt, num_frames)
        for name, value in {"num_frames": num_frames, **numbers}.items():
            if name == "num_frames" and not isinstance(value, int):
                raise VidldmError(f"num_frames must be at least 1, got {value}")
            settings.BY_NAME[name].check(value, name)
        trained = self.scheduler.config.num_train_timesteps
        if numbers["num_inference_steps"] > trained:
            raise VidldmError(f"num_inference_steps must be at most {trained} (the steps the model was trained with), "
                              f"got {numbers['num_inference_steps']}")
        s = self.vae_scale_factor
        for name, v in (("height", height), ("width", width)):
            if not isinstance(v, int) or v < s or v % s:
                raise VidldmError(f"{name} must be a positive multiple of {s} (the VAE's downsampling), got {v}")
        if image is not None and video is not None:
            raise VidldmError("give either image= (animate a still) or video= (restyle / extend), not both")
        if output_type not in ("pil", "np", "pt", "latent"):
            raise VidldmError(f"output_type must be 'pil', 'np', 'pt' or 'latent', got {output_type!r}")
        self.check_image_prompt(*image_prompt)

    def check_embeddings(self, prompt, prompt_embeds, negative_prompt, negative_prompt_embeds, num_frames):
        """Precomputed text: `prompt_embeds` `(B, L, D)` or per frame `(B, F, L, D)`;
        `negative_prompt_embeds` `(B, L, D)`, `(1, L, D)` or the shape of `prompt_embeds`."""
        if prompt is not None:
            raise VidldmError("give either prompt or prompt_embeds, not both")
        if negative_prompt is not None and negative_prompt_embeds is not None:
            raise VidldmError("give either negative_prompt or negative_prompt_embeds, not both")
        dim = self.unet.config.cross_attention_dim
        if not isinstance(prompt_embeds, torch.Tensor) or prompt_embeds.ndim not in (3, 4) or prompt_embeds.shape[-1] != dim:
            got = tuple(prompt_embeds.shape) if isinstance(prompt_embeds, torch.Tensor) else type(prompt_embeds).__name__
            raise VidldmError(f"prompt_embeds must be a tensor (B, L, {dim}) or per frame (B, F, L, {dim}), got {got}")
        if prompt_embeds.ndim == 4 and prompt_embeds.shape[1] != num_frames:
            raise VidldmError(f"per-frame prompt_embeds have {prompt_embeds.shape[1]} frames but num_frames is {num_frames}")
        if negative_prompt_embeds is not None:
            b, length = prompt_embeds.shape[0], prompt_embeds.shape[-2]
            neg = negative_prompt_embeds
            ok = isinstance(neg, torch.Tensor) and (
                tuple(neg.shape) == tuple(prompt_embeds.shape)
                or (neg.ndim == 3 and neg.shape[0] in (1, b) and tuple(neg.shape[1:]) == (length, dim)))
            if not ok:
                got = tuple(neg.shape) if isinstance(neg, torch.Tensor) else type(neg).__name__
                raise VidldmError(f"negative_prompt_embeds must be ({b}, {length}, {dim}), (1, {length}, {dim}) or "
                                  f"the shape of prompt_embeds, got {got}")

    # ------------------------------------------------------------------ call
    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str] | dict[int, str] | None = None,
        negative_prompt: str | list[str] | None = None,
        num_frames: int | None = None, height: int | None = None, width: int | None = None,
        num_inference_steps: int | None = None, guidance_scale: float | None = None, temporal_smoothing: float | None = None,
        guidance_rescale: float | None = None, temporal_end: float | None = None, scheduler: str | None = None,
        noise_prior: str | None = None, noise_prior_strength: float | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None, latents: torch.Tensor | None = None,
        image=None, image_conditioning: Literal["auto", "clean", "replace"] = "auto",
        video=None, strength: float = 0.6, extend: bool = False, num_known_frames: int | None = None,
        context_frames: int | None = None, context_stride: int | None = None, context_overlap: int | None = None,
        closed_loop: bool = False, weighting_scheme: str | None = None, free_noise: bool | None = None,
        noise_type: str | None = None, free_init: int | None = None, free_init_method: str | None = None,
        free_init_order: int | None = None, free_init_spatial_stop_frequency: float | None = None,
        free_init_temporal_stop_frequency: float | None = None, free_init_fast_sampling: bool = False,
        decode_chunk_size: int | None = 8, temporal_decoder: bool | None = None, output_type: OutputType = "pil", known_pixels: bool | None = None,
        ip_adapter_image=None, ip_adapter_image_embeds: list[torch.Tensor] | None = None,
        conditioning_frames=None, controlnet_conditioning_scale: float | list[float] = 1.0, guess_mode: bool = False,
        control_guidance_start: float | list[float] = 0.0, control_guidance_end: float | list[float] = 1.0, controlnet_frame_indices=None,
        callback_on_step_end=None, callback_on_step_end_tensor_inputs: tuple[str, ...] = ("latents",),
        prompt_embeds: torch.Tensor | None = None, negative_prompt_embeds: torch.Tensor | None = None,
        pooled_prompt_embeds: torch.Tensor | None = None, negative_pooled_prompt_embeds: torch.Tensor | None = None,
    ) -> VideoPipelineOutput:
        """Make clips. `latents` `(B, C, F, h, w)`; `prompt_embeds` `(B, L, D)` or per frame `(B, F, L, D)`, `negative_prompt_embeds`
        `(B or 1, L, D)`, SDXL's pooled `(B, P)` (diffusers' names); ControlNet/SparseCtrl arguments: `vidldm.control`. Settings
        left None take `sampling_defaults()`; long-clip ones `vidldm.long_clips`. Result: `VideoPipelineOutput`."""
        long = {k: v for k, v in locals().items() if k.startswith(("context_", "free_")) or k in LONG_CLIP_ARGS}
        # 0. settings: the call's, else the model's own, else diffusers'; all checked before any work
        sampling = self.sampling_defaults(**{k: v for k, v in locals().items() if k in SAMPLING_DEFAULTS})
        video_frames = load_frames(video) if video is not None else None
        num_frames, height, width = self._sizes(video_frames, extend, num_frames, height, width)
        self.check_inputs(prompt, height, width, num_frames, image, video, output_type, prompt_embeds,
                          negative_prompt_embeds, negative_prompt, strength=strength, num_known_frames=num_known_frames,
                          decode_chunk_size=decode_chunk_size, image_prompt=(ip_adapter_image, ip_adapter_image_embeds), **sampling)
        long = self.long_clip(num_frames, video is not None and not extend, long)
        sched = self.scheduler if scheduler is None else make_scheduler(scheduler, self.scheduler.config)  # this call's only
        device = self._execution_device
        video_vae = VideoVAE(self.vae, chunk_size=decode_chunk_size, temporal_decoder=self._decoder_layers(temporal_decoder))
        control = self.control_residuals(video_vae, {k: v for k, v in locals().items() if k in CONTROL_ARGS}, num_frames, (height, width), device)

        # 1. text: conditional (and unconditional, in the same model call) embeddings; SDXL's pooled text; image prompts
        context, added, batch = self._conditioning(
            prompt, negative_prompt, prompt_embeds, negative_prompt_embeds, num_frames, sampling["guidance_scale"] > 1.0,
            device, (height, width), (pooled_prompt_embeds, negative_pooled_prompt_embeds), (ip_adapter_image, ip_adapter_image_embeds))

        # 2. where the loop starts: noise (or the noised input video), the timesteps left, the known frames
        shape = (batch, self.unet.config.in_channels, num_frames, height // self.vae_scale_factor, width // self.vae_scale_factor)
        start = self._start_and_known(video_vae, sched, shape, sampling["num_inference_steps"], generator, latents, image,
                                      image_conditioning, video_frames, extend, strength, num_known_frames,
                                      (height, width), long, device, (sampling["noise_prior"], sampling["noise_prior_strength"]))

        # 3. the loop (with FreeInit, again from restarts that keep the last result's low frequencies)
        x = self._sample(context, added, sampling, sched, start, long, generator,
                         self._step_callback(callback_on_step_end, callback_on_step_end_tensor_inputs), control)

        # 4. decode (extension: the input clip, then the new frames)
        before = video_frames if extend else None
        return self._to_output(x, video_vae, output_type, before, start.known, control, (height, width), sampling)

    def _decoder_layers(self, temporal_decoder: bool | None) -> TemporalDecoder | None:
        """The temporal decoder a call decodes with: the model's unless `temporal_decoder=False` (the image VAE frame
        by frame); True asks for one, so a model without one is refused rather than silently decoded frame by frame."""
        if temporal_decoder and self.temporal_decoder is None:
            raise VidldmError("temporal_decoder=True: this model has no temporal decoder (train one with the decoder "
                              "stage); leave it out")
        return None if temporal_decoder is False else self.temporal_decoder

    def _sizes(self, video_frames, extend: bool, num_frames, height, width):
        """The sizes a call leaves out: restyle keeps the input's length, other modes take the adapter's (16 at
        most); the UNet's sample size."""
        if num_frames is None:
            num_frames = len(video_frames) if video_frames is not None and not extend else self.default_num_frames
        height = height or self.unet.config.sample_size * self.vae_scale_factor
        width = width or self.unet.config.sample_size * self.vae_scale_factor
        return num_frames, height, width

    def long_clip(self, num_frames: int, restyle: bool, given: dict[str, Any]) -> LongClip:
        """The call's long-clip settings (`given`, its arguments) over `enable_free_noise`/`enable_free_init`'s, over
        the model's own FreeInit (`generation_defaults`; not for video-to-video, which starts from its input)."""
        if given.get("free_init") is None and self.__dict__.get("_free_init") is None and not restyle:
            given = {**given, "free_init": self.generation_defaults.get("free_init")}
        long = long_clip_options(num_frames, self.max_seq_length, given, self.__dict__.get("_free_noise"),
                                 self.__dict__.get("_free_init"))
        if long.free_init is not None and restyle:
            raise VidldmError("FreeInit restarts sampling from noise; video-to-video starts from the input video: "
                              "drop free_init (or disable_free_init()) for it")
        return long

    def _sample(self, text, added, sampling: dict, sched, start: Start, long: LongClip, generator, on_step,
                control=None) -> torch.Tensor:
        """The one loop (`sampling.denoise`), run once, or `free_init.num_iters` times (FreeInit): each later run
        starts from `FreeInit.restart` of the last result, with the first run's noise, on a fresh schedule.
        `added`: SDXL's `added_cond_kwargs` (None otherwise); `control`: ControlNet residuals (`vidldm.control`)."""
        self._offload("denoise")
        x, noise = start.latents, start.latents.clone()
        prior = (sampling["noise_prior"], sampling["noise_prior_strength"])  # for FreeInit's new noise
        for iteration in range(long.free_init.num_iters if long.free_init else 1):
            timesteps = start.timesteps
            if long.free_init is not None:
                x = long.free_init.restart(x, noise, sched, generator, prior) if iteration else x
                sched.set_timesteps(long.free_init.steps(start.num_inference_steps, iteration), device=x.device)
                timesteps = sched.timesteps
            self._num_timesteps = len(timesteps)  # diffusers' name, read by callbacks that show progress
            denoiser = GuidedDenoiser(self.video_unet, text, sampling["guidance_scale"], sampling["guidance_rescale"],
                                      temporal_steps(sampling["temporal_end"], len(timesteps)), added,
                                      None if control is None else control.for_steps(len(timesteps)))
            with self.progress_bar(total=len(timesteps)) as bar:
                x = denoise(denoiser, sched, x, timesteps, known=start.known, context=long.windows,
                            generator=generator, progress=bar.update, on_step=on_step)
        return x

    def _conditioning(self, prompt, negative_prompt, prompt_embeds, negative_prompt_embeds, num_frames: int, guided: bool,
                      device, size: tuple[int, int], pooled, image_prompt) -> tuple[torch.Tensor, dict | None, int]:
        """`_text_context`'s text and `added_cond_kwargs`, with an IP-Adapter's image prompts added there as
        `image_embeds` (per frame, `VideoIPAdapterMixin.image_prompt_embeddings`); and the batch B."""
        context, added = self._text_context(prompt, negative_prompt, prompt_embeds, negative_prompt_embeds, num_frames,
                                            guided, device, size, pooled)
        batch = context.shape[0] // (2 if guided else 1)
        if self.num_ip_adapters:
            embeds = self.image_prompt_embeddings(*image_prompt, batch, num_frames, guided, device)
            added = {**(added or {}), "image_embeds": embeds}
        return context, added, batch

    def _text_context(self, prompt, negative_prompt, prompt_embeds, negative_prompt_embeds, num_frames: int,
                      guided: bool, device, size: tuple[int, int], pooled=(None, None)) -> tuple[torch.Tensor, dict | None]:
        """Text embeddings `(B, L, D)` or per frame `(B, F, L, D)`; under guidance the unconditional ones
        first, concatenated along the batch: `(2B, ...)`. For SDXL also the UNet's `added_cond_kwargs` in the
        same order: pooled text `text_embeds` `(2B, P)` (per frame `(2B, F, P)`) and `time_ids` `(2B, 6)`; else None."""
        if prompt_embeds is not None:
            cond, cond_pooled = prompt_embeds.to(device, self.unet.dtype), self._given_pooled(pooled[0], "pooled_prompt_embeds")
        else:
            cond, cond_pooled = self.prompt_conditioning(prompt, num_frames)
        cond, cond_pooled = cond.to(device), None if cond_pooled is None else cond_pooled.to(device)
        if guided:
            uncond, uncond_pooled = self._uncond_text(negative_prompt, negative_prompt_embeds, pooled[1], cond, cond_pooled)
            cond = torch.cat([_per_frame_like(uncond, cond), cond])
            cond_pooled = None if cond_pooled is None else torch.cat([_per_frame_like(uncond_pooled, cond_pooled), cond_pooled])
        if cond_pooled is None:
            return cond, None
        ids = sdxl.time_ids(self.unet.config, self.text_encoder_2.config.projection_dim, size, cond_pooled.shape[0],
                            cond.dtype, device)
        return cond, {"text_embeds": cond_pooled.to(self.unet.dtype), "time_ids": ids}

    def _given_pooled(self, pooled: torch.Tensor | None, name: str) -> torch.Tensor | None:
        """The pooled text given with precomputed SDXL embeddings (required there, as diffusers requires it)."""
        if not self.is_sdxl:
            return None
        if not isinstance(pooled, torch.Tensor):
            raise VidldmError(f"an SDXL model needs {name} (B, P) with precomputed embeddings, as diffusers' SDXL pipelines do")
        return pooled.to(self.unet.dtype)

    def _uncond_text(self, negative_prompt, negative_prompt_embeds, negative_pooled, cond: torch.Tensor,
                     cond_pooled: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The unconditional half `(B, L, D)` (and SDXL's pooled `(B, P)`): given embeddings, the negative prompt,
        or for SDXL without a negative prompt zeros (diffusers' `force_zeros_for_empty_prompt`), else ""."""
        batch = cond.shape[0]
        if negative_prompt_embeds is not None:
            uncond = negative_prompt_embeds.to(cond.device, self.unet.dtype)
            pooled = self._given_pooled(negative_pooled, "negative_pooled_prompt_embeds")
            return _batch(uncond, batch), None if pooled is None else _batch(pooled, batch)
        if self.is_sdxl and negative_prompt is None and self.config.get("force_zeros_for_empty_prompt", True):
            return torch.zeros_like(cond), torch.zeros_like(cond_pooled)
        neg = negative_prompt if negative_prompt is not None else ""
        neg = [neg] * batch if isinstance(neg, str) else list(neg)
        if len(neg) != batch:
            raise VidldmError(f"{len(neg)} negative prompts for {batch} prompts; give one or one per prompt")
        return self.encode_text_pooled(neg)

    def _start_and_known(self, video_vae: VideoVAE, sched, shape: tuple[int, ...], num_inference_steps: int, generator,
                         latents, image, image_conditioning, video_frames, extend: bool, strength: float,
                         num_known_frames, size: tuple[int, int], long: LongClip, device,
                         noise_prior: tuple[str, float]) -> Start:
        """Start latents `shape` `(B, C, F, h, w)`, the timesteps still to run and the known frames of every mode:
        noise for text-to-video; noise + a clean still at frame 0 for animation; noise + the input's last
        frames for extension; the input noised part-way down the schedule for video-to-video (SDEdit)."""
        batch, num_frames = shape[0], shape[2]
        if isinstance(generator, list) and len(generator) != batch:
            raise VidldmError(f"{len(generator)} generators for a batch of {batch}; give one per prompt")
        known = self._known_frames(video_vae, image, image_conditioning, video_frames if extend else None,
                                   num_known_frames, batch, num_frames, size, device)
        sched.set_timesteps(num_inference_steps, device=device)
        timesteps = sched.timesteps
        dtype = self.unet.dtype
        if latents is None:  # the model's noise prior (vidldm.noise_prior) on fresh noise; given latents are used as they are
            noise = correlate(randn_tensor(shape, generator=generator, device=device, dtype=dtype), *noise_prior)
        else:
            noise = latents.to(device, dtype)
        if num_frames > long.windows.length and latents is None:
            noise = freenoise_noise(noise, long.windows.length, long.windows.stride, long.noise_type, _first(generator))
        if known is not None:
            known.noise = noise[:, :, known.indices]
        if video_frames is None or extend:
            return Start(noise * sched.init_noise_sigma, timesteps, known, num_inference_steps)
        if len(video_frames) < num_frames:
            raise VidldmError(f"the video has {len(video_frames)} frames but num_frames is {num_frames}")
        clean = self._encode_frames(video_vae, [video_frames[:num_frames]], *size, device).expand(batch, -1, -1, -1, -1)
        n_steps = min(int(num_inference_steps * strength), num_inference_steps)
        begin = (num_inference_steps - n_steps) * sched.order
        timesteps = timesteps[begin:]
        if hasattr(sched, "set_begin_index"):
            sched.set_begin_index(begin)
        x = sched.add_noise(clean, noise, timesteps[:1].repeat(batch)) if len(timesteps) else clean.clone()
        return Start(x, timesteps, None, num_inference_steps)

    def _known_frames(self, video_vae: VideoVAE, image, image_conditioning: str, extend_from, num_known_frames,
                      batch: int, num_frames: int, size: tuple[int, int], device) -> KnownFrames | None:
        """The still(s) to animate (frame 0), keyframes `{frame: still}` to move between, or the last frames
        of the clip `extend_from` to continue, encoded."""
        if image is None and extend_from is None:
            return None
        indices, pixels = None, None
        if isinstance(image, dict):  # keyframes at any frames: in-betweening, frame-rate upsampling
            indices, stills = check_keyframes(image, num_frames)
            pixels = np.concatenate(stills)
            known_latents = self._encode_frames(video_vae, [pixels], *size, device).expand(batch, -1, -1, -1, -1)
        elif isinstance(image, (list, tuple)):  # one still per prompt
            if len(image) != batch:
                raise VidldmError(f"{len(image)} images for {batch} prompts; give one image or one per prompt")
            known_latents = self._encode_frames(video_vae, [load_frames(i, image=True) for i in image], *size, device)
        else:
            if image is not None:
                clip = load_frames(image, image=True)
            else:
                k = num_known_frames or default_known_frames(num_frames)
                if not 1 <= k < num_frames:
                    raise VidldmError(f"num_known_frames must be between 1 and {num_frames - 1}, got {k}")
                clip = extend_from[-k:]  # a clip shorter than k: all of it is known
            known_latents = self._encode_frames(video_vae, [clip], *size, device).expand(batch, -1, -1, -1, -1)
        indices = indices or list(range(known_latents.shape[2]))
        return KnownFrames(known_latents, indices, self._conditioning_mode(image_conditioning, indices), pixels=pixels)

    def _conditioning_mode(self, asked: str, indices: list[int]) -> str:
        """"auto": clean known frames where the adapter learned them (a first-frames prefix for adapters trained
        with frame conditioning; any frames for those trained with sparse known frames), else replace."""
        if asked != "auto":
            return asked
        config = self.motion_adapter.config
        prefix = indices == list(range(len(indices)))
        learned = config.get("sparse_frame_conditioning", False) or (prefix and config.get("frame_conditioning", False))
        return "clean" if learned else "replace"

    def _step_callback(self, callback_on_step_end, tensor_inputs):
        """diffusers' `callback_on_step_end(pipe, i, t, {"latents": ...})`, as the loop's `on_step`."""
        if callback_on_step_end is None:
            return None

        def on_step(i, t, latents):
            out = callback_on_step_end(self, i, t, {"latents": latents} if "latents" in tensor_inputs else {})
            return (out or {}).get("latents")

        return on_step

    def _to_output(self, x: torch.Tensor, video_vae: VideoVAE, output_type: str, before, known, control,
                   size, sampling: dict) -> VideoPipelineOutput:
        """Latents `(B, C, F, h, w)` -> the frames `output_type` asks for; `before`: the clip an extension continues.
        Known frames and SparseCtrl keyframes (`control`'s) are what the user gave there, the answer: they are not
        smoothed over time (`sampling["temporal_smoothing"]`, `vidldm.temporal_smoothing`; latents too are returned
        smoothed, so they decode to the same clip) and are decoded by the image decoder alone, not blended with
        their neighbours by a temporal decoder; with `known_pixels` keyframes come out as given (`_with_known_pixels`)."""
        keep = sorted({*(known.indices if known is not None else ()), *(control.keyframes if control else ())})
        x = smooth_over_time(x, sampling["temporal_smoothing"], keep)
        if output_type == "latent":
            self.maybe_free_model_hooks()
            return VideoPipelineOutput(frames=x)
        self._offload("vae")
        frames = tensor_to_frames(video_vae.decode(x, keep=keep))
        if sampling["known_pixels"] and known is not None and known.pixels is not None:
            frames = self._with_known_pixels(frames, known, *size)
        if before is not None:
            frames = self._after_input(before, frames, len(known.indices), *size)
        self.maybe_free_model_hooks()
        if output_type == "np":
            return VideoPipelineOutput(frames=frames)
        if output_type == "pt":
            return VideoPipelineOutput(frames=rearrange(torch.from_numpy(frames), "b f h w c -> b f c h w"))
        pil = [[Image.fromarray((f * 255).round().astype(np.uint8)) for f in clip] for clip in frames]
        return VideoPipelineOutput(frames=pil)

    @staticmethod
    def _with_known_pixels(frames: np.ndarray, known: KnownFrames, height: int, width: int) -> np.ndarray:
        """Clips `(B, F, H, W, 3)` with the keyframes the user gave put back as given (resized as the model saw
        them) and the frames between redrawn from their pixels (`vidldm.known_pixels`)."""
        from vidldm.known_pixels import with_known_pixels

        given = rearrange((frames_to_tensor(known.pixels, height, width).numpy() + 1) / 2, "k c h w -> k h w c")
        return with_known_pixels(frames, dict(zip(known.indices, given.astype(frames.dtype))))

    @staticmethod
    def _after_input(video_frames: np.ndarray, made: np.ndarray, num_known: int, height: int, width: int) -> np.ndarray:
        """Extension's result `(B, F_in + F - k, H, W, 3)`: the input clip `(F_in, H', W', 3)` uint8 resized as the
        model saw it, followed by the `F - k` new frames of `made` `(B, F, H, W, 3)` (its first `k` re-make the input's end)."""
        original = (frames_to_tensor(video_frames, height, width).numpy() + 1) / 2
        original = rearrange(original, "f c h w -> f h w c").astype(made.dtype)
        return np.stack([np.concatenate([original, clip[num_known:]]) for clip in made])

    def _encode_frames(self, video_vae: VideoVAE, clips: list[np.ndarray], height: int, width: int, device) -> torch.Tensor:
        """B clips `(F, H, W, 3)` uint8, each resized to `height x width` -> latents `(B, C, F, h, w)` in one
        encode (posterior mean: deterministic conditioning)."""
        video = torch.stack([rearrange(frames_to_tensor(c, height, width), "f c h w -> c f h w") for c in clips])
        self._offload("vae")
        return video_vae.encode(video.to(device, self.vae.dtype)).to(self.unet.dtype)


def check_keyframes(keyframes: dict, num_frames: int) -> tuple[list[int], list[np.ndarray]]:
    """Keyframes `{frame index: still}`: whole frame indices within the clip, stills of one size. The sorted indices
    and their stills, each read once `(1, H, W, 3)` uint8."""
    if not keyframes:
        raise VidldmError("keyframes must be a non-empty {frame index: image} mapping")
    bad = [k for k in keyframes if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k < num_frames]
    if bad:
        raise VidldmError(f"keyframe indices must be frames in [0, {num_frames - 1}], got {bad[0]!r}")
    indices = sorted(keyframes)
    stills = [load_frames(keyframes[i], image=True) for i in indices]
    sizes = {tuple(still.shape[1:3]) for still in stills}
    if len(sizes) > 1:
        shown = " and ".join(f"{w}x{h}" for h, w in sorted(sizes))
        raise VidldmError(f"keyframes have different sizes ({shown}); give stills of one size")
    return indices, stills


def default_known_frames(num_frames: int) -> int:
    """How many of a clip's last frames an extension continues from when not told: a quarter."""
    return max(1, num_frames // 4)


def _first(generator):
    return generator[0] if isinstance(generator, list) else generator


def _travel(embeds: torch.Tensor, keys: list[int], num_frames: int) -> torch.Tensor:
    """Per-key embeddings `(K, ...)` -> per frame `(1, F, ...)`: linear between keyed frames, held outside them."""
    frames = []
    for f in range(num_frames):
        j = int(np.searchsorted(keys, f, side="right"))  # first key after f
        if j == 0 or j == len(keys):
            frames.append(embeds[max(j - 1, 0)])
        else:
            w = (f - keys[j - 1]) / (keys[j] - keys[j - 1])
            frames.append(torch.lerp(embeds[j - 1], embeds[j], w))
    return torch.stack(frames)[None]


def _batch(x: torch.Tensor, batch: int) -> torch.Tensor:
    """A `(1, ...)` tensor repeated to `(batch, ...)`; others as they are."""
    return x.expand(batch, *x.shape[1:]) if x.shape[0] == 1 else x


def _per_frame_like(uncond: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
    """The unconditional half made per frame `(B, F, ...)` when the conditional one is (prompt travel)."""
    if cond.ndim == uncond.ndim + 1:
        return uncond[:, None].expand(-1, cond.shape[1], *uncond.shape[1:]).to(cond.device)
    return uncond.to(cond.device)
