"""SDXL's text conditioning: two CLIP encoders and the "text_time" embedding, as diffusers' SDXL pipelines build it.

    prompt --tokenizer   / text_encoder   (penultimate hidden state)--> (N, L, D1) --\
                                                                                       concat --> (N, L, D1 + D2)
    prompt --tokenizer_2 / text_encoder_2 (penultimate hidden state)--> (N, L, D2) --/
                                          (its projected pooled output) --> pooled (N, P)  "text_embeds"
    (original size, crop top-left, target size) --> time_ids (N, 6)                     "time_ids"

The UNet adds `add_embedding([pooled, sinusoid(time_ids)])` to its time embedding (`VideoUNet.forward`
passes `added_cond_kwargs` on, as diffusers' `UNetMotionModel` does). What diffusers' `AnimateDiffSDXLPipeline`
does here is followed exactly, so the same weights give the same frames.
"""

from __future__ import annotations

import torch

from vidldm.errors import ShapeError


def is_sdxl(unet_config) -> bool:
    """An SDXL-style UNet: it takes pooled text and size ids through `addition_embed_type="text_time"`."""
    return dict(unet_config).get("addition_embed_type") == "text_time"


@torch.no_grad()
def encode_sdxl(tokenizers, text_encoders, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """`N` strings -> token embeddings `(N, L, D1 + D2)` (both encoders' penultimate layers, concatenated) and
    the second encoder's pooled, projected output `(N, P)`."""
    states, pooled = [], None
    for tokenizer, encoder in zip(tokenizers, text_encoders):
        tokens = tokenizer(texts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                           return_tensors="pt")
        out = encoder(tokens.input_ids.to(encoder.device), output_hidden_states=True)
        if out[0].ndim == 2:  # the projecting encoder (the last one) returns its pooled output first
            pooled = out[0]
        states.append(out.hidden_states[-2])
    return torch.cat(states, dim=-1), pooled


def time_ids(unet_config, projection_dim: int, size: tuple[int, int], batch: int, dtype, device) -> torch.Tensor:
    """`(batch, 6)`: original size, crop top-left (0, 0) and target size, all the generated `size` (diffusers'
    defaults). Checked against the UNet's `add_embedding` input width, as diffusers checks it."""
    c = dict(unet_config)
    ids = [*size, 0, 0, *size]
    expected = c["projection_class_embeddings_input_dim"]
    got = c["addition_time_embed_dim"] * len(ids) + projection_dim
    if got != expected:
        raise ShapeError(f"the UNet's add_embedding takes {expected} values but the text encoder's projection "
                         f"({projection_dim}) and the size ids give {got}; the second text encoder is not this UNet's")
    return torch.tensor([ids], dtype=dtype, device=device).expand(batch, -1)


def check_parts(unet, text_encoder_2, tokenizer_2) -> None:
    """An SDXL UNet comes with the second text encoder and tokenizer, and only an SDXL UNet does."""
    if is_sdxl(unet.config) and (text_encoder_2 is None or tokenizer_2 is None):
        raise ShapeError("an SDXL UNet (addition_embed_type 'text_time') needs text_encoder_2 and tokenizer_2")
    if text_encoder_2 is not None and not is_sdxl(unet.config):
        raise ShapeError("text_encoder_2 was given but the UNet is not an SDXL UNet (addition_embed_type 'text_time')")
