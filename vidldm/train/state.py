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

from vidldm.errors import CheckpointError, VidldmError
from vidldm.io.media import one_line


class EMA:
    """Exponential moving average of parameters, with the usual warm-up `min(decay, (1 + n) / (10 + n))`.

    Not diffusers' `EMAModel` (same formula): its state is Python scalars plus a list of tensors meant for
    `torch.save`, a pickle; this one is a flat tensor dict saved as safetensors, so a resume never unpickles,
    and it keeps fp32 shadows of fp16/bf16 parameters."""

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


# RNG states are stored as safetensors (byte tensors) + JSON (Python's and numpy's scalars), not as a
# pickle: a checkpoint is a file people share, and unpickling one can run any code it names.
def _rng_to_safetensors(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    version, words, gauss = state["python"]
    kind, keys, pos, has_gauss, cached = state["numpy"]
    tensors = {"torch": state["torch"], "generator": state["generator"],
               "numpy_keys": torch.from_numpy(np.asarray(keys, dtype=np.int64))}
    for i, cuda in enumerate(state.get("cuda", [])):
        tensors[f"cuda.{i}"] = cuda
    scalars = {"python": [version, list(words), gauss], "numpy": [kind, int(pos), int(has_gauss), float(cached)]}
    return tensors, {"vidldm_rng": json.dumps(scalars)}


def _rng_from_safetensors(path: Path) -> dict[str, Any]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        scalars = json.loads((f.metadata() or {})["vidldm_rng"])
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
    version, words, gauss = scalars["python"]
    kind, pos, has_gauss, cached = scalars["numpy"]
    state = {"python": (version, tuple(words), gauss),
             "numpy": (kind, tensors["numpy_keys"].numpy().astype(np.uint32), pos, has_gauss, cached),
             "torch": tensors["torch"], "generator": tensors["generator"]}
    cuda = sorted((k for k in tensors if k.startswith("cuda.")), key=lambda k: int(k.split(".")[1]))
    if cuda:
        state["cuda"] = [tensors[k] for k in cuda]
    return state


def load_pickle(path: Path) -> Any:
    """A `.pt` file a user may have been handed: tensors, numbers, strings and containers only.

    `torch.load(weights_only=True)` never runs code; a file that needs more (any other Python
    object) is refused with one line instead of being unpickled."""
    import pickle

    if not path.is_file():
        raise CheckpointError(f"checkpoint file '{path}' is missing; resume from another checkpoint")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"'{path}' holds Python objects other than tensors and numbers; vidldm does not unpickle them "
            "(that could run code hidden in the file). Use a checkpoint written by vidldm") from err
    except (RuntimeError, EOFError, OSError, ValueError) as err:  # truncated or not a torch file
        raise CheckpointError(f"'{path}' is damaged or not a PyTorch file ({one_line(err)})") from err


def _load_legacy_rng(path: Path) -> dict[str, Any]:
    """`rng-N.pt` of checkpoints written before RNG states moved to safetensors: numpy's state needs
    its array type, allowed by name (as accelerate's `load_state` does); nothing else is."""
    import numpy.dtypes

    allowed = [np._core.multiarray._reconstruct, np.ndarray, np.dtype, numpy.dtypes.UInt32DType]
    with torch.serialization.safe_globals(allowed):
        return load_pickle(path)


def checkpoint_dir(output_dir: Path, step: int) -> Path:
    return output_dir / "checkpoints" / f"step-{step:06d}"


def staging_dir(output_dir: Path, step: int) -> Path:
    return output_dir / "checkpoints" / f".tmp-step-{step:06d}"


def write_process_state(folder: Path, rank: int, generator: torch.Generator) -> None:
    """Each process saves its own RNG states (noise, timesteps, dropout differ per process)."""
    folder.mkdir(parents=True, exist_ok=True)
    tensors, metadata = _rng_to_safetensors(rng_state(generator))
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(folder / f"rng-{rank}.safetensors"), metadata=metadata)


