"""Held-out wordings of the shapes prompts: does the model understand motion said in other words?

Training captions always read ``a {colour} {shape} {motion} on a {background} background`` with one of seven
motion phrases. `paraphrase(spec, i)` says the same clip with other motion words and another sentence order,
none of which appear in any training caption (a test asserts it), so the evaluation's paraphrased row measures
how far the frozen text encoder carries the learned motions to words the adapter never saw. Colour and shape
words stay the training ones: the question is motion.

The wordings cycle with ``i`` (each motion has four synonyms, and there are four sentence frames; 4 and 4 step
together, so frame and synonym are offset by ``i // 4`` to meet every pair), so the set is fixed on every machine.
"""

from __future__ import annotations

from vidldm.data.shapes import MOTIONS, ClipSpec

#: Other words for each training motion phrase (none of them a training phrase).
SYNONYMS: dict[str, tuple[str, ...]] = {
    "moving left": ("sliding to the left", "drifting leftward", "travelling to the left", "heading left"),
    "moving right": ("sliding to the right", "drifting rightward", "travelling to the right", "heading right"),
    "moving up": ("rising", "floating upward", "travelling upwards", "climbing"),
    "moving down": ("falling", "sinking", "travelling downwards", "dropping"),
    "growing": ("getting bigger", "expanding", "increasing in size", "swelling"),
    "shrinking": ("getting smaller", "contracting", "decreasing in size", "dwindling"),
    "standing still": ("staying still", "not moving", "holding still", "staying in place"),
}

#: Sentence frames: the training order, the background first, another noun for the background, a clause.
FRAMES = (
    "a {colour} {shape} {motion} on a {background} background",
    "on a {background} background, a {colour} {shape} {motion}",
    "a {colour} {shape} {motion} against a {background} backdrop",
    "a {background} background with a {colour} {shape} {motion}",
)

assert set(SYNONYMS) == set(MOTIONS), "every training motion needs its synonyms"


def paraphrase(spec: ClipSpec, i: int) -> str:
    """The `i`-th held-out wording of `spec`'s caption (same colour, shape, motion and background)."""
    words = SYNONYMS[spec.motion]
    motion = words[i % len(words)]
    frame = FRAMES[(i + i // len(words)) % len(FRAMES)]
    return frame.format(colour=spec.colour, shape=spec.shape, motion=motion, background=spec.background)
