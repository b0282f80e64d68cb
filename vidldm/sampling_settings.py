"""The sampling settings a model may carry as its own defaults (`VideoPipeline.generation_defaults`).

A small model tuned for 20 steps and guidance 6 should not be sampled with diffusers' 25 and 7.5
because a user left a flag out, so a pipeline folder records the settings its weights were tuned
for, and a fine-tune inherits its base model's. No torch here: training recipes check these keys
before any model is loaded.
"""

from __future__ import annotations

from vidldm.errors import VidldmError

# What a call uses for a setting it leaves out when the model has no default of its own (diffusers' values).
SAMPLING_DEFAULTS = {"num_inference_steps": 25, "guidance_scale": 7.5, "guidance_rescale": 0.0, "temporal_end": 1.0}


def check_generation_defaults(settings: dict) -> dict[str, float]:
    """The model's sampling defaults, checked: known keys, steps a positive integer, guidance >= 0, the rest in [0, 1]."""
    if not isinstance(settings, dict):
        raise VidldmError(f"generation defaults must be a mapping of {', '.join(SAMPLING_DEFAULTS)}, got {settings!r}")
    unknown = sorted(set(settings) - set(SAMPLING_DEFAULTS))
    if unknown:
        raise VidldmError(f"unknown sampling setting {', '.join(repr(k) for k in unknown)}; choose from {', '.join(SAMPLING_DEFAULTS)}")
    out = {}
    for key, value in settings.items():
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise VidldmError(f"sampling setting {key} must be a number, got {value!r}")
        if key == "num_inference_steps" and (value != int(value) or value < 1):
            raise VidldmError(f"num_inference_steps must be a positive whole number, got {value}")
        if key == "guidance_scale" and value < 0:
            raise VidldmError(f"guidance_scale must be 0 or more, got {value}")
        if key in ("guidance_rescale", "temporal_end") and not 0.0 <= value <= 1.0:
            raise VidldmError(f"{key} must be between 0 and 1, got {value}")
        out[key] = int(value) if key == "num_inference_steps" else float(value)
    return out
