"""What a seed a user types means: exactly what `torch.Generator().manual_seed(seed)` makes of it.

diffusers users pass seeds to `torch.Generator().manual_seed`, which takes any int in
`[-2**63, 2**64 - 1]` and uses it modulo 2**64 (`manual_seed(-1)` is `manual_seed(2**64 - 1)`).
`normalize_seed` keeps that meaning and returns the seed torch uses (`Generator.initial_seed()`), so
a sidecar, a printed seed and any other library seeded from it agree with the noise that was drawn.

A seed outside that range is refused, not reduced modulo 2**64: torch itself refuses it, and
reducing would make `2**64` quietly draw the same clip as `0`. (In some web UIs -1 means "pick a
random seed"; here, as in diffusers, it is a seed like any other: leave `--seed` out for a random one.)
"""

from __future__ import annotations

import operator

from vidldm.errors import VidldmError

SEED_MIN, SEED_MAX = -(2**63), 2**64 - 1  # torch.Generator.manual_seed's inclusive range


def normalize_seed(value: int) -> int:
    """`value` as torch uses it, in `[0, 2**64)`; a non-integer or a value outside torch's range is a `VidldmError`."""
    if isinstance(value, bool):  # an int to Python, never a seed anyone meant
        raise VidldmError(f"a seed must be a whole number, got {value!r}")
    try:
        seed = operator.index(value)  # ints and numpy integers; not floats, which would silently round
    except TypeError:
        raise VidldmError(f"a seed must be a whole number, got {value!r}") from None
    if not SEED_MIN <= seed <= SEED_MAX:
        raise VidldmError(f"the seed must be between -2**63 and 2**64-1 (torch's seed range), got {seed}; "
                          "pick one in that range, or leave it out for a random one")
    return seed % 2**64