def write_main_state(folder: Path, *, weights: dict[str, torch.Tensor], optimizer, lr_scheduler,
                     ema: EMA | None, meta: dict[str, Any]) -> None:
    if folder.exists():  # left by a run killed while staging this step: none of it may leak into this one
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    save_file({k: v.detach().contiguous().cpu() for k, v in weights.items()}, str(folder / "weights.safetensors"))
    torch.save(optimizer.state_dict(), folder / "optimizer.pt")
    torch.save(lr_scheduler.state_dict(), folder / "scheduler.pt")
    if ema is not None:
        save_file({k: v.cpu() for k, v in ema.state_dict().items()}, str(folder / "ema.safetensors"))
    (folder / "state.json").write_text(json.dumps(meta, indent=2) + "\n")


def publish(output_dir: Path, step: int, keep: int) -> Path:
    """Rename the staged checkpoint into place, delete all but the newest `keep`, and what killed runs left.

    A checkpoint is deleted by renaming it aside (`.old-step-N`) first: a kill in the middle of deleting
    must not leave a half-deleted `step-*` that still holds `state.json`, which `--resume latest` would
    pick and fail on. So at every moment each `step-*` is whole or absent."""
    root = output_dir / "checkpoints"
    final = checkpoint_dir(output_dir, step)
    if final.exists():  # a run resumed from an older checkpoint passes this step again
        _discard(final)
    staging_dir(output_dir, step).rename(final)
    done = sorted(p for p in root.glob("step-*") if p.is_dir())
    for old in done[:-keep]:
        _discard(old)
    # Left by killed runs: folders put aside but not yet deleted, staging of steps that were never published.
    for leftover in [*root.glob(".old-step-*"), *root.glob(".tmp-step-*")]:
        shutil.rmtree(leftover, ignore_errors=True)
    return final


def _discard(folder: Path) -> None:
    aside = folder.with_name(f".old-{folder.name}")
    if aside.exists():
        shutil.rmtree(aside)
    folder.rename(aside)
    shutil.rmtree(aside, ignore_errors=True)


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
    """Everything a resume needs; every file is read without running code (see `load_pickle`)."""
    meta_file = folder / "state.json"
    try:
        meta = json.loads(meta_file.read_text())
        written_by = int(meta.get("processes", 1))
    except (json.JSONDecodeError, TypeError, ValueError, AttributeError) as err:
        raise CheckpointError(f"'{meta_file}' is not a vidldm checkpoint's state (invalid JSON)") from err
    rng_file = folder / f"rng-{rank}.safetensors"
    if not rng_file.exists() and (folder / f"rng-{rank}.pt").exists():
        rng = _load_legacy_rng(folder / f"rng-{rank}.pt")
    elif not rng_file.exists():
        if rank >= written_by:
            raise VidldmError(f"checkpoint '{folder}' was written by {written_by} process(es) and this run has more; "
                              f"resume with {written_by}")
        raise CheckpointError(f"checkpoint '{folder}' is incomplete: '{rng_file.name}' is missing; "
                              "resume from another checkpoint")
    else:
        try:
            rng = _rng_from_safetensors(rng_file)
        except Exception as err:  # safetensors raises its own error types for damaged files
            raise CheckpointError(f"'{rng_file}' is damaged ({one_line(err)})") from err
    return {
        "weights": _load_safetensors(folder / "weights.safetensors"),
        "optimizer": load_pickle(folder / "optimizer.pt"),
        "scheduler": load_pickle(folder / "scheduler.pt"),
        "ema": _load_safetensors(folder / "ema.safetensors") if (folder / "ema.safetensors").exists() else None,
        "rng": rng,
        "meta": meta,
        "processes": written_by,
    }


def _load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    if not path.exists():
        raise CheckpointError(f"checkpoint file '{path}' is missing; resume from another checkpoint")
    try:
        return load_file(str(path))
    except Exception as err:  # SafetensorError and OSError on damaged files
        raise CheckpointError(f"'{path}' is damaged or not safetensors ({one_line(err)})") from err
