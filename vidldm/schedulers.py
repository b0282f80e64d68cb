"""Scheduler names users can pass (`--scheduler`), all diffusers schedulers built from one config.

Three kinds of name, case-insensitive:
- vidldm's own short names (`ddim`, `euler`, `euler_a`, `dpm++`, `unipc`, `lcm`);
- the sampler names of A1111 and ComfyUI (`dpmpp_2m_karras`, `euler_ancestral`, `dpm_2`, ...), mapped as
  diffusers' docs map them ("A1111/k-diffusion equivalents"); `_karras` adds Karras sigmas;
- any diffusers scheduler class that runs a Stable Diffusion model (`DPMSolverMultistepScheduler`, ...).
"""

from __future__ import annotations

import difflib
import importlib.util
from collections.abc import Mapping

from vidldm.errors import VidldmError

# AnimateDiff's sampling schedule: DDIM over linear betas 0.00085-0.012.
ANIMATEDIFF_DDIM = dict(
    num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="linear",
    clip_sample=False, set_alpha_to_one=False, steps_offset=1, timestep_spacing="linspace",
)

_KARRAS = {"use_karras_sigmas": True}
_SDE = {"algorithm_type": "sde-dpmsolver++"}

# name -> (diffusers class name, keywords laid over the model's scheduler config). Names without a diffusers
# scheduler (A1111's "DPM++ 2S a", "DPM fast", "DPM adaptive") are not listed rather than approximated.
SCHEDULERS: dict[str, tuple[str, dict]] = {
    # vidldm's own names
    "ddim": ("DDIMScheduler", {}),
    "euler": ("EulerDiscreteScheduler", {}),
    "euler_a": ("EulerAncestralDiscreteScheduler", {}),
    "dpm++": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++"}),
    "unipc": ("UniPCMultistepScheduler", {}),
    "lcm": ("LCMScheduler", {}),
    # A1111 / ComfyUI sampler names
    "euler_karras": ("EulerDiscreteScheduler", _KARRAS),
    "euler_ancestral": ("EulerAncestralDiscreteScheduler", {}),
    "dpmpp_2m": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++"}),
    "dpmpp_2m_karras": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", **_KARRAS}),
    "dpmpp_2m_sde": ("DPMSolverMultistepScheduler", _SDE),
    "dpmpp_2m_sde_karras": ("DPMSolverMultistepScheduler", {**_SDE, **_KARRAS}),
    "dpmpp_sde": ("DPMSolverSinglestepScheduler", {}),
    "dpmpp_sde_karras": ("DPMSolverSinglestepScheduler", _KARRAS),
    "dpm2": ("KDPM2DiscreteScheduler", {}),
    "dpm2_karras": ("KDPM2DiscreteScheduler", _KARRAS),
    "dpm2_a": ("KDPM2AncestralDiscreteScheduler", {}),
    "dpm2_a_karras": ("KDPM2AncestralDiscreteScheduler", _KARRAS),
    "dpm_2": ("KDPM2DiscreteScheduler", {}),
    "dpm_2_ancestral": ("KDPM2AncestralDiscreteScheduler", {}),
    "heun": ("HeunDiscreteScheduler", {}),
    "heun_karras": ("HeunDiscreteScheduler", _KARRAS),
    "lms": ("LMSDiscreteScheduler", {}),
    "lms_karras": ("LMSDiscreteScheduler", _KARRAS),
    "plms": ("PNDMScheduler", {"skip_prk_steps": True}),
    "ddpm": ("DDPMScheduler", {}),
    "deis": ("DEISMultistepScheduler", {}),
    "uni_pc": ("UniPCMultistepScheduler", {}),
    "tcd": ("TCDScheduler", {}),
}

# diffusers classes that run an epsilon/v-prediction SD model from its DDPM betas (DDIMScheduler's `_compatibles`,
# without EDMEulerScheduler, which expects an EDM-trained model, and with the distilled-model samplers).
CLASS_NAMES = (
    "DDIMScheduler", "DDPMScheduler", "PNDMScheduler", "LMSDiscreteScheduler", "EulerDiscreteScheduler",
    "HeunDiscreteScheduler", "EulerAncestralDiscreteScheduler", "DPMSolverMultistepScheduler",
    "DPMSolverSinglestepScheduler", "KDPM2DiscreteScheduler", "KDPM2AncestralDiscreteScheduler",
    "DEISMultistepScheduler", "UniPCMultistepScheduler", "DPMSolverSDEScheduler", "LCMScheduler", "TCDScheduler",
)
# PNDM skips its Runge-Kutta warm-up as in Stable Diffusion's own scheduler config (with it, under 4 steps fail).
_BY_CLASS = {c.lower(): (c, {"skip_prk_steps": True} if c == "PNDMScheduler" else {}) for c in CLASS_NAMES}
# A package a scheduler needs beyond diffusers (checked with the name, before any model loads).
_NEEDS = {"DPMSolverSDEScheduler": "torchsde"}


def default_scheduler(**overrides):
    from diffusers import DDIMScheduler

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


def scheduler_names() -> list[str]:
    """Every name `--scheduler` takes: the short and A1111/ComfyUI names, then the diffusers class names."""
    return [*SCHEDULERS, *CLASS_NAMES]


def check_scheduler_name(name: str) -> str:
    """The lower-cased key for `name`; a `VidldmError` with the close matches (or all choices) for anything else."""
    if not isinstance(name, str):
        raise VidldmError(f"scheduler must be a name, got {name!r}")
    key = name.strip().lower()
    found = SCHEDULERS.get(key) or _BY_CLASS.get(key)
    if found is None:
        close = difflib.get_close_matches(key, [n.lower() for n in scheduler_names()], n=3, cutoff=0.6)
        hint = f"did you mean {', '.join(close)}?" if close else f"choose one of: {', '.join(SCHEDULERS)}"
        raise VidldmError(f"unknown scheduler '{name}'; {hint} (all names: vidldm info --schedulers)")
    package = _NEEDS.get(found[0])
    if package and importlib.util.find_spec(package) is None:
        raise VidldmError(f"scheduler '{name}' needs the {package} package: pip install {package}")
    return key


def make_scheduler(name: str, config) -> object:
    """The scheduler `name` sharing the betas/prediction type of `config` (a diffusers scheduler config)."""
    import diffusers

    key = check_scheduler_name(name)
    class_name, extra = SCHEDULERS.get(key) or _BY_CLASS[key]
    return getattr(diffusers, class_name).from_config(config, **extra)


def describe(name: str) -> str:
    """`name` as one line: the diffusers class and the keywords it is built with."""
    key = check_scheduler_name(name)
    class_name, extra = SCHEDULERS.get(key) or _BY_CLASS[key]
    kwargs = ", ".join(f"{k}={v!r}" for k, v in extra.items())
    return f"{name:<22} {class_name}({kwargs})"
