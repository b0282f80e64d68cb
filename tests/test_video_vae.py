"""VideoVAE: chunked = unchunked, latents scaled like the image pipeline, temporal decoder starts as identity."""

import pytest
import torch

from tests.conftest import fold
from vidldm.errors import ShapeError
from vidldm.models import TemporalDecoder, VideoVAE
from vidldm.models.tiny import randomize_


def video(b=2, f=5, seed=0):
    return torch.rand(b, 3, f, 32, 32, generator=torch.Generator().manual_seed(seed)) * 2 - 1


@torch.no_grad()
def test_chunked_equals_unchunked(vae):
    x = video()
    whole, chunked = VideoVAE(vae, chunk_size=None), VideoVAE(vae, chunk_size=2)
    z = whole.encode(x)
    assert z.shape == (2, 4, 5, 16, 16)
    torch.testing.assert_close(chunked.encode(x), z, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(chunked.decode(z), whole.decode(z), atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_latents_are_scaled_image_latents(vae):
    x = video(b=1, f=3)
    z = VideoVAE(vae).encode(x)
    image = vae.encode(fold(x)).latent_dist.mode() * vae.config.scaling_factor
    torch.testing.assert_close(fold(z), image, atol=1e-5, rtol=1e-5)
    decoded = VideoVAE(vae).decode(z)
    torch.testing.assert_close(fold(decoded), vae.decode(image / vae.config.scaling_factor).sample, atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_zero_init_temporal_decoder_equals_image_decoder(vae):
    z = VideoVAE(vae).encode(video())
    plain = VideoVAE(vae, chunk_size=None).decode(z)
    td = TemporalDecoder.from_vae_config(vae.config)
    temporal = VideoVAE(vae, chunk_size=None, temporal_decoder=td)
    torch.testing.assert_close(temporal.decode(z), plain, atol=1e-5, rtol=1e-5)
    # once trained (random here) the decoder mixes frames: a change in frame 0 reaches frame 1
    randomize_(td, std=0.02)
    z2 = z.clone()
    z2[:, :, 0] += 1
    a, b = temporal.decode(z), temporal.decode(z2)
    assert (a[:, :, 1] - b[:, :, 1]).abs().max() > 1e-4
    assert set(vae.state_dict()).isdisjoint(td.state_dict())  # temporal layers are saved on their own
    # its temporal layers see the whole clip whatever the chunk size: a chunk's edge would be a seam in time
    torch.testing.assert_close(VideoVAE(vae, chunk_size=2, temporal_decoder=td).decode(z2), b, atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_known_frames_skip_the_temporal_decoder(vae):
    """`keep` (the frames a user gave) come from the image decoder alone; the rest from the temporal decoder."""
    z = VideoVAE(vae).encode(video())
    td = TemporalDecoder.from_vae_config(vae.config)
    randomize_(td, std=0.05)
    plain, temporal = VideoVAE(vae).decode(z), VideoVAE(vae, temporal_decoder=td).decode(z)
    kept = VideoVAE(vae, temporal_decoder=td).decode(z, keep=[3, 0, 0])
    torch.testing.assert_close(kept[:, :, [0, 3]], plain[:, :, [0, 3]], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(kept[:, :, [1, 2, 4]], temporal[:, :, [1, 2, 4]], atol=1e-5, rtol=1e-5)
    assert (temporal[:, :, 0] - plain[:, :, 0]).abs().max() > 1e-3  # the decoder did change frame 0
    torch.testing.assert_close(VideoVAE(vae).decode(z, keep=[0]), plain)  # no temporal decoder: nothing to skip


@torch.no_grad()
def test_sampled_encoding_is_seeded(vae):
    x = video(b=1, f=2)
    a = VideoVAE(vae).encode(x, generator=torch.Generator().manual_seed(1), sample=True)
    b = VideoVAE(vae).encode(x, generator=torch.Generator().manual_seed(1), sample=True)
    assert torch.equal(a, b)
    assert not torch.equal(a, VideoVAE(vae).encode(x))


def test_bad_inputs(vae):
    v = VideoVAE(vae)
    with pytest.raises(ShapeError, match=r"\(B, 3, F, H, W\)"):
        v.encode(torch.zeros(1, 3, 32, 32))
    with pytest.raises(ShapeError, match="multiples of 2"):
        v.encode(torch.zeros(1, 3, 2, 33, 32))
    with pytest.raises(ShapeError, match=r"\(B, 4, F, h, w\)"):
        v.decode(torch.zeros(1, 3, 2, 8, 8))
    with pytest.raises(ValueError, match="chunk_size"):
        VideoVAE(vae, chunk_size=0)


def test_temporal_decoder_backward_on_strided_latents(vae):
    """Regression: latents laid out channels-last (as the VAE's posterior mean comes out) crashed
    PyTorch's CPU Conv3d backward inside the temporal layers."""
    td = TemporalDecoder.from_vae_config(vae.config)
    latents = torch.randn(2, 4, 8, 8, 4).permute(0, 4, 1, 2, 3)  # (B, C, F, h, w) with C fastest in memory
    VideoVAE(vae, chunk_size=None, temporal_decoder=td).decode(latents).pow(2).mean().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in td.parameters())
