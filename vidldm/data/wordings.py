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


#: `--wordings rich`: the varied set and more, the words a person might use for each motion (still none of the
#: held-out ones, nor a form of one: no "-ward(s)" direction, no "getting"/"staying", no "unmoving" for "not
#: moving"), and more sentence frames (none with the background first, an order the held-out frames test).
#: Why: a text path taught five points per motion reaches held-out words near those points only; more wordings
#: cover more of the frozen text encoder's space around each motion.
RICH_SYNONYMS: dict[str, tuple[str, ...]] = {
    "moving left": (*TRAINING_SYNONYMS["moving left"], "passing left", "sweeping left", "running left", "rolling left",
                    "scrolling left", "darting left", "hurrying left", "zipping left", "coasting left", "going west",
                    "flying left", "crossing left"),
    "moving right": (*TRAINING_SYNONYMS["moving right"], "passing right", "sweeping right", "running right",
                     "rolling right", "scrolling right", "darting right", "hurrying right", "zipping right",
                     "coasting right", "going east", "flying right", "crossing right"),
    "moving up": (*TRAINING_SYNONYMS["moving up"], "lifting up", "flying up", "shooting up", "going higher",
                  "moving higher", "levitating", "taking off", "mounting up", "elevating", "lifting off"),
    "moving down": (*TRAINING_SYNONYMS["moving down"], "diving", "tumbling down", "going lower", "moving lower",
                    "dipping", "lowering", "flying down", "slipping down", "coming down", "plummeting"),
    "growing": (*TRAINING_SYNONYMS["growing"], "inflating", "ballooning", "widening", "magnifying", "puffing up",
                "blowing up", "becoming huge", "turning large", "spreading out", "bulging"),
    "shrinking": (*TRAINING_SYNONYMS["shrinking"], "deflating", "diminishing", "reducing", "compressing", "waning",
                  "shriveling", "receding", "collapsing", "withering", "condensing"),
    "standing still": (*TRAINING_SYNONYMS["standing still"], "frozen", "idle", "immobile", "static",
                       "sitting still", "at rest", "remaining still", "perfectly still", "pausing"),
}

RICH_FRAMES = (
    *TRAINING_FRAMES,
    "there is a {colour} {shape} {motion} on a {background} background",
    "a {colour} {shape}, {motion}, on a {background} background",
    "a {colour} {shape} that is {motion} on a {background} background",
)  # no frame with the background first: two held-out frames test that order

#: `make-shapes --wordings` choices beyond "fixed": each a (synonyms, frames) set.
WORDING_SETS = {"varied": (TRAINING_SYNONYMS, TRAINING_FRAMES), "rich": (RICH_SYNONYMS, RICH_FRAMES)}

assert all(words[:len(TRAINING_SYNONYMS[m])] == TRAINING_SYNONYMS[m] for m, words in RICH_SYNONYMS.items())

FIXED_SHARE = 0.5  # half the clips keep the fixed caption, so the varied ones do not dilute what it already means


def varied_caption(spec, rng: np.random.Generator, wordings: str = "varied") -> str:
    """The caption of `spec` (a `vidldm.data.shapes.ClipSpec`, not imported here: shapes.py imports this module):
    the fixed one with probability `FIXED_SHARE`, else a wording of the set `wordings` ("varied" or "rich")
    drawn from `rng` (uniform over the motion's words and the frames, the fixed ones included)."""
    synonyms, frames = WORDING_SETS[wordings]
    if rng.random() < FIXED_SHARE:
        return spec.caption
    words = synonyms[spec.motion]
    motion = words[rng.integers(len(words))]
    frame = frames[rng.integers(len(frames))]
    return frame.format(colour=spec.colour, shape=spec.shape, motion=motion, background=spec.background)
