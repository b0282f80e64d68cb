"""What a training run must carry across a stop: EMA weights, RNG states, data position, checkpoints.

A checkpoint is a folder `checkpoints/step-000010/` holding only what training changes (the
trainable weights, optimizer, LR schedule, EMA, every process's RNG states and the data
position), never the frozen model, so it stays small for a Stable Diffusion base. It is
written into a hidden temporary folder and renamed, so a run killed mid-write leaves the
previous checkpoint intact.
"""

from __future__ import annotations

import json
import random
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from vidldm.errors import VidldmError


class EMA:
    """Exponential moving average of parameters, with the usual warm-up `min(decay, (1 + n) / (10 + n))`."""

    def __init__(self, params: Iterable[nn.Parameter], decay: float):
        self.params = list(params)
        self.decay = decay
        self.num_updates = 0
        self.shadow = [p.detach().clone().float() for p in self.params]

    @torch.no_grad()
    def update(self) -> None:
        self.num_updates += 1
        d = min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))
        for s, p in zip(self.shadow, self.params):
            s.lerp_(p.detach().float(), 1 - d)

    @torch.no_grad()
    def copy_to(self, params: Iterable[nn.Parameter] | None = None) -> None:
        for s, p in zip(self.shadow, params or self.params):
            p.copy_(s.to(p.dtype))

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {**{f"shadow.{i}": s.contiguous() for i, s in enumerate(self.shadow)},
                "num_updates": torch.tensor(self.num_updates)}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.num_updates = int(state["num_updates"])
        for i, s in enumerate(self.shadow):
            s.copy_(state[f"shadow.{i}"])


def rng_state(generator: torch.Generator) -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
             "generator": generator.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any], generator: torch.Generator) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    generator.set_state(state["generator"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def checkpoint_dir(output_dir: Path, step: int) -> Path:
    return output_dir / "checkpoints" / f"step-{step:06d}"


def staging_dir(output_dir: Path, step: int) -> Path:
    return output_dir / "checkpoints" / f".tmp-step-{step:06d}"


def write_process_state(folder: Path, rank: int, generator: torch.Generator) -> None:
    """Each process saves its own RNG states (noise, timesteps, dropout differ per process)."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(rng_state(generator), folder / f"rng-{rank}.pt")


def write_main_state(folder: Path, *, weights: dict[str, torch.Tensor], optimizer, lr_scheduler,
                     ema: EMA | None, meta: dict[str, Any]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous().cpu() for k, v in weights.items()}, str(folder / "weights.safetensors"))
    torch.save(optimizer.state_dict(), folder / "optimizer.pt")
    torch.save(lr_scheduler.state_dict(), folder / "scheduler.pt")
    if ema is not None:
        save_file({k: v.cpu() for k, v in ema.state_dict().items()}, str(folder / "ema.safetensors"))
    (folder / "state.json").write_text(json.dumps(meta, indent=2) + "\n")


def publish(output_dir: Path, step: int, keep: int) -> Path:
    """Rename the staged checkpoint into place and delete all but the newest `keep`."""
    final = checkpoint_dir(output_dir, step)
    if final.exists():
        shutil.rmtree(final)
    staging_dir(output_dir, step).rename(final)
    done = sorted(p for p in (output_dir / "checkpoints").glob("step-*") if p.is_dir())
    for old in done[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def find_checkpoint(output_dir: Path, resume: str) -> Path:
    """`latest` -> the newest `step-*` under `output_dir/checkpoints`; otherwise a checkpoint folder path."""
    if resume == "latest":
        found = sorted(p for p in (output_dir / "checkpoints").glob("step-*") if (p / "state.json").exists())
        if not found:
            raise VidldmError(f"--resume latest: no checkpoint in '{output_dir / 'checkpoints'}' yet")
        return found[-1]
    path = Path(resume)
    if not (path / "state.json").exists():
        raise VidldmError(f"--resume: '{path}' is not a checkpoint folder (no state.json)")
    return path


def read_checkpoint(folder: Path, rank: int) -> dict[str, Any]:
    rng_file = folder / f"rng-{rank}.pt"
    if not rng_file.exists():
        raise VidldmError(f"checkpoint '{folder}' was written by fewer processes; resume with the same number of processes")
    return {
        "weights": load_file(str(folder / "weights.safetensors")),
        "optimizer": torch.load(folder / "optimizer.pt", weights_only=False),  # our own file: holds python scalars
        "scheduler": torch.load(folder / "scheduler.pt", weights_only=False),
        "ema": load_file(str(folder / "ema.safetensors")) if (folder / "ema.safetensors").exists() else None,
        "rng": torch.load(rng_file, weights_only=False),
        "meta": json.loads((folder / "state.json").read_text()),
    }
