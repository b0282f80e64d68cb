"""Making one clip from a mode's settings, and the JSON sidecar beside it: shared by the CLI and the web studio.

`args` is the `argparse.Namespace` the CLI parses (one attribute per `Setting.key` of the mode, plus
`command`, `prompt`, `image`/`video`); the web studio builds the same namespace from its form, so both
check, record and replay a clip the same way. No torch at import: the CLI's start-up stays light.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vidldm import __version__, prompt_travel
from vidldm import sampling_settings as settings
from vidldm.errors import VidldmError

INPUT_KEYS = ("image", "video")


def resolve_sampling(pipe, args: argparse.Namespace) -> None:
    """Fill the sampling settings left out with the model's own defaults (saved with it, e.g. the shapes model's),
    else diffusers' (25 steps, guidance 7.5), so the sidecar records what was used."""
    given = {name: getattr(args, settings.BY_NAME[name].key, None) for name in settings.SAMPLING_DEFAULTS}
    for name, value in pipe.sampling_defaults(**given).items():
        setattr(args, settings.BY_NAME[name].key, value)


def check_memory(pipe, args: argparse.Namespace, device: str) -> None:
    """Refuse in one line, before sampling, a clip that needs more memory than is free (vidldm.memory)."""
    from vidldm.io import probe_video
    from vidldm.memory import check_fits

    frames = args.frames
    if frames is None and args.command == "restyle":
        frames = probe_video(args.video)["frames"]  # restyle keeps the input's length
    frames = frames or min(16, pipe.max_seq_length)
    side = pipe.unet.config.sample_size * pipe.vae_scale_factor
    check_fits(pipe, frames, args.height or side, args.width or side, guidance=args.guidance, device=device)


def make_clip(pipe, args: argparse.Namespace, output: Path, device: str,
              on_step: Callable[[int, int], None] | None = None):
    """Sample the clip `args` asks for with `pipe`, write it to `output` and its sidecar beside it (both atomic);
    returns the frames `(F, H, W, 3)` float in [0, 1]. `on_step(done, total)` follows the sampling loop."""
    import torch

    from vidldm.io import write_clip

    prompt = prompt_travel.parse_prompt(args.prompt, args.frames)
    resolve_sampling(pipe, args)
    check_memory(pipe, args, device)
    inputs = {k: getattr(args, k, None) for k in INPUT_KEYS}
    frames = pipe(prompt, **settings.pipeline_kwargs(args), **inputs, extend=args.command == "extend", output_type="np",
                  generator=torch.Generator(device="cpu").manual_seed(args.seed),
                  callback_on_step_end=_step_callback(on_step)).frames[0]
    write_clip(frames, output, args.fps)
    write_sidecar(output, {"command": args.command, "prompt": args.prompt, **inputs_recorded(args), **settings.recorded(args)})
    return frames


def _step_callback(on_step: Callable[[int, int], None] | None):
    """diffusers' `callback_on_step_end` reporting (steps done, steps in all) to `on_step`."""
    if on_step is None:
        return None

    def callback(pipe, i, t, tensors):
        on_step(i + 1, pipe.num_timesteps)
        return {}  # nothing replaced

    return callback


def inputs_recorded(args: argparse.Namespace) -> dict[str, str]:
    """The input files, resolved: a replay from another folder finds them."""
    return {k: str(Path(getattr(args, k)).resolve()) for k in INPUT_KEYS if getattr(args, k, None) is not None}


def sidecar_path(output: Path) -> Path:
    return output.with_suffix(".json") if output.suffix else output.parent / f"{output.name}.json"


def write_sidecar(output: Path, recorded: dict[str, Any]) -> None:
    from vidldm import atomic

    # allow_nan=False: a sidecar is JSON other tools read, and NaN/Infinity are not JSON
    text = json.dumps({"vidldm": __version__, **recorded, "output": str(output)}, indent=2, allow_nan=False)
    atomic.write_text(sidecar_path(output), text + "\n")


def read_sidecar(path: Path) -> dict[str, Any]:
    """A sidecar's settings, checked: JSON with a known 'command' and a 'prompt'; a one-line VidldmError otherwise."""
    if not path.exists():
        raise VidldmError(f"sidecar '{path}' does not exist")
    try:
        saved = json.loads(path.read_text())
        command, _ = saved["command"], saved["prompt"]
    except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError) as err:
        raise VidldmError(f"'{path}' is not a vidldm sidecar (JSON with a 'command')") from err
    if command not in settings.MODES:
        raise VidldmError(f"'{path}' records an unknown command '{command}'")
    return saved


def prompt_text(prompt: Any) -> str:
    """A recorded prompt as the text a user types (animatediff-cli's {frame: prompt} becomes prompt travel)."""
    if isinstance(prompt, dict):
        return " | ".join(f"{k}:{v}" for k, v in prompt.items())
    return str(prompt)
