"""Fast paths for inference: fused q/k/v projections, channels-last memory, regional `torch.compile`.

Each is a switch that changes how the numbers are computed, not which numbers: the tests hold
every path to the plain fp32 one (latents after 25 steps within cosine similarity 0.999), and
none of them changes a checkpoint key, so `save_pretrained` writes the same files either way.

- `fuse_qkv_projections(module)`: every attention computes q, k and v with one matmul (k and v
  for cross-attention, whose q comes from another input). The concatenated weights are kept as
  *non-persistent* buffers, so state dicts keep `to_q/to_k/to_v`; they are a snapshot, taken at
  fusion: re-fuse after loading or changing weights. With gradients enabled (training) the
  plain projections run, so the fused copy can never go stale under an optimizer.
- channels-last: `module.to(memory_format=torch.channels_last)` (a torch one-liner, used by
  `VideoPipeline.enable_fast_paths`). Convolutions prefer it on GPUs, and the temporal layers'
  `((B F), C, H, W) -> ((B H W), F, C)` rearrange then moves whole contiguous channel rows.
- `compile_regions(module)`: `torch.compile` each repeated block (resnets, spatial
  transformers, motion modules, resamplers, the VAE's attention) in place, instead of the whole
  UNet. Blocks of the same type and shape share one compiled graph, so warm-up compiles a few
  dozen small graphs, not one huge one, and the Python glue between blocks (the UNet walk,
  context windows, the sampler) stays eager and free to branch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention, AttnProcessor2_0
from einops import rearrange
from torch import nn

from vidldm.models.temporal import SelfAttention

# Blocks that `compile_regions` compiles, by class name (diffusers' and vidldm's). The UNet and VAE
# repeat these with a handful of shapes; everything between them is cheap Python.
REGION_TYPES = ("ResnetBlock2D", "Transformer2DModel", "MotionModule", "Downsample2D", "Upsample2D", "Attention")
# Every region compiled with `nn.Module.compile` shares the cache of `nn.Module._call_impl`, one entry
# per (block type, shape); torch's default of 8 entries would silently leave most blocks eager.
RECOMPILE_LIMIT = 128


# ----------------------------------------------------------------------------- fused q/k/v

class FusedAttnProcessor:
    """A diffusers `Attention` processor: SDPA with q/k/v (self-attention) or k/v (cross-attention)
    from one matmul on the fused weights that `fuse_qkv_projections` stored on the module.

    hidden_states `(N, L, C)`; encoder_hidden_states `(N, S, D)` or None; returns `(N, L, C)`.
    Anything outside the plain Stable Diffusion case (masks, group/spatial norms, q/k norms,
    4-D inputs, gradients enabled) goes through diffusers' own `AttnProcessor2_0`, unchanged.
    """

    def __init__(self):
        self.plain = AttnProcessor2_0()

    def __call__(self, attn: Attention, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None, *args, **kwargs):
        weight = getattr(attn, "fused_weight", None)
        cross = encoder_hidden_states is not None
        if (weight is None or torch.is_grad_enabled() or attention_mask is not None or hidden_states.ndim != 3
                or cross != attn.is_cross_attention or attn.norm_cross or attn.spatial_norm is not None
                or attn.group_norm is not None or attn.norm_q is not None or attn.norm_k is not None):
            return self.plain(attn, hidden_states, encoder_hidden_states, attention_mask, temb, *args, **kwargs)
        if cross:  # q from the frames; k and v from the text, in one matmul
            q = attn.to_q(hidden_states)
            k, v = F.linear(encoder_hidden_states, weight, attn.fused_bias).chunk(2, dim=-1)
        else:
            q, k, v = F.linear(hidden_states, weight, attn.fused_bias).chunk(3, dim=-1)
        q, k, v = (rearrange(t, "n l (h d) -> n h l d", h=attn.heads) for t in (q, k, v))
        out = rearrange(F.scaled_dot_product_attention(q, k, v), "n h l d -> n l (h d)")
        out = attn.to_out[1](attn.to_out[0](out))
        if attn.residual_connection:
            out = out + hidden_states
        return out / attn.rescale_output_factor


def _fused(layers: list[nn.Linear]) -> tuple[torch.Tensor, torch.Tensor | None]:
    weight = torch.cat([m.weight.detach() for m in layers])
    bias = None if layers[0].bias is None else torch.cat([m.bias.detach() for m in layers])
    return weight, bias


@torch.no_grad()
def fuse_qkv_projections(module: nn.Module) -> int:
    """Fuse the projections of every attention under `module` (spatial and temporal); returns how many.

    Attentions whose projections are not plain `nn.Linear` (a LoRA wrapper, for one) are left alone.
    """
    count = 0
    for m in module.modules():
        if isinstance(m, SelfAttention):
            if not all(type(getattr(m, n)) is nn.Linear for n in ("to_q", "to_k", "to_v")):
                continue  # a LoRA wrapper: a snapshot of the base weights would drop the LoRA
            m.fuse_projections(True)
            count += 1
        elif isinstance(m, Attention):
            if hasattr(m.processor, "to_k_ip"):
                continue  # an IP-Adapter processor: it attends to image tokens too, which the fused path has no place for
            names = ("to_k", "to_v") if m.is_cross_attention else ("to_q", "to_k", "to_v")
            layers = [getattr(m, n) for n in names]
            if not all(type(layer) is nn.Linear for layer in layers) or (
                    len({layer.bias is None for layer in layers}) > 1):
                continue
            weight, bias = _fused(layers)
            m.register_buffer("fused_weight", weight, persistent=False)
            m.register_buffer("fused_bias", bias, persistent=False)
            if not isinstance(m.processor, FusedAttnProcessor):
                m.plain_processor = m.processor  # restored by unfuse_qkv_projections
                m.set_processor(FusedAttnProcessor())
            count += 1
    return count


def unfuse_qkv_projections(module: nn.Module) -> int:
    """Undo `fuse_qkv_projections`: drop the fused copies and restore the attention processors."""
    count = 0
    for m in module.modules():
        if isinstance(m, SelfAttention) and m.qkv_weight is not None:
            m.fuse_projections(False)
            count += 1
        elif isinstance(m, Attention) and getattr(m, "fused_weight", None) is not None:
            del m.fused_weight, m.fused_bias
            m.set_processor(m.__dict__.pop("plain_processor", AttnProcessor2_0()))
            count += 1
    return count


# ----------------------------------------------------------------------------- regional compile

def compile_regions(module: nn.Module, **compile_kwargs) -> int:
    """`torch.compile` every block of `REGION_TYPES` under `module` in place; returns how many.

    The outermost matching block is compiled (a spatial transformer, not also the attention inside
    it); parameters and state-dict keys stay where they were (`nn.Module.compile`).
    `compile_kwargs` go to `torch.compile` (`mode`, `dynamic`, `fullgraph`, `backend`).
    """
    import torch._dynamo

    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, RECOMPILE_LIMIT)
    count = 0

    def visit(m: nn.Module) -> None:
        nonlocal count
        if type(m).__name__ in REGION_TYPES:
            m.compile(**compile_kwargs)
            count += 1
            return
        for child in m.children():
            visit(child)

    visit(module)
    return count


def uncompile_regions(module: nn.Module) -> int:
    """Undo `compile_regions`: the blocks run eagerly again; returns how many were compiled."""
    count = 0
    for m in module.modules():
        if getattr(m, "_compiled_call_impl", None) is not None:
            m._compiled_call_impl = None
            count += 1
    return count


def is_channels_last(module: nn.Module) -> bool:
    """Whether the 4-D weights (convolutions) of `module` are stored channels-last."""
    convs = [p for p in module.parameters() if p.ndim == 4]
    return bool(convs) and all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)
