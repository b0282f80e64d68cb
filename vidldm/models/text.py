"""Prompts to token embeddings, for sampling and training alike."""

from __future__ import annotations

import torch


@torch.no_grad()
def encode_text(tokenizer, text_encoder, texts: list[str]) -> torch.Tensor:
    """`N` strings -> token embeddings `(N, L, D)`, padded to the tokenizer's length: any transformers encoder
    whose first output is the per-token hidden state (CLIP for Stable Diffusion, a BERT-style encoder for the
    shipped model)."""
    tokens = tokenizer(texts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                       return_tensors="pt")
    return text_encoder(tokens.input_ids.to(text_encoder.device))[0]
