"""`vidldm.latents`: slerp of noise and embeddings (endpoints, norms, batching, degenerate pairs)."""

import pytest
import torch

from vidldm.errors import VidldmError
from vidldm.latents import interpolate_embeddings, slerp


def unit(*shape, seed=0):
    v = torch.randn(*shape, generator=torch.Generator().manual_seed(seed))
    return v / v.norm()


def test_endpoints_are_exact_in_every_dtype():
    for dtype in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
        a, b = unit(2, 4, 3, 8, 8).to(dtype), unit(2, 4, 3, 8, 8, seed=1).to(dtype)
        assert torch.equal(slerp(a, b, 0.0), a) and torch.equal(slerp(a, b, 1.0), b)
        assert slerp(a, b, 0.3).dtype == dtype


def test_unit_vectors_stay_unit_and_the_angle_is_split_evenly():
    a, b = unit(1000), unit(1000, seed=1)
    angle = torch.acos(a @ b)
    for t in (0.1, 0.25, 0.5, 0.9):
        m = slerp(a, b, t)
        assert abs(m.norm().item() - 1) < 1e-5
        assert abs(torch.acos((a @ m).clamp(-1, 1)).item() - t * angle.item()) < 1e-4
    # lerp's midpoint shrinks towards the inside of the sphere; slerp's does not
    assert torch.lerp(a, b, 0.5).norm() < 0.75


def test_t_batched_gives_a_leading_axis_equal_to_one_call_per_t():
    a, b = torch.randn(2, 4, 3, 5, 5), torch.randn(2, 4, 3, 5, 5)
    ts = torch.tensor([0.0, 0.2, 0.5, 1.0])
    path = slerp(a, b, ts)
    assert path.shape == (4, 2, 4, 3, 5, 5)
    for i, t in enumerate(ts.tolist()):
        assert torch.allclose(path[i], slerp(a, b, t), atol=1e-6)
    per_sample = slerp(a, b, ts, dim=(1, 2, 3, 4))  # each sample of the batch its own vector
    assert torch.allclose(per_sample[2, 1], slerp(a[1], b[1], 0.5), atol=1e-6)


def test_parallel_inputs_fall_back_to_lerp():
    a = unit(64)
    b = 3 * a
    assert torch.allclose(slerp(a, b, 0.5), 2 * a, atol=1e-6)
    assert torch.allclose(slerp(a, a, 0.7), a, atol=1e-6)


def test_opposite_inputs_turn_through_an_orthogonal_direction_keeping_the_norm():
    a = unit(64)
    mid = slerp(a, -a, 0.5)
    assert abs(mid.norm().item() - 1) < 1e-5 and abs((mid @ a).item()) < 1e-5
    assert torch.allclose(slerp(a, -a, 0.999), -a, atol=1e-2)
    assert torch.equal(slerp(a, -a, 0.5), mid)  # deterministic
    seeded_alike = torch.randn(64, generator=torch.Generator().manual_seed(0x5EED))
    other_mid = slerp(seeded_alike, -seeded_alike, 0.5)  # the fixed direction itself: a second one is taken
    assert abs((other_mid @ seeded_alike).item()) < 1e-3 and abs(other_mid.norm() - seeded_alike.norm()) < 1e-3
    quarter = slerp(a, -a, 0.25)
    assert abs(torch.acos((quarter @ a).clamp(-1, 1)).item() - torch.pi / 4) < 1e-4


def test_embeddings_are_interpolated_per_token():
    a, b = torch.randn(1, 16, 384), torch.randn(1, 16, 384)
    a, b = a / a.norm(dim=-1, keepdim=True), b / b.norm(dim=-1, keepdim=True)
    mid = interpolate_embeddings(a, b, 0.5)
    assert torch.allclose(mid.norm(dim=-1), torch.ones(1, 16), atol=1e-5)
    assert torch.allclose(interpolate_embeddings(a, b, 0.5, "lerp"), (a + b) / 2)
    assert interpolate_embeddings(a, b, torch.linspace(0, 1, 5)).shape == (5, 1, 16, 384)


def test_bad_inputs():
    with pytest.raises(VidldmError, match="one shape"):
        slerp(torch.zeros(3), torch.zeros(4), 0.5)
    with pytest.raises(VidldmError, match="1-D"):
        slerp(torch.zeros(3), torch.zeros(3), torch.zeros(2, 2))
    with pytest.raises(VidldmError, match="'slerp' or 'lerp'"):
        interpolate_embeddings(torch.zeros(3), torch.zeros(3), 0.5, "cubic")
