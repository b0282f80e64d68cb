"""The built-in model names and where the shipped weights live, in one place that imports no torch:
the CLI's `--help` and a training recipe's checks need them before any model is loaded."""

from __future__ import annotations

from pathlib import Path

BUILTIN = ("tiny", "shapes", "shapes-init")
SHAPES_WEIGHTS = Path(__file__).resolve().parent / "weights" / "shapes"


def default_model() -> str:
    """The shipped shapes model when its weights are installed, else the tiny random demo model."""
    return "shapes" if (SHAPES_WEIGHTS / "unet" / "config.json").exists() else "tiny"


def own_keyframe_encoder(model: str | None) -> Path | None:
    """The keyframe encoder a model brings (`sparsectrl/` beside its parts, as `vidldm train`'s keyframe stage saves
    it and the shipped shapes model has it), used by `--keyframe` without `--sparsectrl`; None where it has none."""
    if model is None or model in ("tiny", "shapes-init"):
        return None
    found = (SHAPES_WEIGHTS if model == "shapes" else Path(model).expanduser()) / "sparsectrl"
    return found if (found / "config.json").is_file() else None
