"""Prompts to token embeddings, for sampling and training alike."""

from __future__ import annotations

import torch


@torch.no_grad()
def encode_text(tokenizer, text_encoder, texts: list[str], device: torch.device | None = None) -> torch.Tensor:
    """`N` strings -> token embeddings `(N, L, D)`, padded to the tokenizer's length: any transformers encoder
    whose first output is the per-token hidden state (CLIP for Stable Diffusion, a BERT-style encoder for the
    shipped model). `device`: where the encoder runs, if not where its weights are (offloaded weights sit on
    "meta" or the CPU until the encoder's hooks load them)."""
    tokens = tokenizer(texts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                       return_tensors="pt")
    return text_encoder(tokens.input_ids.to(device or text_encoder.device))[0]
