"""The built-in model names and where the shipped weights live, in one place that imports no torch:
the CLI's `--help` and a training recipe's checks need them before any model is loaded."""

from __future__ import annotations

from pathlib import Path

BUILTIN = ("tiny", "shapes", "shapes-init")
SHAPES_WEIGHTS = Path(__file__).resolve().parent / "weights" / "shapes"


def default_model() -> str:
    """The shipped shapes model when its weights are installed, else the tiny random demo model."""
    return "shapes" if (SHAPES_WEIGHTS / "unet" / "config.json").exists() else "tiny"
