"""A seed means what torch.Generator().manual_seed makes of it; outside torch's range it is one clear line."""

import numpy as np
import pytest
import torch

from vidldm.errors import VidldmError
from vidldm.seeds import SEED_MAX, SEED_MIN, normalize_seed


@pytest.mark.parametrize("value", [0, 1, 42, 2**31, 2**63, SEED_MAX, -1, -12345, SEED_MIN, np.int64(-7), np.uint64(2**64 - 1)])
def test_a_seed_draws_the_noise_diffusers_would_and_records_what_torch_used(value):
    seed = normalize_seed(value)
    reference = torch.Generator().manual_seed(int(value))
    assert seed == reference.initial_seed() and 0 <= seed < 2**64
    assert torch.equal(torch.randn(8, generator=torch.Generator().manual_seed(seed)), torch.randn(8, generator=reference))
    assert normalize_seed(seed) == seed  # recorded in a sidecar, replayed: the same


@pytest.mark.parametrize("value", [2**64, 2**70, SEED_MIN - 1, -(2**70)])
def test_a_seed_outside_torchs_range_is_refused_in_one_line(value):
    with pytest.raises(VidldmError) as err:
        normalize_seed(value)
    assert str(err.value) == (f"the seed must be between -2**63 and 2**64-1 (torch's seed range), got {value}; "
                              "pick one in that range, or leave it out for a random one")
    with pytest.raises((RuntimeError, ValueError)):  # what torch itself does with it
        torch.Generator().manual_seed(value)


@pytest.mark.parametrize("value", [1.5, 3.0, "7", True, None])
def test_a_seed_must_be_a_whole_number(value):
    with pytest.raises(VidldmError, match="a seed must be a whole number"):
        normalize_seed(value)
