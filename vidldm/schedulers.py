"""Scheduler names users can pass (`--scheduler`), all diffusers schedulers built from one config."""

from __future__ import annotations

from collections.abc import Mapping

from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    LCMScheduler,
    UniPCMultistepScheduler,
)

from vidldm.errors import VidldmError

# AnimateDiff's sampling schedule: DDIM over linear betas 0.00085-0.012.
ANIMATEDIFF_DDIM = dict(
    num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="linear",
    clip_sample=False, set_alpha_to_one=False, steps_offset=1, timestep_spacing="linspace",
)

SCHEDULERS = {
    "ddim": (DDIMScheduler, {}),
    "euler": (EulerDiscreteScheduler, {}),
    "euler_a": (EulerAncestralDiscreteScheduler, {}),
    "dpm++": (DPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver++"}),
    "unipc": (UniPCMultistepScheduler, {}),
    "lcm": (LCMScheduler, {}),
}


def default_scheduler(**overrides) -> DDIMScheduler:
    return DDIMScheduler(**{**ANIMATEDIFF_DDIM, **overrides})


def base_model_schedule(config: Mapping) -> dict:
    """What a base model's own scheduler config must carry over into AnimateDiff's DDIM schedule.

    The prediction type always; a zero-terminal-SNR model (SD 2.x finetunes trained that way) also
    keeps `rescale_betas_zero_snr` and its timestep spacing, without which it samples from a noise
    level it never saw. Other keys (betas, a PNDM "leading" spacing) stay AnimateDiff's.
    """
    schedule = {"prediction_type": config.get("prediction_type") or "epsilon"}
    if config.get("rescale_betas_zero_snr"):
        schedule["rescale_betas_zero_snr"] = True
        schedule["timestep_spacing"] = config.get("timestep_spacing") or "trailing"
    return schedule


def check_scheduler_name(name: str) -> str:
    """The `SCHEDULERS` key for `name`; a `VidldmError` listing the choices for anything else."""
    key = name.lower()
    if key not in SCHEDULERS:
        raise VidldmError(f"unknown scheduler '{name}'; choose one of: {', '.join(SCHEDULERS)}")
    return key


def make_scheduler(name: str, config) -> object:
    """The scheduler `name` (see `SCHEDULERS`) sharing the betas/prediction type of `config`."""
    cls, extra = SCHEDULERS[check_scheduler_name(name)]
    return cls.from_config(config, **extra)
