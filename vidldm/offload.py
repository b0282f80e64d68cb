"""Model CPU offload by phase: only the models of the phase that runs sit on the accelerator.

diffusers' `enable_model_cpu_offload` puts an accelerate hook on each component's `forward`. vidldm's
`VideoUNet` never calls `unet.forward` or the adapter's `forward`: it walks the image UNet's blocks and calls
the motion modules itself, so those hooks would never fire and the UNet would run on the CPU copy (or fail on
a device mismatch). Here the pipeline says which phase runs next (`load("text")`, `"denoise"`, `"vae"`)
and this moves that phase's models to the device and every other phase's back to CPU memory, before any of
them runs, whatever method the pipeline calls on them. Peak accelerator memory is the largest phase's
weights plus its activations, as with diffusers' offload.

Sequential offload (weights per layer, `sequential_offload`) keeps accelerate's hooks: they sit on every layer
that holds weights, and `VideoUNet` calls each of those layers through `__call__`, so they fire. Why not
diffusers' `enable_sequential_cpu_offload` as it is: it names the device with an index, "cpu:0" for "cpu", and
since torch 2.13 `tensor.to("cpu:0")` on a CPU tensor copies instead of returning the tensor (the indices
differ by name), so accelerate's `set_module_tensor_to_device` rebuilds a parameter with
`Parameter(value).to(device)` and gets a plain `Tensor` back; the layer's next offload then calls
`Tensor(value, requires_grad=...)` and fails (TypeError). A CUDA device ("cuda:0") never copies there; here the
device is passed as given, which is all the fix needs.
"""

from __future__ import annotations

import torch
from torch import nn

PHASES = ("text", "denoise", "vae")


class ModelOffload:
    """Moves groups of models between `device` (where they run) and `storage` (CPU memory).

    `groups`: phase name -> the models that phase runs (None entries are skipped). `moves` records each move
    as `(phase, "device" | "storage")`, in order."""

    def __init__(self, groups: dict[str, list[nn.Module | None]], device: torch.device | str, storage: str = "cpu"):
        self.groups = {name: [m for m in models if m is not None] for name, models in groups.items()}
        self.device, self.storage = torch.device(device), storage
        self.loaded: str | None = None
        self.moves: list[tuple[str, str]] = []
        self.offload_all()

    def load(self, phase: str) -> None:
        """Put `phase`'s models on the device, after moving the phase loaded before back to storage (so the
        two never hold accelerator memory at once)."""
        if phase == self.loaded:
            return
        if self.loaded is not None:
            self._move(self.loaded, "storage")
        self._move(phase, "device")
        self.loaded = phase

    def offload_all(self) -> None:
        """Every model in storage: the state between calls."""
        for phase in self.groups:
            self._move(phase, "storage")
        self.loaded = None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def _move(self, phase: str, where: str) -> None:
        target = self.device if where == "device" else self.storage
        for model in self.groups[phase]:
            self.move(model, target)
        self.moves.append((phase, where))

    def move(self, model: nn.Module, target) -> None:
        """One model to `target` (a subclass may move otherwise, e.g. a test that empties stored weights)."""
        model.to(target)


def sequential_offload(models: list[nn.Module | None], device: torch.device | str) -> None:
    """accelerate's `cpu_offload` on each model (as diffusers' `enable_sequential_cpu_offload` does): its weights are
    kept in CPU memory, the model holds none ("meta"), and a hook on every layer with weights moves them to
    `device` just before the layer runs and drops them just after. Buffers move with the weights of models that
    hold weights of their own (diffusers' rule), else they stay on `device`."""
    from accelerate import cpu_offload

    for model in models:
        if model is not None:
            model.to("cpu")
            cpu_offload(model, torch.device(device), offload_buffers=len(model._parameters) > 0)
