"""FreeInit (Wu et al. 2023, arXiv 2312.07537): sample, then restart from noise that keeps the result's low frequencies.

A clip sampled from pure noise takes its layout and motion from the noise's low spatio-temporal frequencies,
which at inference (unlike in training) carry no signal: frames drift and flicker. FreeInit runs the sampler
`num_iters` times; after each run the clean latents are diffused back to the last timestep with the first
run's noise, and their low frequencies (a 3-D FFT over frames, height and width) are kept while the high ones
are drawn afresh. The pipeline iterates its one loop (`sampling.denoise`); this module only makes the
restart latents. Same names, defaults and arithmetic as diffusers' `FreeInitMixin`, so outputs match it.

Layouts: latents `(B, C, F, h, w)`; filter `(F, h, w)`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

METHODS = ("butterworth", "ideal", "gaussian")
MAX_ITERS = 10  # each iteration is a whole sampling run; the paper uses up to 5


@dataclass(frozen=True)
class FreeInit:
    """diffusers' `enable_free_init` arguments. `use_fast_sampling`: coarse-to-fine, iteration i of n runs
    `steps * (i + 1) / n` steps. `order`: the Butterworth filter's; stop frequencies are normalised to [0, 1]."""

    num_iters: int = 3
    use_fast_sampling: bool = False
    method: str = "butterworth"
    order: int = 4
    spatial_stop_frequency: float = 0.25
    temporal_stop_frequency: float = 0.25

    def __post_init__(self):
        if isinstance(self.num_iters, bool) or not isinstance(self.num_iters, int) or not 1 <= self.num_iters <= MAX_ITERS:
            raise ValueError(f"free_init (iterations) must be a whole number between 1 and {MAX_ITERS}, got {self.num_iters}")
        if self.method not in METHODS:
            raise ValueError(f"free_init_method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if isinstance(self.order, bool) or not isinstance(self.order, int) or self.order < 1:
            raise ValueError(f"free_init_order must be a whole number of at least 1, got {self.order}")
        for name in ("spatial_stop_frequency", "temporal_stop_frequency"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"free_init_{name} must be between 0 and 1, got {getattr(self, name)}")

    def steps(self, num_inference_steps: int, iteration: int) -> int:
        """Steps of iteration `iteration` (0-based)."""
        if not self.use_fast_sampling:
            return num_inference_steps
        return max(1, int(num_inference_steps / self.num_iters * (iteration + 1)))

    def restart(self, latents: torch.Tensor, initial_noise: torch.Tensor, scheduler, generator=None,
                noise_prior: tuple[str, float] = ("independent", 0.0)) -> torch.Tensor:
        """Latents `(B, C, F, h, w)` to start the next iteration from: `latents` (the last run's result) noised to
        the last training timestep with `initial_noise`, low frequencies kept, high ones from new noise, drawn with
        the model's `noise_prior` (`vidldm.noise_prior`: a model trained on correlated noise gets it here too)."""
        from diffusers.utils.torch_utils import randn_tensor

        from vidldm.noise_prior import correlate

        t = torch.full((latents.shape[0],), scheduler.config.num_train_timesteps - 1, dtype=torch.long)
        z_t = scheduler.add_noise(latents, initial_noise, t.to(latents.device)).to(torch.float32)
        fresh = correlate(randn_tensor(latents.shape, generator=generator, device=latents.device, dtype=torch.float32),
                          *noise_prior)
        low_pass = low_pass_filter(latents.shape[-3:], self.method, self.order, self.spatial_stop_frequency,
                                   self.temporal_stop_frequency, device=latents.device)
        return mix_frequencies(z_t, fresh, low_pass).to(latents.dtype)


def low_pass_filter(shape: tuple[int, int, int], method: str, order: int, spatial_stop: float, temporal_stop: float,
                    device=None) -> torch.Tensor:
    """`(F, h, w)` low-pass mask over centred (fftshift) frequencies, as diffusers' `_get_free_init_freq_filter`
    (computed in float64 as its Python floats are, then float32); all zero if a stop frequency is 0."""
    f, h, w = shape
    if spatial_stop == 0 or temporal_stop == 0:
        return torch.zeros(shape, device=device)
    ft = (spatial_stop / temporal_stop) * (2 * torch.arange(f, dtype=torch.float64) / f - 1)
    fh = 2 * torch.arange(h, dtype=torch.float64) / h - 1
    fw = 2 * torch.arange(w, dtype=torch.float64) / w - 1
    d_square = ft[:, None, None] ** 2 + fh[None, :, None] ** 2 + fw[None, None, :] ** 2
    if method == "butterworth":
        mask = 1 / (1 + (d_square / spatial_stop**2) ** order)
    elif method == "gaussian":
        mask = torch.exp(-1 / (2 * spatial_stop**2) * d_square)
    else:  # ideal (diffusers compares the squared distance with 2 d_s; kept for equal outputs)
        mask = (d_square <= spatial_stop * 2).to(torch.float64)
    return mask.to(device=device, dtype=torch.float32)


def mix_frequencies(x: torch.Tensor, noise: torch.Tensor, low_pass: torch.Tensor) -> torch.Tensor:
    """`x`'s frequencies under `low_pass` `(F, h, w)` and `noise`'s above it; both `(..., F, h, w)`."""
    dims = (-3, -2, -1)
    x_freq = torch.fft.fftshift(torch.fft.fftn(x, dim=dims), dim=dims)
    noise_freq = torch.fft.fftshift(torch.fft.fftn(noise, dim=dims), dim=dims)
    mixed = x_freq * low_pass + noise_freq * (1 - low_pass)
    return torch.fft.ifftn(torch.fft.ifftshift(mixed, dim=dims), dim=dims).real
