"""Varied training wordings of the shapes captions (`vidldm make-shapes --wordings varied`).

The fixed captions say every clip one way: ``a {colour} {shape} {motion} on a {background} background`` with
seven motion phrases. A model trained on them learns those seven phrases, and words it never saw ("sliding",
"dropping") land elsewhere in the frozen text encoder's space: on the held-out wordings of
`vidldm.eval.paraphrase` the motion is right in half the clips only (docs/evaluation.md). Training captions
that say the same motion several ways teach the text cross-attention a region of that space per motion rather
than a point.

These wordings are disjoint from the held-out ones: the only words they share with a held-out synonym are words
of the fixed phrases themselves ("left", "still", ...), and they share no sentence frame (a test asserts both), so
the paraphrased row still measures words the model never saw. The first wording of every motion and the first
frame are the fixed caption's, so a varied dataset still holds the plain captions.
"""

from __future__ import annotations

import numpy as np

#: Training words for each motion; the first is the fixed caption's phrase.
TRAINING_SYNONYMS: dict[str, tuple[str, ...]] = {
    "moving left": ("moving left", "going left", "gliding left", "shifting left"),
    "moving right": ("moving right", "going right", "gliding right", "shifting right"),
    "moving up": ("moving up", "going up", "gliding up", "ascending", "soaring"),
    "moving down": ("moving down", "going down", "gliding down", "descending", "plunging"),
    "growing": ("growing", "growing larger", "enlarging", "scaling up", "becoming larger"),
    "shrinking": ("shrinking", "shrinking away", "narrowing", "scaling down", "becoming tiny"),
    "standing still": ("standing still", "motionless", "resting", "stationary", "keeping still"),
}

#: Training sentence frames; the first is the fixed caption's.
TRAINING_FRAMES = (
    "a {colour} {shape} {motion} on a {background} background",
    "a {colour} {shape} on a {background} background, {motion}",
    "a {colour} {shape} is {motion} on a {background} background",
    "{motion}: a {colour} {shape} on a {background} background",
)

assert all(words[0] == motion for motion, words in TRAINING_SYNONYMS.items()), "the first wording is the fixed one"


FIXED_SHARE = 0.5  # half the clips keep the fixed caption, so the varied ones do not dilute what it already means


def varied_caption(spec, rng: np.random.Generator) -> str:
    """The caption of `spec` (a `vidldm.data.shapes.ClipSpec`, not imported here: shapes.py imports this module):
    the fixed one with probability `FIXED_SHARE`, else a training wording drawn from `rng` (uniform over the
    motion's words and the frames, the fixed ones included)."""
    if rng.random() < FIXED_SHARE:
        return spec.caption
    words = TRAINING_SYNONYMS[spec.motion]
    motion = words[rng.integers(len(words))]
    frame = TRAINING_FRAMES[rng.integers(len(TRAINING_FRAMES))]
    return frame.format(colour=spec.colour, shape=spec.shape, motion=motion, background=spec.background)
