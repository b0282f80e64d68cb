"""Temporal building blocks: layers that mix information across the frames of a clip.

Inside a video UNet the frames of a clip are folded into the batch, so every layer here takes
`x: ((B F), C, H, W)` plus `num_frames=F` and returns the same shape. Spatial layers never see
the frame axis; these layers are the only place frames talk to each other.

- `TemporalTransformer`: AnimateDiff's motion module. Attention runs over the F frames at
  every spatial location, i.e. on sequences of shape `((B H W), F, C)`.
- `TemporalConvBlock`: Video LDM / ModelScope style residual 3-D convolution over time.

A temporal transformer may also cross-attend to the text (`cross_attention_dim`, off in
AnimateDiff's layout): self-attention across frames alone only hears the prompt through the
spatial layers, which were trained on single frames where "moving left" and "moving right" look
alike, so motion words reach it faintly. Cross-attention gives every (frame, pixel) token the
frame's prompt directly, as VideoCrafter's temporal transformers can.

Both end in a zero-initialised projection, so a fresh layer is the identity and an image model
with fresh temporal layers produces exactly the frames it produced before.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

NormMode = Literal["per_frame", "per_clip"]
AttentionBackend = Literal["sdpa", "xformers"]


def sinusoidal_positions(length: int, dim: int) -> torch.Tensor:
    """Transformer sine/cosine table `(1, length, dim)`, the formula AnimateDiff and diffusers share."""
    position = torch.arange(length, dtype=torch.float32).unsqueeze(1)
    div_term = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    pe = torch.zeros(1, length, dim)
    pe[0, :, 0::2] = torch.sin(position * div_term)
    pe[0, :, 1::2] = torch.cos(position * div_term)
    return pe


class PositionalEncoding(nn.Module):
    """Adds frame positions to `(N, F, C)` sequences.

    `pe` is a persistent buffer because AnimateDiff checkpoints store it (`...pos_encoder.pe`)
    and its length is how a checkpoint tells us the clip length it was trained for.
    """

    def __init__(self, dim: int, max_seq_length: int = 32):
        super().__init__()
        self.register_buffer("pe", sinusoidal_positions(max_seq_length, dim))

    @property
    def max_seq_length(self) -> int:
        return self.pe.shape[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.pe[:, : x.shape[1]].to(x.dtype)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, backend: AttentionBackend = "sdpa",
              position: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """Multi-head attention on `(N, heads, L, d)` tensors, returning `(N, heads, L, d)`.

    `position` `(q_features, k_features)`, each `(heads, L, P)`, adds `q_features @ k_features.T` to the
    logits (a relative position bias, see `RelativePositionBias`). They are appended to q and k rather
    than passed as a dense `(heads, L, L)` mask: a mask that needs gradients sends PyTorch's CPU attention
    down its slow path (7x slower at 1024 tokens, measured), while a longer head is nearly free."""
    if position is not None:
        d = q.shape[-1]
        qf, kf = (t.to(q.dtype).expand(q.shape[0], *t.shape[-3:]) for t in position)  # (heads, L, P) or (N, heads, L, P)
        q = torch.cat([q, qf * math.sqrt(d)], dim=-1)  # undo the 1 / sqrt(d) scaling for the bias term
        k = torch.cat([k, kf], dim=-1)
        v = F.pad(v, (0, qf.shape[-1]))  # the fast kernels want v as long as q and k
        return F.scaled_dot_product_attention(q, k, v, scale=1 / math.sqrt(d))[..., :d]
    if backend == "xformers":
        try:
            import xformers.ops as xops
        except ImportError as err:  # optional accelerator: say which package gives it
            raise ImportError("attention backend 'xformers' needs the xformers package: pip install xformers") from err
        # xformers wants (N, L, heads, d)
        out = xops.memory_efficient_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        return out.transpose(1, 2)
    return F.scaled_dot_product_attention(q, k, v)


class SelfAttention(nn.Module):
    """Multi-head self-attention on `(N, L, C)`: no q/k/v bias, a biased output projection (AnimateDiff's
    and diffusers' layout, so their keys `to_q`, `to_k`, `to_v`, `to_out.0` load as they are)."""

    def __init__(self, dim: int, heads: int = 8):
        super().__init__()
        if dim % heads:
            raise ValueError(f"attention: {dim} channels do not split into {heads} heads")
        self.heads = heads
        self.backend: AttentionBackend = "sdpa"
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(dim, dim, bias=False)
        self.to_v = nn.Linear(dim, dim, bias=False)
        # A ModuleList keeps the checkpoint key `to_out.0` of AnimateDiff and diffusers.
        self.to_out = nn.ModuleList([nn.Linear(dim, dim), nn.Dropout(0.0)])
        # `fuse_projections`: [to_q; to_k; to_v] as one `(3 C, C)` matrix. Non-persistent, so checkpoint
        # keys are unchanged; used only without gradients, so training always sees the real layers.
        self.register_buffer("qkv_weight", None, persistent=False)

    def fuse_projections(self, fuse: bool = True) -> None:
        """Compute q, k and v with one matmul at inference (a snapshot of the weights: re-fuse after changing them)."""
        self.qkv_weight = torch.cat([self.to_q.weight, self.to_k.weight, self.to_v.weight]).detach() if fuse else None

    def forward(self, x: torch.Tensor, position: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """x `(N, L, C)`; position: `(q_features, k_features)` of a relative position bias (see `attention`)."""
        if self.qkv_weight is not None and not torch.is_grad_enabled():
            projected = F.linear(x, self.qkv_weight).chunk(3, dim=-1)
        else:
            projected = (self.to_q(x), self.to_k(x), self.to_v(x))
        q, k, v = (rearrange(t, "n l (h d) -> n h l d", h=self.heads) for t in projected)
        out = rearrange(attention(q, k, v, self.backend, position), "n h l d -> n l (h d)")
        return self.to_out[1](self.to_out[0](out))


class TemporalAttention(SelfAttention):
    """Self-attention across frames; AnimateDiff's `VersatileAttention` in "Temporal" mode.

    Input and output `(N, F, C)` with `N = B*H*W`, sinusoidal frame positions added to the (already
    normalised) input, as in AnimateDiff.
    """

    def __init__(self, dim: int, heads: int = 8, max_seq_length: int = 32):
        super().__init__(dim, heads)
        self.pos_encoder = PositionalEncoding(dim, max_seq_length)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(self.pos_encoder(x))


class GEGLU(nn.Module):
    """GELU-gated linear unit: `proj` makes value and gate in one matmul."""

    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out * 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        value, gate = self.proj(x).chunk(2, dim=-1)
        return value * F.gelu(gate)


class FeedForward(nn.Module):
    """GEGLU feed-forward with 4x hidden width; keys `net.0.proj` and `net.2` as in diffusers."""

    def __init__(self, dim: int, mult: int = 4):
        super().__init__()
        self.net = nn.ModuleList([GEGLU(dim, dim * mult), nn.Dropout(0.0), nn.Linear(dim * mult, dim)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.net:
            x = layer(x)
        return x


def text_cross_attention(dim: int, heads: int, cross_attention_dim: int | None) -> tuple[nn.Module | None, nn.Module | None]:
    """(attention, its pre-norm) reading text of width `cross_attention_dim`, or (None, None) without one.

    diffusers' `Attention`, so fused k/v projections and attention processors apply to it too."""
    if not cross_attention_dim:
        return None, None
    from diffusers.models.attention_processor import Attention

    attention = Attention(dim, cross_attention_dim=cross_attention_dim, heads=heads, dim_head=dim // heads,
                          bias=False, out_bias=True)
    return attention, nn.LayerNorm(dim)


class TemporalTransformerBlock(nn.Module):
    """Two pre-norm temporal self-attentions, optionally a text cross-attention, and a GEGLU
    feed-forward, on `(N, F, C)` with `N = B*H*W`."""

    def __init__(self, dim: int, heads: int = 8, max_seq_length: int = 32, num_attention_blocks: int = 2,
                 cross_attention_dim: int | None = None):
        super().__init__()
        self.attention_blocks = nn.ModuleList(
            [TemporalAttention(dim, heads, max_seq_length) for _ in range(num_attention_blocks)]
        )
        self.norms = nn.ModuleList([nn.LayerNorm(dim) for _ in range(num_attention_blocks)])
        self.text_attention, self.text_norm = text_cross_attention(dim, heads, cross_attention_dim)
        self.ff = FeedForward(dim)
        self.ff_norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None, size: tuple[int, int] | None = None) -> torch.Tensor:
        """x `((B H W), F, C)`; context `((B F), L, D)` text per frame, needed with a text attention;
        size `(H, W)` to unfold the pixels for it."""
        for attn, norm in zip(self.attention_blocks, self.norms):
            x = attn(norm(x)) + x
        if self.text_attention is not None:
            if context is None or size is None:
                raise ValueError("this temporal transformer cross-attends to text: pass the text context")
            h, w = size
            # Every (frame, pixel) token attends to its frame's prompt: one sequence per frame.
            tokens = rearrange(self.text_norm(x), "(b h w) f c -> (b f) (h w) c", h=h, w=w)
            out = self.text_attention(tokens, encoder_hidden_states=context)
            x = rearrange(out, "(b f) (h w) c -> (b h w) f c", f=x.shape[1], h=h, w=w) + x
        return self.ff(self.ff_norm(x)) + x


class TemporalTransformer(nn.Module):
    """AnimateDiff motion module: GroupNorm -> proj_in -> blocks -> zero-init proj_out -> residual.

    Takes and returns `((B F), C, H, W)`; attention sees `((B H W), F, C)`.

    `norm_mode` picks what the GroupNorm averages over, because the two lineages of weights
    were trained differently and each needs its own to reproduce its results:
    - `"per_frame"`: statistics of each frame alone. The original AnimateDiff code folds
      frames into the batch before its 2-D GroupNorm, so its checkpoints (v1/v2/v3) expect this.
    - `"per_clip"`: statistics over the whole clip (a GroupNorm on `(B, C, F, H, W)`), as
      diffusers' `AnimateDiffTransformer3D` computes; adapters trained with diffusers expect this.
    """

    def __init__(
        self,
        channels: int,
        heads: int = 8,
        num_layers: int = 1,
        max_seq_length: int = 32,
        norm_num_groups: int = 32,
        norm_mode: NormMode = "per_frame",
        zero_init: bool = True,
        cross_attention_dim: int | None = None,
    ):
        super().__init__()
        if norm_mode not in ("per_frame", "per_clip"):
            raise ValueError(f"norm_mode must be 'per_frame' or 'per_clip', got {norm_mode!r}")
        self.norm_mode = norm_mode
        self.norm = nn.GroupNorm(norm_num_groups, channels, eps=1e-6, affine=True)
        self.proj_in = nn.Linear(channels, channels)
        self.transformer_blocks = nn.ModuleList(
            [TemporalTransformerBlock(channels, heads, max_seq_length, cross_attention_dim=cross_attention_dim)
             for _ in range(num_layers)]
        )
        self.proj_out = nn.Linear(channels, channels)
        if zero_init:
            nn.init.zeros_(self.proj_out.weight)
            nn.init.zeros_(self.proj_out.bias)

    @property
    def max_seq_length(self) -> int:
        return self.transformer_blocks[0].attention_blocks[0].pos_encoder.max_seq_length

    def forward(self, x: torch.Tensor, num_frames: int, context: torch.Tensor | None = None) -> torch.Tensor:
        """x `((B F), C, H, W)`; context `((B F), L, D)`, used when the blocks cross-attend to text."""
        h, w = x.shape[-2:]
        residual = x
        if self.norm_mode == "per_clip":
            x = self.norm(rearrange(x, "(b f) c h w -> b c f h w", f=num_frames))
            x = rearrange(x, "b c f h w -> (b h w) f c")
        else:
            x = rearrange(self.norm(x), "(b f) c h w -> (b h w) f c", f=num_frames)
        x = self.proj_in(x)
        for block in self.transformer_blocks:
            x = block(x, context, (h, w))
        x = self.proj_out(x)
        return rearrange(x, "(b h w) f c -> (b f) c h w", h=h, w=w) + residual


def spatiotemporal_positions(frames: int, height: int, width: int, dim: int) -> torch.Tensor:
    """`(F*H*W, dim)` sine/cosine codes: half the channels for the frame, a quarter each for row and column.

    Concatenated rather than summed, so "two frames later" and "two rows lower" stay distinguishable."""
    if dim % 8:
        raise ValueError(f"spatio-temporal positions need channels divisible by 8, got {dim}")
    t = sinusoidal_positions(frames, dim // 2)[0]
    y = sinusoidal_positions(height, dim // 4)[0]
    x = sinusoidal_positions(width, dim // 4)[0]
    return torch.cat([
        t[:, None, None].expand(frames, height, width, -1),
        y[None, :, None].expand(frames, height, width, -1),
        x[None, None, :].expand(frames, height, width, -1),
    ], dim=-1).reshape(frames * height * width, dim)


class RelativePositionBias(nn.Module):
    """A learned attention-logit bias per head as a function of the (frame, row, column) offset between two
    tokens, in Fourier form: `bias_h(d) = sum_j a_hj cos(w_hj . d) + b_hj sin(w_hj . d)` with learned 3-D
    frequencies `w`, optionally moved by the prompt. Zero-initialised (plain attention). Why a bias along rays in
    space-time, and the `gain`: docs/shapes-model.md#spatio-temporal-attention.
    """

    gain = 8.0

    def __init__(self, heads: int, num_frequencies: int = 4, text_dim: int | None = None):
        super().__init__()
        self.heads, self.num_frequencies = heads, num_frequencies
        # Periods of a few frames or cells: the scale of the motions a clip's coarse levels see.
        self.frequencies = nn.Parameter(torch.randn(heads, num_frequencies, 3) * 0.5)
        self.cos_weight = nn.Parameter(torch.zeros(heads, num_frequencies))
        self.sin_weight = nn.Parameter(torch.zeros(heads, num_frequencies))
        # With `text_dim`, the prompt moves the weights: "moving right" can switch on the heads whose rays
        # go right. Zero-initialised, so the bias starts as the prompt-free one.
        self.text_proj = None
        if text_dim:
            self.text_norm = nn.LayerNorm(text_dim, elementwise_affine=False)
            self.text_proj = nn.Linear(text_dim, 2 * heads * num_frequencies)
            nn.init.zeros_(self.text_proj.weight)
            nn.init.zeros_(self.text_proj.bias)

    def weights(self, text: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(a, b), each `(heads, 1, J)`, or `(B, heads, 1, J)` for a pooled prompt `text` `(B, D)`."""
        a, b = self.cos_weight.float(), self.sin_weight.float()
        if self.text_proj is not None and text is not None:
            shift = self.text_proj(self.text_norm(text)).float().view(-1, 2, self.heads, self.num_frequencies)
            a, b = a + shift[:, 0], b + shift[:, 1]
        return self.gain * a.unsqueeze(-2), self.gain * b.unsqueeze(-2)

    def features(self, frames: int, height: int, width: int, text: torch.Tensor | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """`(q_features, k_features)`: `([B,] heads, F*H*W, 2 J)` and `(heads, F*H*W, 2 J)`, tokens in `(f h w)`
        order; the query features have a batch axis when a pooled prompt `text` `(B, D)` is given."""
        device = self.frequencies.device
        grid = torch.stack(torch.meshgrid(torch.arange(frames, device=device), torch.arange(height, device=device),
                                          torch.arange(width, device=device), indexing="ij"), dim=-1)
        phase = torch.einsum("nk,hjk->hnj", grid.reshape(-1, 3).float(), self.frequencies.float())
        cos, sin = phase.cos(), phase.sin()
        a, b = self.weights(text)
        # (a cos p + b sin p) cos p' + (a sin p - b cos p) sin p' = a cos(p - p') + b sin(p - p')
        q = torch.cat([a * cos + b * sin, a * sin - b * cos], dim=-1)
        return q, torch.cat([cos, sin], dim=-1)

    def forward(self, frames: int, height: int, width: int, text: torch.Tensor | None = None) -> torch.Tensor:
        """The bias itself, `([B,] heads, N, N)` with `N = F*H*W` (for inspection; attention uses `features`)."""
        q, k = self.features(frames, height, width, text)
        return q @ k.transpose(-1, -2)


class SpatioTemporalTransformer(nn.Module):
    """Full attention over every (frame, row, column) token of a clip, for the coarsest UNet levels.

    Takes and returns `((B F), C, H, W)`; attention sees `(B, (F H W), C)` with a 3-D relative position
    bias (`RelativePositionBias`, moved by the clip's pooled prompt) and absolute sine/cosine codes, and
    a text cross-attention reads all frames' prompts `(B, (F L), D)`. Zero-initialised output, so a new
    one is the identity. It lets content move sideways, which attention at one pixel across frames cannot
    (measured, and why: docs/shapes-model.md#spatio-temporal-attention). Quadratic in F*H*W.
    """

    def __init__(self, channels: int, heads: int = 8, norm_num_groups: int = 32, cross_attention_dim: int | None = None):
        super().__init__()
        self.norm = nn.GroupNorm(norm_num_groups, channels, eps=1e-6, affine=True)
        self.proj_in = nn.Linear(channels, channels)
        self.attn_norm = nn.LayerNorm(channels)
        self.attention = SelfAttention(channels, heads)
        self.position_bias = RelativePositionBias(heads, text_dim=cross_attention_dim)
        self.text_attention, self.text_norm = text_cross_attention(channels, heads, cross_attention_dim)
        self.ff = FeedForward(channels)
        self.ff_norm = nn.LayerNorm(channels)
        self.proj_out = nn.Linear(channels, channels)
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)

    def forward(self, x: torch.Tensor, num_frames: int, context: torch.Tensor | None = None) -> torch.Tensor:
        """x `((B F), C, H, W)`; context `((B F), L, D)`, needed with a text attention."""
        h, w = x.shape[-2:]
        residual = x
        x = rearrange(self.proj_in(rearrange(self.norm(x), "bf c h w -> bf h w c")),
                      "(b f) h w c -> b (f h w) c", f=num_frames)
        x = x + spatiotemporal_positions(num_frames, h, w, x.shape[-1]).to(x)[None]
        text = pooled = None
        if self.text_attention is not None:
            if context is None:
                raise ValueError("this spatio-temporal transformer cross-attends to text: pass the text context")
            text = rearrange(context, "(b f) l d -> b (f l) d", f=num_frames)
            pooled = text.mean(dim=1)  # (B, D): the clip's prompt, for the position bias
        x = self.attention(self.attn_norm(x), self.position_bias.features(num_frames, h, w, pooled)) + x
        if text is not None:
            x = self.text_attention(self.text_norm(x), encoder_hidden_states=text) + x
        x = self.proj_out(self.ff(self.ff_norm(x)) + x)
        return rearrange(x, "b (f h w) c -> (b f) c h w", f=num_frames, h=h, w=w) + residual


class TemporalConvBlock(nn.Module):
    """Residual temporal convolution (Video LDM / ModelScope): `num_layers` x (GroupNorm, SiLU, Conv3d (3,1,1)).

    Takes and returns `((B F), C, H, W)`; the convolutions see `(B, C, F, H, W)` and mix each
    pixel with its neighbours in time only. The last conv starts at zero, so the block is the
    identity until trained. With `learned_mix`, the output is Video LDM's
    `alpha * spatial + (1 - alpha) * temporal` with `alpha = sigmoid(mix_factor)` learned.
    """

    def __init__(
        self,
        channels: int,
        num_layers: int = 2,
        norm_num_groups: int = 32,
        learned_mix: bool = False,
        zero_init: bool = True,
    ):
        super().__init__()
        self.layers = nn.ModuleList(
            [
                nn.Sequential(
                    nn.GroupNorm(norm_num_groups, channels, eps=1e-6),
                    nn.SiLU(),
                    nn.Conv3d(channels, channels, kernel_size=(3, 1, 1), padding=(1, 0, 0)),
                )
                for _ in range(num_layers)
            ]
        )
        if zero_init:
            nn.init.zeros_(self.layers[-1][-1].weight)
            nn.init.zeros_(self.layers[-1][-1].bias)
        # While the last conv is zero the temporal branch equals the spatial input, so any alpha is
        # an identity; alpha starts at sigmoid(0) = 0.5 so both branches get gradient from step one.
        self.mix_factor = nn.Parameter(torch.zeros(())) if learned_mix else None

    def forward(self, x: torch.Tensor, num_frames: int) -> torch.Tensor:
        # contiguous: PyTorch's CPU Conv3d backward segfaults on some permuted layouts (seen with 2.13
        # on channels-last-like VAE latents); one copy of the activations is cheap insurance.
        spatial = rearrange(x, "(b f) c h w -> b c f h w", f=num_frames).contiguous()
        h = spatial
        for layer in self.layers:
            h = layer(h)
        h = spatial + h
        if self.mix_factor is not None:
            alpha = torch.sigmoid(self.mix_factor)
            h = alpha * spatial + (1 - alpha) * h
        return rearrange(h, "b c f h w -> (b f) c h w")


def set_attention_backend(module: nn.Module, backend: AttentionBackend) -> None:
    """Route every temporal and spatio-temporal self-attention under `module` through `backend` ("sdpa" or "xformers")."""
    if backend not in ("sdpa", "xformers"):
        raise ValueError(f"attention backend must be 'sdpa' or 'xformers', got {backend!r}")
    if backend == "xformers":
        try:
            import xformers.ops  # noqa: F401
        except ImportError as err:
            raise ImportError("attention backend 'xformers' needs the xformers package: pip install xformers") from err
    for m in module.modules():
        if isinstance(m, SelfAttention):
            m.backend = backend
