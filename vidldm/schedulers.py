"""Scheduler names users can pass (`--scheduler`), all diffusers schedulers built from one config."""

from __future__ import annotations

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
