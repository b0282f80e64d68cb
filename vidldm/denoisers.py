"""Denoiser wrappers: what the pipeline hands to the one loop in `sampling.py`.

A denoiser is `f(x (B, C, f, h, w), t (B, f), frames: slice, step: int) -> prediction (B, C, f, h, w)`,
as in k-diffusion, where a model is wrapped for classifier-free guidance rather than the loop being
taught about it. New conditionings (control residuals, image tokens) are wrappers here; the loop
stays one loop.
"""

from __future__ import annotations

import torch


class GuidedDenoiser:
    """A video model under classifier-free guidance, with its temporal layers on for the first steps.

    `context`: text embeddings `(2B, L, D)` (unconditional half first) or per frame `(2B, F, L, D)`;
    without guidance (`guidance_scale <= 1`) only the conditional `(B, ...)`. `temporal_steps`: the
    number of loop steps that run the temporal layers (`temporal_end` of the steps, see
    `temporal_steps`); later steps refine each frame with the image model alone. `added_cond` (SDXL): the
    UNet's `added_cond_kwargs` in the batch order of `context`, a tensor with a frame axis (`(2B, F, P)`) sliced
    to the window as the context is; IP-Adapter image prompts ride there too, as diffusers passes them:
    `image_embeds`, one `(2B, F, N, ...)` per adapter, always sliced to the window. `control` (ControlNet, SparseCtrl;
    `vidldm.control.ControlResiduals`): `control(x, t, context, frames, step, guided)` -> the UNet's residual keywords
    for this call's batch (both halves under guidance; it decides what each half gets), or {}."""

    def __init__(self, model, context: torch.Tensor, guidance_scale: float, guidance_rescale: float = 0.0,
                 temporal_steps: int | None = None, added_cond: dict[str, torch.Tensor] | None = None, control=None):
        self.model, self.context = model, context
        self.guidance_scale, self.guidance_rescale = guidance_scale, guidance_rescale
        self.temporal_steps = temporal_steps
        self.added_cond = added_cond
        self.control = control

    @property
    def guided(self) -> bool:
        return self.guidance_scale > 1.0

    def __call__(self, x: torch.Tensor, t: torch.Tensor, frames: slice, step: int) -> torch.Tensor:
        context = self.context[:, frames] if self.context.ndim == 4 else self.context
        kwargs = {"temporal": self.temporal_steps is None or step < self.temporal_steps}
        if self.added_cond is not None:
            kwargs["added_cond_kwargs"] = {k: _window(k, v, frames) for k, v in self.added_cond.items()}
        if self.guided:  # both halves in one model call: one pass over the weights instead of two
            x, t = torch.cat([x, x]), torch.cat([t, t])
        if self.control is not None:
            kwargs.update(self.control(x, t, context, frames, step, self.guided))
        if not self.guided:
            return self.model(x, t, context, **kwargs)
        uncond, cond = self.model(x, t, context, **kwargs).chunk(2)
        guided = uncond + self.guidance_scale * (cond - uncond)
        return rescale_guidance(guided, cond, self.guidance_rescale) if self.guidance_rescale else guided


def _window(name: str, value, frames):
    """An `added_cond_kwargs` value for the window's `frames`: those with a frame axis are sliced."""
    if name == "image_embeds":
        return [e[:, frames] for e in value]
    return value[:, frames] if name == "text_embeds" and value.ndim == 3 else value


def temporal_steps(temporal_end: float, num_steps: int) -> int:
    """Step i runs the temporal layers while (i + 1) / num_steps <= temporal_end."""
    return int(temporal_end * num_steps + 1e-6)


def rescale_guidance(guided: torch.Tensor, cond: torch.Tensor, rescale: float) -> torch.Tensor:
    """Lin et al. 2023 (3.4), as diffusers' `guidance_rescale`: bring the guided prediction `(B, ...)` back to
    the spread of the conditional one, per sample, by the fraction `rescale`. Strong guidance on a
    zero-terminal-SNR schedule otherwise over-saturates: there the model's output at the first steps
    is the clip itself, and guidance scales it up."""
    dims = tuple(range(1, guided.ndim))
    rescaled = guided * (cond.std(dim=dims, keepdim=True) / guided.std(dim=dims, keepdim=True))
    return rescale * rescaled + (1 - rescale) * guided
