"""Metrics for generated clips.

    shapes.analyse_clip(frames)   -> ClipObs    what a shapes clip shows (colour, shape, motion)
    shapes.score(clips, specs)    -> dict       caption accuracy, persistence, smoothness, stability
    shapes.format_table(rows)     -> str        markdown table, one row per system
    shapes.first_frame_psnr(...)  -> float      dB, for image animation

See `vidldm.eval.shapes` for how the oracle reads a frame.
"""

from vidldm.eval.shapes import (
    ClipObs,
    FrameObs,
    analyse_clip,
    analyse_frame,
    first_frame_psnr,
    format_table,
    score,
)

__all__ = [
    "ClipObs",
    "FrameObs",
    "analyse_clip",
    "analyse_frame",
    "first_frame_psnr",
    "format_table",
    "score",
]
