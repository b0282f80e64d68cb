"""The studio's settings form, generated from the one settings table (`vidldm.sampling_settings.SETTINGS`).

A setting appears in a mode's tab when its `commands` name the mode, with the loaded model's own default
(the shapes model's 20 steps, guidance 6, ...), so a new `Setting` shows up here with no web change. What
the form sends back becomes the same `argparse.Namespace` the CLI parses, so the checks, the sidecar and
replay are the CLI's own.
"""

from __future__ import annotations

import argparse
from typing import Any

import gradio as gr

from vidldm import sampling_settings as settings
from vidldm.errors import VidldmError
from vidldm.sampling_settings import Setting

# Settings that belong to the server, not to a clip: the model is loaded once; outputs are never replaced.
_SERVER_GROUPS = ("model", "image prompt", "control")  # IP-Adapter, ControlNet/SparseCtrl: the CLI's and Python's for now


def form_settings(mode: str) -> list[Setting]:
    """The settings a `mode` tab shows, in the table's order (the mode's own first, as in `--help`)."""
    own = [s for s in settings.SETTINGS if mode in s.commands and s.group == "mode"]
    rest = [s for s in settings.SETTINGS if mode in s.commands and s.group not in ("mode", *_SERVER_GROUPS)]
    # left out: the CLI's output switch (--overwrite: the studio never replaces a clip) and the memory settings
    # that shape how the server loaded its model (offload, VAE tiling)
    return [s for s in own + rest if s.recorded and not (s.group == "memory" and not s.to_pipeline)]


def model_defaults(pipe) -> dict[str, Any]:
    """What the loaded model uses for each setting left out: its own sampling defaults, its size and length."""
    side = pipe.unet.config.sample_size * pipe.vae_scale_factor
    own = {"num_frames": pipe.default_num_frames, "height": side, "width": side}
    return {**{s.name: s.default for s in settings.SETTINGS}, **own, **pipe.sampling_defaults()}


def component(setting: Setting, default: Any, mode: str) -> gr.components.Component:
    """One input for `setting` in `mode`'s tab (element id `<mode>-<key>`), labelled with its CLI flag and help;
    blank number fields mean 'the default'."""
    kw = dict(label=setting.flag.lstrip("-"), info=setting.help, elem_id=f"{mode}-{setting.key}", min_width=220)
    if setting.negatable:  # three states: the model's default, on, off
        return gr.Dropdown(choices=["default", "on", "off"], value="default", **kw)
    choices = _choices(setting)
    if choices is not None and default is None:  # a choice the model or the call resolves (FreeNoise's blend, ...)
        return gr.Dropdown(choices=["default", *choices], value="default", **kw)
    if choices is not None:
        return gr.Dropdown(choices=list(choices), value=default, **kw)
    if setting.type is bool:
        return gr.Checkbox(value=bool(default), **kw)
    if setting.type is str:
        return gr.Textbox(value=default or "", **kw)
    fraction = setting.type is float and setting.low is not None and setting.high is not None and setting.high - setting.low <= 1
    if fraction and default is not None:  # a slider cannot be blank: settings without a default get a text field
        return gr.Slider(setting.low, setting.high, value=default, step=0.01, **kw)
    if default is None:  # a blank field means "the default" (gradio's number field would send 0 for blank)
        hint = "blank: a new random seed" if setting.name == "seed" else "blank: the default"
        return gr.Textbox(value="", placeholder=hint, **kw)
    return gr.Number(value=default, precision=0 if setting.type is int else None, **kw)


def _choices(setting: Setting) -> tuple[str, ...] | None:
    if setting.choices is not None:
        return setting.choices
    if setting.name == "scheduler":  # checked by a function, not a tuple: its names live with the schedulers
        from vidldm.schedulers import SCHEDULERS

        return tuple(SCHEDULERS)
    return None


def to_namespace(mode: str, prompt: str, values: list[Any], server: dict[str, Any]) -> argparse.Namespace:
    """The form's values as the CLI's namespace for `mode` (blank -> None, whole numbers -> int), checked in
    range with the table's messages; `server` adds the model settings the sidecar records."""
    args = argparse.Namespace(command=mode, prompt=prompt, **server)
    for setting, value in zip(form_settings(mode), values, strict=True):
        value = _typed(setting, value)
        setattr(args, setting.key, setting.default if value is None else value)  # blank: argparse's default
    settings.check_args(args)
    return args


def _typed(setting: Setting, value: Any) -> Any:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if setting.negatable:
        return {"on": True, "off": False}.get(value)
    if value == "default" and _choices(setting) is not None and "default" not in _choices(setting):
        return None
    if setting.type in (int, float) and isinstance(value, str):  # a number typed in a text field
        try:
            value = float(value.strip())
        except ValueError:
            raise VidldmError(f"{setting.flag.lstrip('-')} must be a number, got '{value.strip()}'") from None
    if setting.type is int and isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def from_sidecar(mode: str, saved: dict[str, Any]) -> list[Any]:
    """A sidecar's recorded values in the order of `mode`'s form (what 'replay' fills in)."""
    values = [saved.get(s.key) for s in form_settings(mode)]
    return [{True: "on", False: "off"}.get(v, "default") if s.negatable
            else "default" if v is None and _choices(s) is not None else v
            for s, v in zip(form_settings(mode), values, strict=True)]
