"""Benchmark options: the settings' names, each one's defaults, and the checks on what a user overrides.

Their own module so that `run.py` (the settings' runners) and `isolated.py` (one case in a child
process, which rebuilds `Options` from JSON) both import them without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
SETTINGS = ("sd15", "tiny-cpu", "long", "train")


@dataclass
class Options:
    """Everything a setting reads; `defaults(setting)` fills in each setting's own values."""

    device: str = "cpu"
    model: str = "tiny"
    height: int = 32
    width: int = 32
    frames: int = 16
    steps: int = 25
    guidance: float = 7.5
    dtypes: tuple[str, ...] = ("fp32",)
    repeats: int = 2
    unet_calls: int = 3  # UNet calls timed for the per-step figure
    compile: bool = False
    compile_mode: str | None = None
    compile_dynamic: bool | None = None
    cudnn_benchmark: bool = False
    verify: bool = True  # fp32 reference run and cosine similarities
    long_frames: int = 128
    context_frames: int = 16
    context_overlap: int = 4
    train_frames: int = 16
    train_height: int = 256
    train_width: int = 256
    train_batch: int | None = None  # None: the largest power of two that fits (CUDA), 1 on CPU
    train_max_batch: int = 64
    threads: int | None = None
    seed: int = 0

    def check(self) -> Options:
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"device '{self.device}' asked for but CUDA is not available; use --device cpu")
        if self.model not in ("sd15", "tiny"):
            raise ValueError(f"unknown model '{self.model}'; choose sd15 or tiny")
        bad = [d for d in self.dtypes if d not in DTYPES]
        if bad or not self.dtypes:
            raise ValueError(f"unknown dtype {bad[0] if bad else '(none)'}; choose from: {', '.join(DTYPES)}")
        for name in ("height", "width", "frames", "steps", "repeats", "unet_calls", "long_frames", "context_frames",
                     "train_frames", "train_height", "train_width", "train_max_batch"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not 0 <= self.context_overlap < self.context_frames:
            raise ValueError(f"context_overlap must be between 0 and {self.context_frames - 1}")
        if self.train_batch is not None and self.train_batch < 1:
            raise ValueError(f"train_batch must be at least 1, got {self.train_batch}")
        return self

    @property
    def compile_options(self) -> dict:
        options = {"mode": self.compile_mode, "dynamic": self.compile_dynamic}
        return {k: v for k, v in options.items() if v is not None}


def defaults(setting: str, **overrides) -> Options:
    """The options of `setting`, with `overrides` (None values ignored) on top."""
    if setting not in SETTINGS:
        raise ValueError(f"unknown benchmark setting '{setting}'; choose from: {', '.join(SETTINGS)}")
    cuda = torch.cuda.is_available()
    gpu = dict(device="cuda", model="sd15", height=512, width=512, dtypes=("fp16",), repeats=3)
    base = {
        "sd15": dict(gpu, dtypes=("fp16", "bf16"), compile=True),
        "tiny-cpu": dict(device="cpu", model="tiny", height=32, width=32, dtypes=("fp32",), repeats=2),
        "long": dict(gpu, repeats=1) if cuda else dict(device="cpu", model="tiny", repeats=1),
        "train": dict(gpu, dtypes=("bf16",), repeats=3) if cuda else dict(device="cpu", model="tiny", repeats=2,
                                                                          train_height=64, train_width=64),
    }[setting]
    values = {**base, **{k: v for k, v in overrides.items() if v is not None}}
    known = {f.name for f in fields(Options)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown benchmark option '{unknown[0]}'")
    if isinstance(values.get("dtypes"), str):
        values["dtypes"] = tuple(d.strip() for d in values["dtypes"].split(",") if d.strip())
    return Options(**values).check()
