"""Training stages: one `nn.Module` per stage whose `forward(batch, generator)` is the loss.

The loop in `trainer.py` is the same for every stage; a stage decides what is trainable and
what a sample is:

| stage      | trains                         | a sample is                                  |
|------------|--------------------------------|----------------------------------------------|
| `temporal` | the motion adapter (or a LoRA) | a clip; noise on every frame but known ones  |
| `image`    | the spatial UNet               | each frame of a clip as its own image        |
| `vae`      | the VAE                        | each frame, reconstructed (+ small KL)       |
| `decoder`  | temporal decoder layers        | a clip, reconstructed without flicker        |
| `keyframe` | a SparseCtrl keyframe encoder  | a clip; noise on every frame, keyframes told |

Wrapping the whole computation in one module lets accelerate/DDP see a single model whose
frozen parts simply carry no gradients. Batches hold either `pixel_values` `(B, 3, F, H, W)`
in [-1, 1] and `caption`, or (from a latent cache) `latents` `(B, C, F, h, w)` and `prompt_embeds` `(B, L, D)`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
import torch.nn.functional as F
from diffusers.training_utils import compute_snr
from einops import rearrange
from torch import nn

from vidldm.errors import VidldmError
from vidldm.models.text import encode_text
from vidldm.models.video_unet import VideoUNet
from vidldm.models.video_vae import TemporalDecoder, VideoVAE
from vidldm.noise_prior import correlate
from vidldm.pipeline import VideoPipeline
from vidldm.train.config import Config


class Stage(nn.Module):
    """Shared parts: frozen encoders, noise schedule, caption dropout.

    A stage owns its specifics: `part`, the pipeline component it trains and saves; `full_precision`, the
    components kept in fp32 under mixed precision; `on_finish`, what the model needs once training ends."""

    part: str
    full_precision: tuple[str, ...] = ()

    def __init__(self, pipe: VideoPipeline, config: Config):
        super().__init__()
        self.vae, self.text_encoder, self.unet = pipe.vae, pipe.text_encoder, pipe.unet
        self.tokenizer, self.noise_scheduler = pipe.tokenizer, pipe.scheduler
        self.config = config
        self.caption_dropout = config.train.caption_dropout
        t = config.train
        if t.input_perturbation and t.snr_floor and pipe.scheduler.config.prediction_type == "epsilon":
            # The floor weighs an epsilon error by 1/SNR at high noise (up to 1e6 at a zero-terminal-SNR schedule's
            # last step), and the perturbation's error cannot be learned away: the loss would be that error, scaled.
            raise VidldmError("train.input_perturbation with train.snr_floor on an epsilon-prediction model weighs the "
                              "perturbation's unlearnable error by 1/SNR (up to 1e6): set train.snr_floor: null, as Ning et al. do")

    def trainable(self) -> nn.Module:
        return getattr(self, self.part)

    def use_lora(self, rank: int):
        raise VidldmError(f"train.lora_rank trains a motion LoRA: use it with stage temporal, not {self.config.stage}")

    def on_finish(self, pipe: VideoPipeline, batches: Callable[[int], list[dict]]) -> str | None:
        """Called once training ends, before `pipe` is saved; `batches(n)` gives `n` more batches. A line to print, or None."""
        return None

    def freeze_all_but_trainable(self) -> None:
        self.requires_grad_(False)
        self.trainable().requires_grad_(True)
        self.train()
        for m in (self.vae, self.text_encoder):
            if m is not None and m is not self.trainable():  # a latent cache needs neither
                m.eval()

    def caption_drops(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """`(n,)` bool: which captions of a batch are dropped to "" (probability `caption_dropout`, for CFG)."""
        return torch.rand(n, generator=generator) < self.caption_dropout

    def encode_text(self, captions: list[str], generator: torch.Generator, drop: torch.Tensor | None = None) -> torch.Tensor:
        """`(B, L, D)`; the captions `drop` `(B,)` names (drawn with `caption_drops` when None) read "" instead."""
        drop = self.caption_drops(len(captions), generator) if drop is None else drop
        captions = ["" if d else c for c, d in zip(captions, drop.tolist())]
        return encode_text(self.tokenizer, self.text_encoder, captions).to(self.unet.dtype)

    def prompt_embeds(self, batch: dict, generator: torch.Generator, drop: torch.Tensor | None = None,
                      reference: bool = False) -> torch.Tensor:
        """`(B, L, D)` of the batch's captions, those `drop` names (drawn when None) as "". `reference`: the
        captions the teacher of `train.reference_mix` reads (a reference cache's; else the batch's own)."""
        key, caption_key = ("reference_embeds", "reference_caption") if reference else ("prompt_embeds", "caption")
        if key not in batch and caption_key not in batch:  # no reference cache: the teacher reads the same caption
            key, caption_key = "prompt_embeds", "caption"
        if key in batch:  # latent cache: embeddings were computed once; dropout -> the "" embedding
            embeds = batch[key].to(self.unet.device, self.unet.dtype)
            drop = self.caption_drops(embeds.shape[0], generator) if drop is None else drop
            if drop.any():
                embeds = embeds.clone()
                embeds[drop.to(embeds.device)] = self.encode_text([""], generator)[0].to(embeds.dtype)
            return embeds
        return self.encode_text(list(batch[caption_key]), generator, drop)

    def latents(self, batch: dict, generator: torch.Generator) -> torch.Tensor:
        if "latents" in batch:
            return batch["latents"].to(self.unet.device, self.unet.dtype)
        with torch.no_grad():
            video = batch["pixel_values"].to(self.vae.device)
            return VideoVAE(self.vae, chunk_size=16).encode(video, generator=generator, sample=True).to(self.unet.dtype)

    def correlate(self, noise: torch.Tensor) -> torch.Tensor:
        """The noise prior across frames: none here (frames of an image stage are separate samples)."""
        return noise

    def noise_and_timesteps(self, latents: torch.Tensor, generator: torch.Generator):
        noise = self.correlate(torch.randn(latents.shape, generator=generator)).to(latents)
        offset = self.config.train.noise_offset
        if offset:  # brightness shifts the plain noise cannot express (Guttenberg 2023)
            noise = noise + offset * torch.randn((*latents.shape[:2], *[1] * (latents.ndim - 2)), generator=generator).to(latents)
        weights = self.timestep_weights()
        if weights is None:
            steps = self.noise_scheduler.config.num_train_timesteps
            t = torch.randint(0, steps, (latents.shape[0],), generator=generator)
        else:
            t = torch.multinomial(weights, latents.shape[0], replacement=True, generator=generator)
        return noise, t.to(latents.device)

    def input_noise(self, noise: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The noise that goes into the model's input: `noise` itself, or with `train.input_perturbation` `g` a
        little more, `noise + g * xi`, while the target stays `noise` (Ning et al. 2023, "Input Perturbation
        Reduces Exposure Bias in Diffusion Models"). Why: at sampling time each step's input carries the errors
        of the steps before it, which noised training clips never show; a model trained on slightly wrong
        inputs learns to pull them back rather than to carry them on (a drift built up over the steps)."""
        g = self.config.train.input_perturbation
        if not g:
            return noise
        return noise + g * torch.randn(noise.shape, generator=generator).to(noise)

    def timestep_weights(self) -> torch.Tensor | None:
        """Sampling weights over the training timesteps, or None for uniform (diffusers' timestep bias).

        The temporal stage draws the later, noisier timesteps more often: that is where a clip's layout
        and motion are decided, while at low noise each frame is mostly the image model's business."""
        train = self.config.train
        if train.timestep_bias_strategy == "none" or train.timestep_bias_multiplier == 1:
            return None
        steps = self.noise_scheduler.config.num_train_timesteps
        weights = torch.ones(steps)
        biased = max(1, int(train.timestep_bias_portion * steps))
        part = slice(steps - biased, None) if train.timestep_bias_strategy == "later" else slice(0, biased)
        weights[part] *= train.timestep_bias_multiplier
        return weights / weights.sum()

    def target(self, latents: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        kind = self.noise_scheduler.config.prediction_type
        if kind == "epsilon":
            return noise
        if kind == "v_prediction":
            return self.noise_scheduler.get_velocity(latents, noise, t)
        raise ValueError(f"training for prediction_type {kind!r} is not supported (epsilon, v_prediction)")

    def loss_weights(self, t: torch.Tensor) -> torch.Tensor:
        """`(B,)` per-sample weights on the prediction loss, from `train.snr_gamma` and `train.snr_floor`.

        In terms of the clean sample, an epsilon loss weighs x0 errors by SNR(t): low-noise steps
        (huge SNR) dominate, and high-noise steps, where a clip's layout and motion are decided, hardly
        count. The weight on x0 errors becomes `clip(SNR, snr_floor, snr_gamma)`:
        - `snr_gamma` caps it: Min-SNR-gamma (Hang et al. 2023), measured there ~3x faster to converge;
        - `snr_floor` raises it: 1 is the truncated-SNR weighting of Salimans & Ho (2022), what a
          v-prediction loss implies, so high-noise steps count as much as mid-noise ones.
        Neither set: all ones (the plain loss)."""
        c = self.config.train
        if not c.snr_gamma and not c.snr_floor:
            return torch.ones(t.shape, device=t.device)
        snr = compute_snr(self.noise_scheduler, t).clamp(min=1e-6)  # zero terminal SNR reaches 0 at the last step
        x0_weight = snr
        if c.snr_gamma:
            x0_weight = x0_weight.clamp(max=c.snr_gamma)
        if c.snr_floor:
            x0_weight = x0_weight.clamp(min=c.snr_floor)
        if self.noise_scheduler.config.prediction_type == "v_prediction":
            return x0_weight / (snr + 1)
        return x0_weight / snr

    def weighted_mean(self, err: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        """Per-frame mean `(N,)` of squared errors `err` `(N, C, h, w)` on latent frames `latents`.

        `foreground_weight` adds weight to the cells of the object (`latent_foreground_mask`): on the
        shapes data the object is ~5% of a frame, so in a plain mean its outline (a square's corners
        against a circle's curve) is a small part of the loss next to the background's noise. The
        weights are normalised per frame, so the loss keeps its scale (and the rate its meaning)."""
        w = self.config.train.foreground_weight
        if not w:
            return err.mean(dim=(1, 2, 3))
        weights = (1 + w * latent_foreground_mask(latents)).to(err)  # (N, 1, h, w)
        return (err * weights).sum(dim=(1, 2, 3)) / (weights.sum(dim=(1, 2, 3)) * err.shape[1])


def known_frame_indices(num_frames: int, k_max: int, sparse: bool, generator: torch.Generator) -> list[int]:
    """The frames a training clip gives clean: the first k (k in [1, k_max]: animate a still, continue a clip);
    with `sparse`, as often each of the patterns sampling asks for: the two ends (in-betweening), every n-th frame
    from a random offset (n in 2..4: frame-rate upsampling), or k frames anywhere. Never every frame."""
    def draw(high: int) -> int:  # uniform in [0, high)
        return int(torch.randint(high, (1,), generator=generator))

    pattern = draw(4) if sparse else 0
    if pattern == 1:
        return [0, num_frames - 1]
    if pattern == 2:
        n = 2 + draw(3)
        return list(range(draw(n), num_frames, n))
    k = 1 + draw(k_max)
    if pattern == 3:
        return sorted(torch.randperm(num_frames, generator=generator)[:k].tolist())
    return list(range(k))


class TemporalStage(Stage):
    """Trains the motion adapter on clips. With probability `frame_conditioning` the first k frames (or, with
    `known_frames: sparse`, keyframes anywhere: `known_frame_indices`) are given clean at t = 0 and left out of
    the loss, so the adapter learns to animate stills, continue clips and fill the frames between keyframes
    (`image_conditioning="clean"` at inference)."""

    part = "motion_adapter"

    def __init__(self, pipe: VideoPipeline, config: Config):
        super().__init__(pipe, config)
        self.motion_adapter = pipe.motion_adapter
        self.video_unet = VideoUNet(self.unet, self.motion_adapter)
        if config.train.gradient_checkpointing:
            self.video_unet.enable_gradient_checkpointing()
        if config.train.reference_mix:  # the teacher: the adapter as it starts, frozen (made before any LoRA wraps it)
            self.reference_unet = VideoUNet(self.unet, copy.deepcopy(self.motion_adapter).requires_grad_(False))

    def use_lora(self, rank: int):
        """Train rank-`rank` LoRA matrices on the temporal attention instead of the whole adapter (peft)."""
        try:
            from peft import LoraConfig, get_peft_model
        except ImportError as err:
            raise VidldmError("train.lora_rank needs peft: pip install peft") from err
        config = LoraConfig(r=rank, lora_alpha=rank, init_lora_weights=True,
                            target_modules=["to_q", "to_k", "to_v", "to_out.0"])
        return get_peft_model(self.motion_adapter, config)

    def on_finish(self, pipe: VideoPipeline, batches) -> str | None:
        if self.config.train.frame_conditioning > 0:  # `image_conditioning="auto"` then picks "clean"
            pipe.motion_adapter.register_to_config(frame_conditioning=True)
            if self.config.train.known_frames == "sparse":  # ... for keyframes at any frames too
                pipe.motion_adapter.register_to_config(sparse_frame_conditioning=True)
        return None

    def correlate(self, noise: torch.Tensor) -> torch.Tensor:
        """`(B, C, F, h, w)` noise with `train.noise_prior` across the frames (PYoCo, `vidldm.noise_prior`)."""
        return correlate(noise, self.config.train.noise_prior, self.config.train.noise_prior_strength)

    def noised(self, batch: dict, generator: torch.Generator):
        """A batch's clean latents `(B, C, F, h, w)`, text, noise, timesteps `(B,)`, noised latents, target and
        which captions were dropped `(B,)`."""
        latents = self.latents(batch, generator)
        drop = self.caption_drops(latents.shape[0], generator)
        context = self.prompt_embeds(batch, generator, drop)
        noise, t = self.noise_and_timesteps(latents, generator)
        noisy = self.noise_scheduler.add_noise(latents, self.input_noise(noise, generator), t)
        return latents, context, noise, t, noisy, self.target(latents, noise, t), drop

    def forward(self, batch: dict, generator: torch.Generator) -> torch.Tensor:
        latents, context, noise, t, noisy, target, drop = self.noised(batch, generator)
        b, f = latents.shape[0], latents.shape[2]
        pure = torch.rand(b, generator=generator) < self.config.train.pure_noise_fraction
        if pure.any():
            t, noisy, target = self.pure_noise(latents, noise, t, noisy, target, pure.to(latents.device))
        frame_t = t[:, None].repeat(1, f)
        loss_mask = torch.ones(b, f, device=latents.device)
        p, k_max = self.config.train.frame_conditioning, self.config.train.max_known_frames
        known = (torch.rand(b, generator=generator) < p).tolist()
        sparse = self.config.train.known_frames == "sparse"
        for i in range(b):
            if known[i]:
                idx = known_frame_indices(f, k_max, sparse, generator)
                noisy[i, :, idx] = latents[i, :, idx]
                frame_t[i, idx] = 0
                loss_mask[i, idx] = 0
        pred = self.video_unet(noisy, frame_t, context)
        loss = self.prediction_loss(pred, target, latents, loss_mask, t)
        mix = self.config.train.reference_mix
        if not mix:
            return loss
        teacher = self.teacher_prediction(batch, generator, drop, noisy, frame_t)
        return (1 - mix) * loss + mix * self.masked_mean(pred.float() - teacher.float(), latents, loss_mask, t)

    @torch.no_grad()
    def teacher_prediction(self, batch: dict, generator: torch.Generator, drop: torch.Tensor, noisy: torch.Tensor,
                           frame_t: torch.Tensor) -> torch.Tensor:
        """`(B, C, F, h, w)`: the adapter as it started, on the same input, reading the reference captions (the
        same ones dropped). Why (`train.reference_mix`): pulling the prediction on a caption in new words toward
        the start's prediction on the words it knows (a reference cache of the same clips) teaches the new words
        without moving what the known ones draw, which the data loss alone does (the shapes model's 3p: new words
        read, old prompts drawn less smoothly); with no reference cache it holds the model near its start."""
        self.reference_unet.eval()
        return self.reference_unet(noisy, frame_t, self.prompt_embeds(batch, generator, drop, reference=True))

    def prediction_loss(self, pred: torch.Tensor, target: torch.Tensor, latents: torch.Tensor, mask: torch.Tensor,
                        t: torch.Tensor, frame_weights: torch.Tensor | None = None) -> torch.Tensor:
        """The loss on `pred` against `target` `(B, C, F, h, w)` over the frames `mask` `(B, F)` keeps, each
        weighted by `frame_weights` `(B, F)` if given, with the flicker term when `train.flicker_weight` asks for it."""
        error = pred.float() - target.float()
        loss = self.masked_mean(error, latents, mask if frame_weights is None else mask * frame_weights, t)
        if self.config.train.flicker_weight:
            loss = loss + self.config.train.flicker_weight * self.flicker(error, latents, mask, t)
        if self.config.train.size_weight:
            loss = loss + self.config.train.size_weight * self.size_drift(error, latents, mask, t)
        return loss

    def masked_mean(self, error: torch.Tensor, latents: torch.Tensor, mask: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Mean squared `error` `(B, C, F, h, w)` over the frames `mask` `(B, F)` keeps, each frame weighted as
        `weighted_mean` does (the object) and each sample by its timestep (`loss_weights`)."""
        b = error.shape[0]
        err = rearrange(error.pow(2), "b c f h w -> (b f) c h w")
        per_frame = rearrange(self.weighted_mean(err, rearrange(latents, "b c f h w -> (b f) c h w")), "(b f) -> b f", b=b)
        per_frame = per_frame * self.loss_weights(t)[:, None]
        return (per_frame * mask).sum() / mask.sum().clamp(min=1)

    def flicker(self, error: torch.Tensor, latents: torch.Tensor, mask: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The loss on how the prediction's `error` `(B, C, F, h, w)` changes from one frame to the next, over the
        pairs of frames that both count (`mask` `(B, F)`).

        Why: a clip whose every frame is off by the same amount looks steady; one whose frames are off in
        different ways jitters, and a plain per-frame loss cannot tell the two apart. Weighting the frame-to-frame
        change of the error puts the adapter's capacity on what a viewer sees as flicker (the object jumping
        along its path, pulsing in size). The target is unchanged: the best prediction under this loss is the
        same posterior mean, so it reshapes the errors rather than the model's aim."""
        pairs = mask[:, 1:] * mask[:, :-1]
        return self.masked_mean(error.diff(dim=2), latents[:, :, 1:], pairs, t)

    def size_drift(self, error: torch.Tensor, latents: torch.Tensor, mask: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The loss on how the object's size in the prediction drifts over the clip: per frame, the `error`
        `(B, C, F, h, w)` projected on the object's colour (its cells' mean offset from the background in
        `latents`) and summed over the object and the ring around it (`latent_foreground_mask`), which says
        how much object the prediction adds or takes away; the loss is its variance over the frames `mask`
        `(B, F)` keeps that show the object.

        Why: sampled clips drift in size along their path (the shapes model: 13% of the area over a moving
        clip, most of the size instability; docs/shapes-model.md), an error that changes slowly from frame to
        frame, so the flicker term, which weighs frame-to-frame changes, hardly sees it. An error that adds the
        same amount of object to every frame (the clip a little too big throughout) is left to the plain loss."""
        b = latents.shape[0]
        offset, core = latent_object(rearrange(latents, "b c f h w -> (b f) c h w"))
        colour = F.normalize((offset * core).sum(dim=(2, 3)), dim=1)[..., None, None]  # (N, C, 1, 1)
        region = F.max_pool2d(core, kernel_size=3, stride=1, padding=1)  # where a size error shows
        along = (rearrange(error.float(), "b c f h w -> (b f) c h w") * colour).sum(dim=1, keepdim=True)
        size = rearrange((along * region).sum(dim=(1, 2, 3)) / region.sum(dim=(1, 2, 3)).clamp(min=1), "(b f) -> b f", b=b)
        counted = mask * rearrange(core.amax(dim=(1, 2, 3)), "(b f) -> b f", b=b)
        n = counted.sum(dim=1).clamp(min=1)
        mean = (size * counted).sum(dim=1, keepdim=True) / n[:, None]
        spread = ((size - mean).pow(2) * counted).sum(dim=1) / n
        return (spread * self.loss_weights(t)).mean()

    def pure_noise(self, latents, noise, t, noisy, target, pure):
        """Samples `pure` `(B,)` move to the last timestep with an input of noise alone, as the sampler's first step
        sees, so only the prompt (or known frames) can say where the clip goes; the target is the one whose
        implied clean clip is `latents`. Why (the last training timestep still shows the clip):
        docs/shapes-model.md#training-notes."""
        last = self.noise_scheduler.config.num_train_timesteps - 1
        a = self.noise_scheduler.alphas_cumprod[last].to(latents)
        eps = (noise - a.sqrt() * latents) / (1 - a).sqrt()
        if self.noise_scheduler.config.prediction_type == "v_prediction":
            pure_target = a.sqrt() * eps - (1 - a).sqrt() * latents
        else:
            pure_target = eps
        where = pure.view(-1, *[1] * (latents.ndim - 1))
        t = torch.where(pure, torch.full_like(t, last), t)
        return t, torch.where(where, noise, noisy), torch.where(where, pure_target, target)


class KeyframeStage(TemporalStage):
    """Trains a keyframe encoder (an RGB SparseCtrl, `vidldm.control.new_keyframe_encoder`) for the frozen UNet and
    motion adapter: every frame is noised, and the encoder is told a few of them (their clean latents and a 0/1
    mask, at the patterns sampling asks for: `known_frame_indices`, sparse) as SparseCtrl is. Its residuals steer
    the clip towards them; the loss is on every frame, the keyframes too, since they are not given to the UNet.

    The encoder is saved as `sparsectrl/` beside the model's parts, where `--keyframe` finds it without
    `--sparsectrl`; the pipeline itself is unchanged (`model.sparsectrl` continues training one)."""

    part = "sparsectrl"

    def __init__(self, pipe: VideoPipeline, config: Config):
        super().__init__(pipe, config)
        from vidldm.control import load_control_model, new_keyframe_encoder

        given = config.model.sparsectrl
        net = (load_control_model(given, "sparsectrl", pipe.unet) if given
               else new_keyframe_encoder(pipe.unet, pipe.motion_adapter))
        self.sparsectrl = net.to(pipe.unet.device)
        if config.train.gradient_checkpointing:
            self.sparsectrl.enable_gradient_checkpointing()

    def use_lora(self, rank: int):
        return Stage.use_lora(self, rank)

    def on_finish(self, pipe: VideoPipeline, batches) -> str | None:
        return None  # the adapter did not change: nothing to record on it

    def forward(self, batch: dict, generator: torch.Generator) -> torch.Tensor:
        from vidldm.control import ControlUnit, _run

        latents, context, _, t, noisy, target, _ = self.noised(batch, generator)
        b, f = latents.shape[0], latents.shape[2]
        cond = torch.zeros_like(latents)
        mask = torch.zeros(b, 1, *latents.shape[2:], device=latents.device, dtype=latents.dtype)
        for i in range(b):
            idx = known_frame_indices(f, self.config.train.max_known_frames, True, generator)
            cond[i, :, idx], mask[i, :, idx] = latents[i, :, idx], 1.0
        frame_t = t[:, None].repeat(1, f)
        unit = ControlUnit(self.sparsectrl, cond, 1.0, 0.0, 1.0, mask)
        down, mid = _run(unit, noisy, frame_t, context, slice(None), guess_mode=False)
        pred = self.video_unet(noisy, frame_t, context, down_block_additional_residuals=down,
                               mid_block_additional_residual=mid)
        # `keyframe_weight`: a clip whose keyframes come out a few pixels off is what a user of keyframes sees first
        told = rearrange(mask, "b 1 f h w -> b f h w")[..., 0, 0]
        weights = 1 + (self.config.train.keyframe_weight - 1) * told
        return self.prediction_loss(pred, target, latents, torch.ones(b, f, device=latents.device), t, weights)


class ImageStage(Stage):
    """Trains the spatial UNet as a text-to-image model on single frames."""

    part = "unet"

    def __init__(self, pipe: VideoPipeline, config: Config):
        super().__init__(pipe, config)
        if config.train.gradient_checkpointing:
            self.unet.enable_gradient_checkpointing()

    def forward(self, batch: dict, generator: torch.Generator) -> torch.Tensor:
        latents = self.latents(batch, generator)
        k = self.config.train.frames_per_clip
        if k and k < latents.shape[2]:  # a few frames from many clips: more captions per step
            pick = torch.stack([torch.randperm(latents.shape[2], generator=generator)[:k] for _ in range(latents.shape[0])])
            latents = torch.stack([clip[:, idx] for clip, idx in zip(latents, pick.to(latents.device))])
        f = latents.shape[2]
        images = rearrange(latents, "b c f h w -> (b f) c h w")
        context = self.prompt_embeds(batch, generator).repeat_interleave(f, dim=0)
        noise, t = self.noise_and_timesteps(images, generator)
        pred = self.unet(self.noise_scheduler.add_noise(images, self.input_noise(noise, generator), t), t, context).sample
        per_image = self.weighted_mean((pred.float() - self.target(images, noise, t).float()).pow(2), images)
        return (per_image * self.loss_weights(t)).mean()


class VaeStage(Stage):
    """Trains the VAE on frames: reconstruction (L1 + MSE) plus a small KL term, from the posterior mean.

    `foreground_weight` and `crop_size` put the loss on small objects on plain backgrounds; `on_finish` sets
    `scaling_factor` to 1 / std of the latents (as Stable Diffusion did); `freeze_encoder` trains the decoder
    alone, so latents and latent caches stay valid. Why and what each measured: docs/shapes-model.md#training-notes.
    """

    part = "vae"
    kl_weight = 1e-6
    centred_crops = 0.9  # the rest are uniform, so the background and borders are still learned

    def freeze_all_but_trainable(self) -> None:
        super().freeze_all_but_trainable()
        if self.config.train.freeze_encoder:
            self.vae.encoder.requires_grad_(False)
            self.vae.quant_conv.requires_grad_(False)

    def forward(self, batch: dict, generator: torch.Generator) -> torch.Tensor:
        frames = rearrange(batch["pixel_values"].to(self.vae.device, self.vae.dtype), "b c f h w -> (b f) c h w")
        mask = foreground_mask(frames)
        if self.config.train.crop_size:
            frames, mask = self.crop(frames, mask, self.config.train.crop_size, generator)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.config.train.freeze_encoder):
            dist = self.vae.encode(frames).latent_dist
        recon = self.vae.decode(dist.mode()).sample
        weight = 1 + self.config.train.foreground_weight * mask
        err = recon.float() - frames.float()
        rec = (err.abs() * weight).mean() + (err.pow(2) * weight).mean()
        return rec + self.kl_weight * dist.kl().mean()

    def crop(self, frames: torch.Tensor, mask: torch.Tensor, size: int, generator: torch.Generator):
        """Square crops of `frames` `(N, C, H, W)` and `mask` `(N, 1, H, W)`, most centred near the foreground."""
        n, _, h, w = frames.shape
        half = size // 2
        centred = (torch.rand(n, generator=generator) < self.centred_crops).tolist()
        jitter = torch.randint(-size // 4, size // 4 + 1, (n, 2), generator=generator).tolist()
        uniform = torch.rand(n, 2, generator=generator).tolist()
        crops, masks = [], []
        for i in range(n):
            ys, xs = torch.nonzero(mask[i, 0] > 0, as_tuple=True)
            if centred[i] and len(ys):
                cy, cx = int(ys.float().mean()) + jitter[i][0], int(xs.float().mean()) + jitter[i][1]
            else:
                cy, cx = half + int(uniform[i][0] * (h - size)), half + int(uniform[i][1] * (w - size))
            top, left = min(max(cy - half, 0), h - size), min(max(cx - half, 0), w - size)
            crops.append(frames[i, :, top : top + size, left : left + size])
            masks.append(mask[i, :, top : top + size, left : left + size])
        return torch.stack(crops), torch.stack(masks)

    @torch.no_grad()
    def on_finish(self, pipe: VideoPipeline, batches) -> str | None:
        """Set `scaling_factor` to 1 / std of the latents, as Stable Diffusion did (unit-variance latents)."""
        if self.config.train.freeze_encoder:
            return None  # the latents did not change; so must not their scale
        latents = [self.vae.encode(rearrange(b["pixel_values"].to(self.vae.device, self.vae.dtype),
                                             "b c f h w -> (b f) c h w")).latent_dist.mode() for b in batches(4)]
        factor = float(1.0 / torch.cat(latents).float().std())
        self.vae.register_to_config(scaling_factor=factor)
        return f"VAE scaling_factor set to {factor:.4f} (1 / std of the latents)"


def foreground_mask(frames: torch.Tensor, threshold: float = 0.1) -> torch.Tensor:
    """`(N, 1, H, W)` 1.0 where a frame `(N, 3, H, W)` in [-1, 1] differs from the median of its border
    pixels by more than `threshold` in some channel: the object, when the background is plain."""
    border = torch.cat([frames[..., 0, :], frames[..., -1, :], frames[..., :, 0], frames[..., :, -1]], dim=-1)
    background = border.median(dim=-1).values[..., None, None]  # (N, 3, 1, 1)
    return ((frames - background).abs().amax(dim=1, keepdim=True) > threshold).to(frames.dtype)


def latent_foreground_mask(latents: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """`(N, 1, h, w)` 1.0 on the cells of latent frames `(N, C, h, w)` (unit-variance, scaled latents) that
    differ from the frame's per-channel median by more than `threshold` in some channel, grown by one
    cell so the object's outline is inside: the object, when the background is plain and covers most
    of the frame. (The median of the whole frame, not of its border: the VAE's latents drift by ~0.2
    at the frame's edges. On the shapes latents 0.5, grown, marks ~20% of the cells: the object and a ring around it.)"""
    _, core = latent_object(latents, threshold)
    return F.max_pool2d(core, kernel_size=3, stride=1, padding=1)


def latent_object(latents: torch.Tensor, threshold: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """Latent frames `(N, C, h, w)` as their offset from each frame's per-channel median (the background) `(N, C, h,
    w)`, and the object's own cells `(N, 1, h, w)`: 1.0 where the offset is above `threshold` in some channel (not
    grown; `latent_foreground_mask` grows it)."""
    background = latents.flatten(2).median(dim=-1).values[..., None, None]  # (N, C, 1, 1)
    offset = latents.float() - background.float()
    return offset, (offset.abs().amax(dim=1, keepdim=True) > threshold).float()


class DecoderStage(Stage):
    """Trains temporal decoder layers (Video LDM) against flicker: reconstruct the clip and its
    frame-to-frame differences from frozen latents. With `train.latent_noise` the latents get noise drawn
    independently per frame (std uniform in [0, latent_noise) per clip): sampled latents jitter from frame to
    frame more than encoded ones (second differences' std 0.19 against 0.11 for the shapes model), and only
    the temporal layers, which see the neighbours, can tell that jitter from the clip. With `train.latent_warp`
    each latent frame is also scaled and shifted on its own (`warp_frames`): sampled clips pulse in size and wobble
    from frame to frame (the shapes model: area std 6% of its mean about its trend, 0.3% in real clips), which
    per-cell noise does not teach the layers to undo."""

    part = "temporal_decoder"
    full_precision = ("vae",)  # the decoder layers run inside the VAE's decoder, in its dtype

    def __init__(self, pipe: VideoPipeline, config: Config):
        super().__init__(pipe, config)
        if pipe.temporal_decoder is None:
            pipe.register_modules(temporal_decoder=TemporalDecoder.from_vae_config(pipe.vae.config).to(pipe.vae.device))
        self.temporal_decoder = pipe.temporal_decoder

    def forward(self, batch: dict, generator: torch.Generator) -> torch.Tensor:
        video = batch["pixel_values"].to(self.vae.device, self.vae.dtype)
        video_vae = VideoVAE(self.vae, chunk_size=None, temporal_decoder=self.temporal_decoder)
        with torch.no_grad():
            latents = video_vae.encode(video, generator=generator, sample=True)
            if self.config.train.latent_noise:
                std = self.config.train.latent_noise * torch.rand(latents.shape[0], generator=generator)
                noise = torch.randn(latents.shape, generator=generator, dtype=torch.float32)
                latents = latents + (std.view(-1, 1, 1, 1, 1) * noise).to(latents.device, latents.dtype)
            if self.config.train.latent_warp:
                latents = warp_frames(latents, self.config.train.latent_warp, generator)
        recon = video_vae.decode(latents).float()
        target = video.float()
        motion = F.mse_loss(recon.diff(dim=2), target.diff(dim=2)) if video.shape[2] > 1 else 0.0
        return F.mse_loss(recon, target) + motion


def warp_frames(latents: torch.Tensor, amount: float, generator: torch.Generator) -> torch.Tensor:
    """Latents `(B, C, F, h, w)` with each frame scaled about the centre by 1 + s and shifted by (dx, dy), each drawn
    uniformly in [-a, a] per frame, where a is drawn uniformly in [0, amount) per clip (shifts as fractions of the
    half-frame, as `affine_grid` measures). Edges are extended (the background), not filled with zeros."""
    b, _, f = latents.shape[:3]
    a = amount * torch.rand(b, 1, 1, generator=generator)
    s, dx, dy = (a * (2 * torch.rand(b, f, 3, generator=generator) - 1)).unbind(-1)
    theta = torch.zeros(b, f, 2, 3)
    theta[..., 0, 0] = theta[..., 1, 1] = 1 / (1 + s)  # the grid samples the source: 1/(1+s) draws the content 1+s times larger
    theta[..., 0, 2], theta[..., 1, 2] = dx, dy
    frames = rearrange(latents, "b c f h w -> (b f) c h w")
    grid = F.affine_grid(rearrange(theta, "b f r k -> (b f) r k").to(frames.device, frames.dtype), list(frames.shape),
                         align_corners=False)
    warped = F.grid_sample(frames, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return rearrange(warped, "(b f) c h w -> b c f h w", b=b)


STAGE_CLASSES = {"temporal": TemporalStage, "image": ImageStage, "vae": VaeStage, "decoder": DecoderStage,
                 "keyframe": KeyframeStage}
