"""Scheduler names users can pass (`--scheduler`), all diffusers schedulers built from one config."""

from __future__ import annotations

from vidldm.errors import VidldmError

# AnimateDiff's sampling schedule: DDIM over linear betas 0.00085-0.012.
ANIMATEDIFF_DDIM = dict(
    num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="linear",
    clip_sample=False, set_alpha_to_one=False, steps_offset=1, timestep_spacing="linspace",
)

# name -> (diffusers class name, extra config). Classes are imported when used: importing them all
# pulls scipy.stats in (Euler's and DPM's optional beta sigmas), about 1 s of every CLI start.
SCHEDULERS = {
    "ddim": ("DDIMScheduler", {}),
    "euler": ("EulerDiscreteScheduler", {}),
    "euler_a": ("EulerAncestralDiscreteScheduler", {}),
    "dpm++": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++"}),
    "unipc": ("UniPCMultistepScheduler", {}),
    "lcm": ("LCMScheduler", {}),
}


def _scheduler_class(class_name: str):
    import importlib

    module = {"DDIMScheduler": "scheduling_ddim", "EulerDiscreteScheduler": "scheduling_euler_discrete",
              "EulerAncestralDiscreteScheduler": "scheduling_euler_ancestral_discrete",
              "DPMSolverMultistepScheduler": "scheduling_dpmsolver_multistep",
              "UniPCMultistepScheduler": "scheduling_unipc_multistep", "LCMScheduler": "scheduling_lcm"}[class_name]
    return getattr(importlib.import_module(f"diffusers.schedulers.{module}"), class_name)


def default_scheduler(**overrides):
    """diffusers' `DDIMScheduler` with AnimateDiff's betas (and any config `overrides`)."""
    return _scheduler_class("DDIMScheduler")(**{**ANIMATEDIFF_DDIM, **overrides})


def check_scheduler_name(name: str) -> str:
    """The `SCHEDULERS` key for `name`; a `VidldmError` listing the choices for anything else."""
    key = name.lower()
    if key not in SCHEDULERS:
        raise VidldmError(f"unknown scheduler '{name}'; choose one of: {', '.join(SCHEDULERS)}")
    return key


def make_scheduler(name: str, config) -> object:
    """The scheduler `name` (see `SCHEDULERS`) sharing the betas/prediction type of `config`."""
    class_name, extra = SCHEDULERS[check_scheduler_name(name)]
    return _scheduler_class(class_name).from_config(config, **extra)
