"""How far does the frozen text encoder carry the motion of a prompt said in other words? A probe, not the model.

    python scripts/probe_text_motion.py

The shapes model reads its prompts through all-MiniLM-L6-v2's token states, `(16, 384)` a prompt, exactly as
`vidldm.models.text.encode_text` gives them to the UNet. A small probe is trained to tell the seven motions
apart from those states and is then asked about the held-out wordings of the evaluation's paraphrased row
(`vidldm.eval.paraphrase`, words no training caption uses). The probe is an attention pool (4 learned queries over
the 16 token states, as a cross-attention reads them) and a linear layer: if it names the held-out motions, the
encoder's states hold them and a model could learn to read them; if not, no training of the video model can.

Three probes: one trained on the fixed captions (7 motion phrases), one on the varied training wordings of
`vidldm.data.wordings` (what `make-shapes --wordings varied` writes), one on its rich wordings (`--wordings rich`),
drawn at random to as many captions as the varied set makes (so the two differ in variety, not in number). Also
printed: the nearest fixed caption by the encoder's own sentence embedding (mean of the token states over the
words, cosine), which needs no training.
Every colour, shape and background of the shapes set (7,728 held-out captions); seeded, about 9 CPU minutes.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F

from vidldm.builtins import minilm_text_encoder
from vidldm.data.shapes import BACKGROUNDS, COLOURS, MOTIONS, SHAPES
from vidldm.data.wordings import RICH_FRAMES, RICH_SYNONYMS, TRAINING_FRAMES, TRAINING_SYNONYMS
from vidldm.eval.paraphrase import FRAMES, SYNONYMS
from vidldm.models.text import encode_text

FIXED = {motion: (motion,) for motion in MOTIONS}


def captions(words: dict[str, tuple[str, ...]], frames: tuple[str, ...]) -> tuple[list[str], torch.Tensor]:
    """Every caption the wordings make, with its motion's index."""
    texts, labels = [], []
    for colour, shape, background in itertools.product(COLOURS, SHAPES, BACKGROUNDS):
        if colour == background:
            continue
        for label, motion in enumerate(MOTIONS):
            for word, frame in itertools.product(words[motion], frames):
                texts.append(frame.format(colour=colour, shape=shape, motion=word, background=background))
                labels.append(label)
    return texts, torch.tensor(labels)


class AttentionPool(torch.nn.Module):
    """Token states `(N, L, D)` -> motion logits `(N, 7)`: `heads` learned queries attend over the tokens."""

    def __init__(self, dim: int, heads: int = 4):
        super().__init__()
        self.queries = torch.nn.Parameter(torch.randn(heads, dim) * 0.01)
        self.out = torch.nn.Linear(heads * dim, len(MOTIONS))

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        weights = torch.einsum("nld,hd->nhl", states, self.queries).softmax(dim=-1)
        return self.out(torch.einsum("nhl,nld->nhd", weights, states).flatten(1))


def probe(states: torch.Tensor, labels: torch.Tensor, held_out: torch.Tensor, held_labels: torch.Tensor) -> tuple[float, float]:
    """(training accuracy, held-out accuracy) of an attention pool trained on `states`."""
    torch.manual_seed(0)
    model = AttentionPool(states.shape[-1])
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(400):
        loss = F.cross_entropy(model(states), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        return ((model(states).argmax(1) == labels).float().mean().item(),
                (model(held_out).argmax(1) == held_labels).float().mean().item())


def main() -> None:
    tokenizer, encoder = minilm_text_encoder()
    encoder.eval()

    def states(texts: list[str]) -> torch.Tensor:
        return torch.cat([encode_text(tokenizer, encoder, texts[i : i + 512]) for i in range(0, len(texts), 512)])

    held_texts, held_labels = captions(SYNONYMS, FRAMES)
    held = states(held_texts)
    fixed_texts, fixed_labels = captions(FIXED, TRAINING_FRAMES[:1])
    varied_texts, varied_labels = captions(TRAINING_SYNONYMS, TRAINING_FRAMES)
    rich_texts, rich_labels = captions(RICH_SYNONYMS, RICH_FRAMES)
    pick = torch.randperm(len(rich_texts), generator=torch.Generator().manual_seed(0))[: len(varied_texts)].tolist()
    rich_texts, rich_labels = [rich_texts[i] for i in pick], rich_labels[pick]
    print(f"held-out wordings: {len(held_texts)} captions; fixed: {len(fixed_texts)}; varied: {len(varied_texts)}; "
          f"rich: {len(rich_texts)} drawn")
    for name, (texts, labels) in {"fixed captions": (fixed_texts, fixed_labels),
                                  "varied training wordings": (varied_texts, varied_labels),
                                  "rich training wordings": (rich_texts, rich_labels)}.items():
        train, test = probe(states(texts), labels, held, held_labels)
        print(f"attention-pool probe trained on the {name}: training {100 * train:.1f}%, held-out wordings {100 * test:.1f}%")
    # No training at all: the fixed caption nearest by sentence embedding (masked mean of the states, cosine)
    sentence = sentence_embeddings(tokenizer, encoder, held_texts)
    refs = {}
    right = 0
    for text, label, emb in zip(held_texts, held_labels, sentence):
        parts = _parts(text)
        if parts not in refs:
            colour, shape, background = parts
            refs[parts] = sentence_embeddings(tokenizer, encoder, [
                f"a {colour} {shape} {motion} on a {background} background" for motion in MOTIONS])
        right += int((refs[parts] @ emb).argmax() == label)
    print(f"nearest fixed caption by sentence embedding (no training): {100 * right / len(held_texts):.1f}%")


def sentence_embeddings(tokenizer, encoder, texts: list[str]) -> torch.Tensor:
    """`(N, D)` unit vectors: the mean of the token states over the words (padding masked), as sentence-transformers
    pools all-MiniLM-L6-v2."""
    tokens = tokenizer(texts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                       return_tensors="pt")
    with torch.no_grad():
        hidden = encoder(tokens.input_ids, attention_mask=tokens.attention_mask)[0]
    mask = tokens.attention_mask[..., None].float()
    return F.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)


def _parts(text: str) -> tuple[str, str, str]:
    """The colour, shape and background words of a held-out caption."""
    words = text.replace(",", "").split()
    colour = next(w for w in words if w in COLOURS and words[words.index(w) + 1] in SHAPES)
    shape = next(w for w in words if w in SHAPES)
    background = next(w for i, w in enumerate(words) if w in BACKGROUNDS and words[i + 1] in ("background", "backdrop"))
    return colour, shape, background


if __name__ == "__main__":
    main()
