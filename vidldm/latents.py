"""Moving through latent space: spherical interpolation of noise and of prompt embeddings.

Gaussian noise in many dimensions lies near a sphere of radius sqrt(n): a straight line between two
noise tensors passes through its inside (the midpoint of two independent draws has 1/sqrt(2) of the
norm), where the model never saw its starting noise, and the clips there wash out. `slerp` follows the
great circle instead, so every point on the way has the norm of a real draw (Shoemake 1985; the usual
tool for seed walks in Stable Diffusion).

Layouts: any; `t` a float gives `a`'s shape, `t` a 1-D tensor of T values gives `(T, *a.shape)`.
"""

from __future__ import annotations

import torch

from vidldm.errors import VidldmError

PARALLEL = 1 - 1e-6  # |cos| above this: the angle is too small for sin(theta) to divide by


def slerp(a: torch.Tensor, b: torch.Tensor, t: float | torch.Tensor, dim: int | tuple[int, ...] | None = None) -> torch.Tensor:
    """Spherical linear interpolation from `a` (t = 0) to `b` (t = 1).

    The vectors are `a` and `b` whole (`dim=None`) or along `dim` (e.g. `dim=-1` per token of an
    embedding), so a batch is interpolated sample by sample. Nearly parallel vectors fall back to lerp
    (the two agree there); exactly opposite ones have no single great circle, so the path turns through
    a fixed direction orthogonal to `a` (deterministic, norm kept). Computed in float32 at least; the
    result has `a`'s dtype. Endpoints are returned exactly."""
    if a.shape != b.shape:
        raise VidldmError(f"slerp needs two tensors of one shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    batched = isinstance(t, torch.Tensor) and t.ndim == 1
    tt = torch.as_tensor(t, dtype=torch.float64 if a.dtype == torch.float64 else torch.float32, device=a.device)
    if tt.ndim > 1:
        raise VidldmError(f"t must be a number or a 1-D tensor of numbers, got shape {tuple(tt.shape)}")
    dims = tuple(range(a.ndim)) if dim is None else ((dim,) if isinstance(dim, int) else tuple(dim))
    x, y = a.to(tt.dtype), b.to(tt.dtype)
    if batched:
        tt = tt.reshape(-1, *[1] * a.ndim)
        x, y = x[None], y[None]
        dims = tuple(d % a.ndim + 1 for d in dims)
    out = _slerp(x, y, tt, dims)
    out = torch.where(tt == 0, x, torch.where(tt == 1, y, out))  # exact endpoints, whatever the rounding
    return out.to(a.dtype)


def _slerp(x: torch.Tensor, y: torch.Tensor, t: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    nx, ny = _norm(x, dims), _norm(y, dims)
    cos = ((x * y).sum(dim=dims, keepdim=True) / (nx * ny).clamp_min(1e-30)).clamp(-1, 1)
    theta = torch.acos(cos)
    curved = (torch.sin((1 - t) * theta) * x + torch.sin(t * theta) * y) / torch.sin(theta).clamp_min(1e-30)
    straight = x + t * (y - x)
    # Opposite vectors: half a turn through a fixed orthogonal direction u, the norm going from |x| to |y|.
    x_unit, u = x / nx.clamp_min(1e-30), _orthogonal(x, dims)
    half_turn = (torch.cos(torch.pi * t) * x_unit + torch.sin(torch.pi * t) * u) * (nx + t * (ny - nx))
    return torch.where(cos < -PARALLEL, half_turn, torch.where(cos > PARALLEL, straight, curved))


def _norm(x: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    return (x * x).sum(dim=dims, keepdim=True).sqrt()


def _orthogonal(x: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    """A unit vector orthogonal to `x` along `dims`: a fixed random direction minus its projection on x
    (Gram-Schmidt; fixed, so a walk through opposite points is the same every run). Should `x` be that
    very direction (someone's noise drawn with the same seed), a second one is used."""
    def candidate(seed: int) -> torch.Tensor:
        r = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed), dtype=x.dtype).to(x.device)
        return r - (r * x).sum(dim=dims, keepdim=True) / (x * x).sum(dim=dims, keepdim=True).clamp_min(1e-30) * x

    first, second = candidate(0x5EED), candidate(0x5EED + 1)
    u = torch.where(_norm(first, dims) > 1e-3 * _norm(second, dims), first, second)
    return u / _norm(u, dims).clamp_min(1e-30)


def interpolate_embeddings(a: torch.Tensor, b: torch.Tensor, t: float | torch.Tensor, method: str = "slerp") -> torch.Tensor:
    """Prompt embeddings `(…, L, D)` between two prompts: per token along D (`slerp`, which keeps each token's
    norm, as text encoders' outputs are layer-normed), or `lerp` (what prompt travel does within a clip)."""
    if method == "lerp":
        if isinstance(t, torch.Tensor) and t.ndim == 1:
            return torch.lerp(a[None], b[None], t.reshape(-1, *[1] * a.ndim).to(a.dtype))
        return torch.lerp(a, b, float(t))
    if method != "slerp":
        raise VidldmError(f"embedding interpolation must be 'slerp' or 'lerp', got {method!r}")
    return slerp(a, b, t, dim=-1)
