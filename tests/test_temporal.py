"""Temporal building blocks: identity at init, AnimateDiff semantics, both GroupNorm modes."""

import pytest
import torch
import torch.nn.functional as F

from vidldm.models.temporal import (
    RelativePositionBias,
    SpatioTemporalTransformer,
    TemporalConvBlock,
    TemporalTransformer,
    attention,
    set_attention_backend,
    sinusoidal_positions,
)
from vidldm.models.tiny import randomize_


def animatediff_reference(m: TemporalTransformer, x: torch.Tensor, f: int) -> torch.Tensor:
    """AnimateDiff's original motion module written out with plain ops (per-frame GroupNorm)."""
    bf, c, h, w = x.shape
    b = bf // f
    hidden = F.group_norm(x, m.norm.num_groups, m.norm.weight, m.norm.bias, m.norm.eps)
    hidden = hidden.permute(0, 2, 3, 1).reshape(bf, h * w, c)
    hidden = F.linear(hidden, m.proj_in.weight, m.proj_in.bias)
    # "(b f) d c -> (b d) f c"
    hidden = hidden.reshape(b, f, h * w, c).permute(0, 2, 1, 3).reshape(b * h * w, f, c)
    for block in m.transformer_blocks:
        for attn, norm in zip(block.attention_blocks, block.norms):
            n = F.layer_norm(hidden, (c,), norm.weight, norm.bias) + attn.pos_encoder.pe[:, :f]
            heads = attn.heads
            q, k, v = (F.linear(n, p.weight).reshape(-1, f, heads, c // heads).transpose(1, 2) for p in (attn.to_q, attn.to_k, attn.to_v))
            scores = (q @ k.transpose(-1, -2)) / (c // heads) ** 0.5
            out = (scores.softmax(-1) @ v).transpose(1, 2).reshape(-1, f, c)
            hidden = F.linear(out, attn.to_out[0].weight, attn.to_out[0].bias) + hidden
        n = F.layer_norm(hidden, (c,), block.ff_norm.weight, block.ff_norm.bias)
        value, gate = F.linear(n, block.ff.net[0].proj.weight, block.ff.net[0].proj.bias).chunk(2, -1)
        hidden = F.linear(value * F.gelu(gate), block.ff.net[2].weight, block.ff.net[2].bias) + hidden
    hidden = F.linear(hidden, m.proj_out.weight, m.proj_out.bias)
    hidden = hidden.reshape(b, h * w, f, c).permute(0, 2, 1, 3).reshape(bf, h * w, c)
    return hidden.reshape(bf, h, w, c).permute(0, 3, 1, 2) + x


@pytest.mark.parametrize("norm_mode", ["per_frame", "per_clip"])
def test_fresh_transformer_is_identity(norm_mode):
    m = TemporalTransformer(32, max_seq_length=8, norm_mode=norm_mode)
    x = torch.randn(2 * 5, 32, 4, 3)
    assert torch.equal(m(x, num_frames=5), x)


def test_transformer_matches_original_animatediff_per_frame():
    torch.manual_seed(0)
    m = randomize_(TemporalTransformer(32, heads=8, num_layers=2, max_seq_length=8, norm_mode="per_frame"))
    x = torch.randn(2 * 6, 32, 3, 5) * 3 + 1
    torch.testing.assert_close(m(x, 6), animatediff_reference(m, x, 6), atol=1e-5, rtol=1e-5)


def test_per_clip_norm_uses_clip_statistics():
    torch.manual_seed(0)
    per_frame = randomize_(TemporalTransformer(32, max_seq_length=8, norm_mode="per_frame"))
    per_clip = TemporalTransformer(32, max_seq_length=8, norm_mode="per_clip")
    per_clip.load_state_dict(per_frame.state_dict())
    x = torch.randn(6, 32, 4, 4)
    x[3:] *= 5  # frames with very different statistics
    assert not torch.allclose(per_frame(x, 6), per_clip(x, 6), atol=1e-3)
    # Frames with identical statistics normalise identically either way.
    same = torch.randn(1, 32, 4, 4).repeat(6, 1, 1, 1)
    torch.testing.assert_close(per_frame(same, 6), per_clip(same, 6), atol=1e-5, rtol=1e-5)


def test_positions_are_animatediff_table():
    pe = sinusoidal_positions(32, 8)
    assert pe.shape == (1, 32, 8)
    assert torch.allclose(pe[0, 3, 0], torch.sin(torch.tensor(3.0)))
    assert torch.allclose(pe[0, 3, 1], torch.cos(torch.tensor(3.0)))


def test_temporal_conv_identity_then_mixes_frames():
    block = TemporalConvBlock(32, learned_mix=True)
    x = torch.randn(2 * 4, 32, 3, 3)
    assert torch.equal(block(x, 4), x)
    randomize_(block)
    y = block(x, 4)
    x2 = x.clone()
    x2[1] += 1  # frame 1 of clip 0 reaches the frames of its own clip only (the norm sees the clip)
    y2 = block(x2, 4)
    changed = [(y2[i] - y[i]).abs().max().item() > 1e-6 for i in range(8)]
    assert changed == [True] * 4 + [False] * 4


def test_xformers_backend_missing_names_package():
    pytest.importorskip("torch")
    try:
        import xformers  # noqa: F401
        pytest.skip("xformers installed")
    except ImportError:
        pass
    with pytest.raises(ImportError, match="pip install xformers"):
        set_attention_backend(TemporalTransformer(32), "xformers")
    with pytest.raises(ValueError, match="sdpa"):
        set_attention_backend(TemporalTransformer(32), "flash")


def test_spatiotemporal_transformer_is_identity_then_reaches_other_pixels_of_other_frames():
    fresh = SpatioTemporalTransformer(32, heads=4, norm_num_groups=8, cross_attention_dim=16)
    x, ctx = torch.randn(2 * 5, 32, 3, 4), torch.randn(2 * 5, 6, 16)
    assert torch.equal(fresh(x, 5, ctx), x)
    torch.manual_seed(0)
    st = randomize_(SpatioTemporalTransformer(32, heads=4, norm_num_groups=8, cross_attention_dim=16))
    moved = x.clone()
    moved[4, :, 2, 3] += 3.0  # clip 0, frame 4, pixel (2, 3)
    change = (st(moved, 5, ctx) - st(x, 5, ctx)).abs()
    assert change[0, :, 0, 0].max() > 1e-3  # frame 0, another pixel: attention reaches across space and time
    assert change[5:].max() == 0  # never across clips
    other = ctx.clone()
    other[:5] += 1.0  # the prompt of clip 0
    assert (st(x, 5, other) - st(x, 5, ctx))[:5].abs().max() > 1e-4


def test_relative_position_bias_depends_on_the_offset_only_and_matches_a_dense_mask():
    torch.manual_seed(0)
    bias = RelativePositionBias(heads=2, num_frequencies=3)
    for p in (bias.cos_weight, bias.sin_weight):
        torch.nn.init.normal_(p)
    frames, h, w = 3, 2, 4
    dense = bias(frames, h, w)  # (heads, N, N)

    def token(f, y, x):
        return (f * h + y) * w + x

    # the same offset (1 frame, 1 row, 2 columns) between two different pairs of tokens
    assert torch.allclose(dense[:, token(2, 1, 3), token(1, 0, 1)], dense[:, token(1, 1, 2), token(0, 0, 0)], atol=1e-5)
    # and not a symmetric one: "two columns to the left, a frame earlier" differs from "... later"
    assert not torch.allclose(dense[:, token(2, 1, 3), token(1, 0, 1)], dense[:, token(1, 0, 1), token(2, 1, 3)])
    q, k, v = (torch.randn(3, 2, frames * h * w, 8) for _ in range(3))
    reference = F.scaled_dot_product_attention(q, k, v, attn_mask=dense[None])
    assert torch.allclose(attention(q, k, v, position=bias.features(frames, h, w)), reference, atol=1e-5)


def test_relative_position_bias_can_pool_along_a_motion():
    """A head whose bias peaks on "one column to the left per frame earlier" copies the matching
    pixel of the previous frame: the motion-compensated lookup that "moving right" needs."""
    frames, h, w = 4, 1, 6
    bias = RelativePositionBias(heads=1, num_frequencies=1)
    with torch.no_grad():  # cos(k (dx - dt)) with a sharp gain: highest where dx == dt
        bias.frequencies.copy_(torch.tensor([[[-1.0, 0.0, 1.0]]]))
        bias.cos_weight.fill_(30.0 / bias.gain)
    weights = torch.softmax(bias(frames, h, w)[0], dim=-1)  # (N, N): row = query
    query, key = 2 * w + 3, 1 * w + 2  # frame 2, column 3 attends most to frame 1, column 2 (and its ray)
    ray = [f * w + 3 - (2 - f) for f in range(frames)]
    assert weights[query, ray].sum() > 0.99 and key in ray


def test_the_prompt_moves_the_position_bias_once_trained_and_not_before():
    torch.manual_seed(0)
    bias = RelativePositionBias(heads=2, num_frequencies=3, text_dim=16)
    torch.nn.init.normal_(bias.cos_weight)
    prompts = torch.randn(2, 16)
    fresh = bias(3, 2, 2, prompts)  # (2 prompts, heads, N, N)
    assert torch.allclose(fresh[0], bias(3, 2, 2)) and torch.allclose(fresh[1], bias(3, 2, 2))
    torch.nn.init.normal_(bias.text_proj.weight)
    trained = bias(3, 2, 2, prompts)
    assert (trained[0] - trained[1]).abs().max() > 1e-2
