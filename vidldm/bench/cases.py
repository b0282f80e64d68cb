"""The cases one process measures on its own: a long clip, and a training step of vidldm's `temporal` stage.

`run.py` calls them in-process on CUDA and `isolated.py` runs each in a child process on the CPU
(so resident-memory growth is the case's own); they import only options, components and timing.

The training case imports `vidldm.train` (the `TemporalStage`, its `Config`, the trainer's optimizer):
a sibling import in the layers (`train`/`eval`/`bench`/`web` all sit on `loading`), acceptable
because `vidldm.train` never imports `vidldm.bench`, so the two cannot form a circle.
"""

from __future__ import annotations

import torch

from vidldm.bench.components import Components, build_components, prompt_embeddings, vidldm_pipeline
from vidldm.bench.options import DTYPES, Options
from vidldm.bench.timing import PeakMemory, free_memory, median, timed
from vidldm.train.config import Config, DataConfig, TrainConfig
from vidldm.train.stages import TemporalStage
from vidldm.train.trainer import make_optimizer

# ----------------------------------------------------------------------------- long clips


def long_case(o: Options, frames: int, c: Components | None = None, pipe=None, measure: bool = True) -> dict:
    """One clip of `frames` frames (context windows of `context_frames` beyond that)."""
    c = c or build_components(o.model, o.seed)
    dtype = DTYPES[o.dtypes[0]]
    pipe = pipe or vidldm_pipeline(c, o.device, dtype)
    cond, uncond = (e.to(o.device, dtype) for e in prompt_embeddings(c))

    def make():
        with torch.no_grad():
            pipe(prompt_embeds=cond, negative_prompt_embeds=uncond, num_frames=frames, height=o.height, width=o.width,
                 num_inference_steps=o.steps, guidance_scale=o.guidance, **windows,
                 generator=torch.Generator().manual_seed(o.seed), output_type="np")

    # a clip that fits in one window is run whole (a window longer than the clip is refused)
    windows = dict(context_frames=o.context_frames, context_overlap=o.context_overlap) if frames > o.context_frames else {}

    if not measure:
        make()
        return {}
    with PeakMemory(o.device) as memory:
        seconds = timed(make, o.device, 1)[0]
    return dict(frames=frames, s_per_clip=seconds, peak_memory_bytes=memory.peak_bytes, growth_bytes=memory.growth_bytes,
                windows=_window_count(frames, o.context_frames, o.context_overlap))


def _window_count(frames: int, window: int, overlap: int) -> int:
    from vidldm.sampling import context_windows

    return len(context_windows(frames, window, window - overlap))


# ----------------------------------------------------------------------------- training step


def train_case(o: Options, checkpointing: bool, c: Components | None = None) -> dict:
    """Seconds and memory of vidldm's own `temporal` training step (see `train_step`) at `o`'s training size.

    The batch is the largest power of two that fits on CUDA unless `train_batch` says; 1 on the CPU.
    """
    c = c or build_components(o.model, o.seed)
    device, dtype = torch.device(o.device), DTYPES[o.dtypes[0]]
    stage, optimizer = temporal_stage(c, o, checkpointing)
    embeds = prompt_embeddings(c)[0]  # text encoding happens here, outside every timer
    g = torch.Generator().manual_seed(o.seed)
    batches: dict[int, dict] = {}

    def step(size: int) -> torch.Tensor:
        if size not in batches:  # made once per size, outside the timer: the step is measured, not data loading
            batches.clear()
            batches[size] = latent_batch(c, o, embeds, size, g)
        return train_step(stage, optimizer, batches[size], g, dtype)

    batch = o.train_batch or (largest_batch(step, o.train_max_batch, device) if device.type == "cuda" else 1)
    step(batch)  # warm-up (and the optimizer's state)
    with PeakMemory(device) as memory:
        seconds = timed(lambda: step(batch), device, o.repeats)
    s_per_step = median(seconds)
    return dict(gradient_checkpointing=checkpointing, batch=batch, frames=o.train_frames,
                height=o.train_height, width=o.train_width, dtype=o.dtypes[0], s_per_step=s_per_step,
                clips_per_s=batch / s_per_step, peak_memory_bytes=memory.peak_bytes, growth_bytes=memory.growth_bytes)


def temporal_stage(c: Components, o: Options, checkpointing: bool) -> tuple[TemporalStage, torch.optim.Optimizer]:
    """vidldm's `TemporalStage` on a copy of `c`, frozen but for the motion adapter, and the trainer's AdamW.

    Frozen parts in `dtypes[0]` and the adapter in fp32, as `train.mixed_precision` leaves them.
    """
    pipe = vidldm_pipeline(c, o.device, DTYPES[o.dtypes[0]], text_encoder=True, adapter_dtype=torch.float32)
    # No caption dropout: on a latent cache it runs the text encoder for the dropped rows, inside the
    # timer. No known frames: the UNet sees every frame either way, so the step costs the same; the
    # stage draws k even so, and `config.check` (which needs a data folder) is what would set its bound.
    train = TrainConfig(gradient_checkpointing=checkpointing, caption_dropout=0.0, frame_conditioning=0.0,
                        max_known_frames=1, seed=o.seed)
    data = DataConfig(num_frames=o.train_frames, height=o.train_height, width=o.train_width)
    stage = TemporalStage(pipe, Config(stage="temporal", data=data, train=train))
    stage.freeze_all_but_trainable()
    return stage, make_optimizer([p for p in stage.parameters() if p.requires_grad], train)


def latent_batch(c: Components, o: Options, embeds: torch.Tensor, size: int, g: torch.Generator) -> dict:
    """A batch as a latent cache gives it, on the CPU: `latents` `(B, C, F, h, w)`, `prompt_embeds` `(B, L, D)`."""
    s = c.vae_scale_factor
    shape = (size, c.latent_channels, o.train_frames, o.train_height // s, o.train_width // s)
    return {"latents": torch.randn(shape, generator=g), "prompt_embeds": embeds.expand(size, -1, -1).contiguous()}


def train_step(stage: TemporalStage, optimizer: torch.optim.Optimizer, batch: dict, g: torch.Generator,
               dtype: torch.dtype) -> torch.Tensor:
    """The trainer's step on one batch: the stage's loss under autocast, backward, gradient clipping, AdamW."""
    device = next(stage.motion_adapter.parameters()).device
    try:
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            loss = stage(batch, g)
        loss.backward()
        max_norm = stage.config.train.max_grad_norm
        if max_norm:
            torch.nn.utils.clip_grad_norm_([p for group in optimizer.param_groups for p in group["params"]], max_norm)
        optimizer.step()
    finally:  # also after running out of memory (`largest_batch`): no stale gradients in the next step's memory
        optimizer.zero_grad(set_to_none=True)
    return loss.detach()


def largest_batch(step, cap: int, device) -> int:
    """The largest power of two up to `cap` for which `step(batch)` runs without running out of memory."""
    best, batch = 0, 1
    while batch <= cap:
        try:
            step(batch)
        except torch.OutOfMemoryError:
            break
        finally:
            free_memory(device)
        best, batch = batch, batch * 2
    if best == 0:
        raise ValueError("even a batch of 1 does not fit in memory; lower --train-frames or the training size")
    return best
